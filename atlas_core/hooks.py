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


_KINDS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
_SIDE_TABLES = ("_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks_with_kwargs")
_GLOBAL_KINDS = (
    "_global_forward_hooks",
    "_global_forward_pre_hooks",
    "_global_backward_hooks",
    "_global_backward_pre_hooks",
)

Hook = tuple[object, str, int]  # (owner: a module, or None for torch's global hooks; kind; handle id)


def module_hooks(model: nn.Module, include_library: bool = False) -> list[Hook]:
    """Every forward, forward-pre, backward and backward-pre hook on any submodule. Hooks that transformers
    itself keeps installed are left out unless ``include_library``."""
    return [
        (m, kind, key)
        for m in model.modules()
        for kind in _KINDS
        for key, fn in getattr(m, kind).items()
        if include_library or not _is_library_hook(fn)
    ]


def global_hooks() -> list[Hook]:
    """torch's global module hooks (``register_module_forward_hook`` and kin), which fire on every module."""
    from torch.nn.modules import module as torch_module

    return [(None, kind, key) for kind in _GLOBAL_KINDS for key in getattr(torch_module, kind)]


def remove_hooks(hooks: list[Hook]) -> None:
    """Remove the listed hooks (as their handles' ``remove`` would)."""
    from torch.nn.modules import module as torch_module

    for owner, kind, key in hooks:
        target = vars(torch_module) if owner is None else vars(owner)
        target[kind].pop(key, None)
        for side in _SIDE_TABLES if owner is not None else ():
            target.get(side, {}).pop(key, None)


def count_hooks(model: nn.Module, include_library: bool = False) -> int:
    """The number of ``module_hooks``: what a test asserts is zero after an intervention (the plugin's leak
    guard lists ``module_hooks`` itself, to remove what it finds)."""
    return len(module_hooks(model, include_library))
