"""Hook hygiene: every hook Atlas registers lives inside a ``with`` block and is removed on exit,
exceptions included (after baukit's ``nethook``)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

from torch import nn

HookSpec = tuple[nn.Module, str, Callable]  # (module, "forward" | "pre", fn)


@contextmanager
def hooked(specs: list[HookSpec]) -> Iterator[None]:
    """Register forward hooks (``fn(module, args, kwargs, output)``) and forward pre-hooks
    (``fn(module, args, kwargs)``), all with kwargs, and remove every one of them on exit."""
    handles = []
    try:
        for module, kind, fn in specs:
            if kind == "forward":
                handles.append(module.register_forward_hook(fn, with_kwargs=True))
            elif kind == "pre":
                handles.append(module.register_forward_pre_hook(fn, with_kwargs=True))
            else:
                raise ValueError(f"unknown hook kind {kind!r}")
        yield
    finally:
        for handle in handles:
            handle.remove()


def count_hooks(model: nn.Module) -> int:
    """All forward and forward-pre hooks on any submodule (the leak guard compares this to zero)."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
