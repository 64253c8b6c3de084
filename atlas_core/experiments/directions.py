"""Skill directions for steering and knockout: the mean difference of last-token residuals between a
family's item prompts and its contrast prompts, at the residual after a layer.

The direction is the raw mean difference, not normalised (the study's "sv_norm 9.625" at L2 is its
length): a steering strength multiplies it. The item and contrast runners of a family and every
direction are cached in the context's artifacts (``ctx.artifacts.directions``, owned here), so steering
and knockout in one run build them once and use the same vectors.
"""

from __future__ import annotations

import torch

from atlas_core import AtlasError
from atlas_core.experiments.context import Context, DirectionCache
from atlas_core.runner import Runner
from atlas_core.sites import check_layer, dims


def _cache(ctx: Context) -> DirectionCache:
    if ctx.artifacts.directions is None:
        ctx.artifacts.directions = DirectionCache()
    return ctx.artifacts.directions


def check_family(ctx: Context, family: str) -> None:
    """The family must be loaded and have contrast prompts; fail before any forward otherwise."""
    if family not in ctx.families:
        raise AtlasError(
            f"task family {family!r} is not loaded in this run (loaded: {', '.join(ctx.families)}); "
            f"include it in the run's families"
        )
    fam = ctx.families[family]
    if not fam.items or not fam.contrast:
        raise AtlasError(
            f"task family {family!r} needs item and contrast prompts for a skill direction; "
            f"it has {len(fam.items)} items and {len(fam.contrast)} contrast prompts"
        )


def _runner(ctx: Context, prompts: list[str]) -> Runner:
    return Runner(
        ctx.lm.model,
        ctx.lm.tokenizer,
        prompts,
        memory_mb=ctx.profile.memory_mb,
        seed=ctx.seed,
        progress=ctx.progress,
        sweeping=ctx.sweeping,
    )


def family_runner(ctx: Context, family: str) -> Runner:
    """A runner over the family's item prompts only (steering sweeps them without the other families)."""
    check_family(ctx, family)
    cache = _cache(ctx)
    if family not in cache.items:
        cache.items[family] = _runner(ctx, ctx.families[family].prompts)
    return cache.items[family]


def contrast_runner(ctx: Context, family: str) -> Runner:
    """A runner over the family's contrast prompts, built once per run."""
    check_family(ctx, family)
    cache = _cache(ctx)
    if family not in cache.contrast:
        cache.contrast[family] = _runner(ctx, ctx.families[family].contrast_prompts)
    return cache.contrast[family]


def skill_direction(ctx: Context, family: str, layer: int) -> torch.Tensor:
    """[d_model] fp32: mean last-token residual after ``layer`` over the family's items minus the same
    mean over its contrast prompts (unnormalised)."""
    check_family(ctx, family)
    check_layer(layer, dims(ctx.lm.model), "direction layer")
    cache = _cache(ctx)
    key = (family, layer)
    if key not in cache.vectors:
        items = family_runner(ctx, family).last_residual(layer).mean(0)
        contrast = contrast_runner(ctx, family).last_residual(layer).mean(0)
        cache.vectors[key] = (items - contrast).float()
    return cache.vectors[key]


def direction_norm(ctx: Context, family: str, layer: int) -> float:
    """Euclidean length of the skill direction (the study's "SV norm")."""
    return float(torch.linalg.vector_norm(skill_direction(ctx, family, layer)))


def check_direction(direction: torch.Tensor, d_model: int, what: str = "steering direction") -> torch.Tensor:
    """A 1-d, finite, [d_model] direction; anything else is an AtlasError naming the fix."""
    if not isinstance(direction, torch.Tensor):
        raise AtlasError(f"{what} must be a torch.Tensor of shape [{d_model}], got {type(direction).__name__}")
    if direction.dim() != 1 or direction.shape[0] != d_model:
        raise AtlasError(
            f"{what} has shape {tuple(direction.shape)}; the model's residual is [{d_model}] wide "
            f"(compute it with skill_direction on this model)"
        )
    if not torch.isfinite(direction).all():
        raise AtlasError(f"{what} holds non-finite values; recompute it")
    return direction


def study_layer(n_layers: int) -> int:
    """The study's steering layer, L2 of 28, scaled to depth: round(2 * n_layers / 28)."""
    return min(n_layers - 1, max(0, round(2 * n_layers / 28)))
