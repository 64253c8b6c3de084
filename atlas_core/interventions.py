"""Interventions: what to do at a site. Each is a frozen description; ``intervene`` turns a list of
them into hooks on the stock model for the duration of a ``with`` block.

- ``Ablate(site, mode)``: replace the site's activation with zero, the reference mean (``value`` is a
  [width] vector) or a resampled donor activation (``value`` is [prompts, seq, width]);
- ``Steer(layer, direction, strength, positions)``: add ``strength * direction`` to the residual after
  ``layer``;
- ``Patch(site, value, positions)``: write activations cached from another run (another prompt set,
  another model, base or fine-tuned) into the site;
- ``Skip(layers)``: the layers pass their input residual through unchanged;
- ``ExitAt(layer)``: stop after ``layer`` and apply the final norm and LM head (the logit lens);
- ``Noop(site)``: a hook that reads the site and changes nothing (identity and overhead checks).

Rows: inside a batched sweep each intervention applies to its own rows (``rows`` slice); per-prompt
values (resample donors, patches) are indexed by ``prompts`` (the prompt indices of those rows).
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Union

import torch
from torch import nn

from atlas_core import AtlasError
from atlas_core.hooks import HookSpec, hooked
from atlas_core.models.adapters import layer_window
from atlas_core.sites import Dims, Site, check_layer, dims, site_hook, validate_site, width

ABLATION_MODES = ("zero", "mean", "resample")
POSITIONS = ("all", "last")


@dataclass(frozen=True, eq=False)
class Ablate:
    site: Site
    mode: str = "zero"
    value: torch.Tensor | None = None  # mean: [width]; resample: [prompts, seq, width]


@dataclass(frozen=True, eq=False)
class Steer:
    layer: int
    direction: torch.Tensor  # [d_model]
    strength: float
    positions: str = "all"

    @property
    def site(self) -> Site:
        return Site("resid", self.layer)


@dataclass(frozen=True, eq=False)
class Patch:
    site: Site
    value: torch.Tensor  # [prompts, seq, width], in the runner's padded layout
    positions: str = "all"


@dataclass(frozen=True)
class Skip:
    layers: tuple[int, ...]


@dataclass(frozen=True)
class ExitAt:
    layer: int


@dataclass(frozen=True)
class Noop:
    site: Site


Intervention = Union[Ablate, Steer, Patch, Skip, ExitAt, Noop]


@dataclass(frozen=True, eq=False)
class Variant:
    """One condition of a sweep: a name and the interventions applied together."""

    name: str
    interventions: tuple[Intervention, ...] = field(default_factory=tuple)


def sites_of(iv: Intervention) -> list[Site]:
    if isinstance(iv, Skip):
        return [Site("delta", layer) for layer in iv.layers]
    if isinstance(iv, ExitAt):
        return []
    return [iv.site]


def first_layer(iv: Intervention) -> int | None:
    """The lowest layer the intervention touches (layers below it run exactly as in the clean run)."""
    layers_ = [s.layer for s in sites_of(iv)]
    return min(layers_) if layers_ else None


def exit_layer(ivs: tuple[Intervention, ...]) -> int | None:
    exits = [iv.layer for iv in ivs if isinstance(iv, ExitAt)]
    if len(exits) > 1:
        raise AtlasError(f"a variant may exit at one layer only (got {exits})")
    return exits[0] if exits else None


def _check_values(iv: Intervention, what: str, value, w: int, n_prompts: int | None, seq: int | None) -> None:
    """A per-prompt [prompts, seq, width] value: its width always; its prompt count and positions where the
    run is known (the Runner passes them)."""
    if not isinstance(value, torch.Tensor) or value.dim() != 3 or value.shape[-1] != w:
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise AtlasError(f"{what} at {iv.site} needs [prompts, seq, {w}] activations, got {shape}")
    if n_prompts is not None and value.shape[0] != n_prompts:
        raise AtlasError(f"{what} at {iv.site} holds {value.shape[0]} prompts; the run has {n_prompts}")
    if seq is not None and value.shape[1] < seq:
        raise AtlasError(
            f"{what} at {iv.site} covers {value.shape[1]} positions; the run's prompts are padded to "
            f"{seq} (record the activations on prompts at least as long, in the runner's layout)"
        )


def validate(iv: Intervention, d: Dims, n_prompts: int | None = None, seq: int | None = None) -> None:
    """Every check that can fail, before any forward runs (``n_prompts``/``seq``: the run's prompt count and
    padded length, where known)."""
    if isinstance(iv, Skip):
        if not iv.layers:
            raise AtlasError("Skip needs at least one layer")
        for layer in iv.layers:
            check_layer(layer, d, "skipped layer")
        return
    if isinstance(iv, ExitAt):
        check_layer(iv.layer, d, "exit layer")
        return
    if not isinstance(iv, (Ablate, Steer, Patch, Noop)):
        raise AtlasError(f"unknown intervention {iv!r}; use Ablate, Steer, Patch, Skip, ExitAt or Noop")
    validate_site(iv.site, d)
    w = width(iv.site, d)
    if isinstance(iv, Ablate):
        if iv.mode not in ABLATION_MODES:
            raise AtlasError(f"unknown ablation mode {iv.mode!r}; modes are {', '.join(ABLATION_MODES)}")
        if iv.mode == "mean" and (not isinstance(iv.value, torch.Tensor) or tuple(iv.value.shape) != (w,)):
            raise AtlasError(f"mean ablation at {iv.site} needs a [{w}] mean vector (the Runner computes it)")
        if iv.mode == "resample":
            if iv.value is None:
                raise AtlasError(
                    f"resample ablation at {iv.site} needs [prompts, seq, {w}] donor activations "
                    "(the Runner draws them)"
                )
            _check_values(iv, "resample ablation", iv.value, w, n_prompts, seq)
    if isinstance(iv, Steer):
        if not isinstance(iv.direction, torch.Tensor):
            raise AtlasError(
                f"steering direction must be a torch.Tensor of shape [{d.d_model}], got {type(iv.direction).__name__}"
            )
        if iv.direction.dim() != 1 or iv.direction.shape[0] != d.d_model:
            raise AtlasError(
                f"steering direction has shape {tuple(iv.direction.shape)}; the residual is [{d.d_model}] wide"
            )
        if iv.positions not in POSITIONS:
            raise AtlasError(f"unknown positions {iv.positions!r}; use {', '.join(POSITIONS)}")
    if isinstance(iv, Patch):
        _check_values(iv, "patch", iv.value, w, n_prompts, seq)
        if iv.positions not in POSITIONS:
            raise AtlasError(f"unknown positions {iv.positions!r}; use {', '.join(POSITIONS)}")


def _per_prompt(value: torch.Tensor, prompts: slice | torch.Tensor, seq: int, act: torch.Tensor) -> torch.Tensor:
    """Rows of a [prompts, seq', width] tensor for these prompts, right-aligned to ``seq`` positions."""
    v = value[prompts].to(device=act.device, dtype=act.dtype)
    if v.shape[1] != seq:
        if v.shape[1] < seq:
            raise AtlasError(f"cached activations cover {v.shape[1]} positions; this batch has {seq}")
        v = v[:, -seq:]
    return v


def act_fn(iv: Intervention, rows: slice, prompts: slice | torch.Tensor):
    """The ActFn for one intervention on ``rows`` of the batch."""

    def fn(act: torch.Tensor) -> torch.Tensor | None:
        if isinstance(iv, Noop):
            return None
        if torch.is_grad_enabled():
            act = act.clone()
        if isinstance(iv, (Ablate, Skip)):
            mode = "zero" if isinstance(iv, Skip) else iv.mode
            if mode == "zero":
                act[rows] = 0
            elif mode == "mean":
                act[rows] = iv.value.to(device=act.device, dtype=act.dtype)
            else:
                act[rows] = _per_prompt(iv.value, prompts, act.shape[1], act)
        elif isinstance(iv, Steer):
            delta = (iv.strength * iv.direction.to(device=act.device, dtype=torch.float32)).to(act.dtype)
            if iv.positions == "all":
                act[rows] += delta
            else:
                act[rows, -1] += delta
        elif isinstance(iv, Patch):
            src = _per_prompt(iv.value, prompts, act.shape[1], act)
            if iv.positions == "all":
                act[rows] = src
            else:
                act[rows, -1] = src[:, -1]
        return act

    return fn


def hook_specs(
    model: nn.Module,
    ivs: tuple[Intervention, ...],
    rows: slice = slice(None),
    prompts: slice | torch.Tensor = slice(None),
) -> list[HookSpec]:
    specs = []
    for iv in ivs:
        for site in sites_of(iv):
            specs.append(site_hook(model, site, act_fn(iv, rows, prompts)))
    return specs


@contextmanager
def intervene(model: nn.Module, interventions: list[Intervention] | tuple[Intervention, ...]) -> Iterator[nn.Module]:
    """Apply interventions to every forward of ``model`` inside the block; all hooks (and any layer
    window of ``ExitAt``) are undone on exit, exceptions included.

    Per-prompt values (resample donors, patches) must match the batch's prompts and padded length.
    """
    ivs = tuple(interventions)
    d = dims(model)
    for iv in ivs:
        validate(iv, d)
    stop = exit_layer(ivs)
    # hooks are addressed before the window narrows the layer list (an intervention above the exit layer
    # then simply never fires, as in the Runner)
    specs = hook_specs(model, ivs)
    with ExitStack() as stack:
        if stop is not None:
            stack.enter_context(layer_window(model, 0, stop + 1))
        stack.enter_context(hooked(specs))
        yield model
