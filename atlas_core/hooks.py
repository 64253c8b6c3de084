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


def _is_library_hook(fn: Callable) -> bool:
    """transformers (5.x) installs its own output-capturing forward hooks, once and for good, the first time a
    model runs with ``output_hidden_states``/``output_attentions``; they are inert otherwise and not Atlas's."""
    return (getattr(fn, "__module__", None) or "").startswith("transformers.")


def count_hooks(model: nn.Module, include_library: bool = False) -> int:
    """Forward and forward-pre hooks on any submodule (the leak guard compares this to zero). Hooks that
    transformers itself keeps installed are left out unless ``include_library``."""
    return sum(
        1
        for m in model.modules()
        for fn in (*m._forward_hooks.values(), *m._forward_pre_hooks.values())
        if include_library or not _is_library_hook(fn)
    )
