"""Experiment 4, the steering sweep: add ``strength x`` the factual-recall direction to the residual
after a layer (every position) and measure the target-token probability, its boost over the clean run
and KL(clean || steered), for every (layer, strength).

The study steered at L2 only (of 28 layers); this sweeps the profile's sampled layers (every layer at
the full profile) and always includes the study's layer scaled to depth, ``round(2 * n_layers / 28)``.
The direction is the raw mean difference of :mod:`directions` (unnormalised, like the study's
"sv_norm 9.625"). All (layer, strength) variants go through one batched sweep over the family's
prompts. A zero-strength steer is the identity, so its cells are the clean run itself (no forward):
boost and KL are exactly 0 there. "Best" is over the whole grid, zero strength included, so a model
that no steering helps reports a best boost of 0 at strength 0.
"""

from __future__ import annotations

from atlas_core.metrics import Estimate

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import torch

from atlas_core import AtlasError
from atlas_core.experiments.context import Context
from atlas_core.experiments.directions import (
    check_direction,
    check_family,
    direction_norm,
    family_runner,
    skill_direction,
    study_layer,
)
from atlas_core.layers import profile_stat, relabel
from atlas_core.spec import ExperimentSpec, StatDecl
from atlas_core.stat import Stat, estimate_stat, finite, relative_depth, series
from atlas_core.interventions import Steer, Variant
from atlas_core.profiles import sample_layers
from atlas_core.runner import Runner
from atlas_core.sites import check_layer
from atlas_core.tasks import target_token_id

NAME = "steering"


@dataclass
class SteeringPrompt:
    prompt: str
    target: str
    baseline_prob: float
    best_prob: float
    best_strength: float
    best_layer: int


@dataclass
class SteeringResult:
    family: str
    layers: list[int]
    strengths: list[float]
    direction_norm: list[float]  # per layer
    baseline_prob: float  # mean clean target probability over the family's prompts
    target_prob: list[list[float]]  # [layer][strength] mean target probability
    boost: list[list[float]]  # [layer][strength] mean (steered - clean) target probability
    kl: list[list[float]]  # [layer][strength] mean KL(clean || steered)
    best_layer: int
    best_strength: float
    best_boost: Estimate  # over prompts, at the best (layer, strength)
    study_layer: int  # layer 2 (the study's), scaled to depth for other models
    study_layer_best_boost: Estimate
    prompts: list[SteeringPrompt] = field(default_factory=list)  # the study's own prompts


FAMILY = "factual_recall"  # the study's factual recall direction
STUDY_PROMPT_IDS = ("study_italy", "study_spain")  # "The capital of Italy is ", "The capital of Spain is "


def steer_layers(ctx: Context) -> list[int]:
    """The profile's sampled layers plus the study's layer (scaled to depth), ascending."""
    n = ctx.lm.info.n_layers
    return sorted(set(sample_layers(n, ctx.profile.steer_layers)) | {study_layer(n)})


def config(ctx: Context) -> dict:
    return {
        "family": ctx.driven_family(NAME, FAMILY),
        "layers": steer_layers(ctx),
        "strengths": list(ctx.profile.steer_strengths),
        "study_layer": study_layer(ctx.lm.info.n_layers),
        "direction": "mean last-token residual after the layer, items - contrast, unnormalised",
        "positions": "all",
    }


@dataclass
class SteerGrid:
    """Per (layer, strength, prompt) measurements of one steering sweep."""

    layers: list[int]
    strengths: list[float]
    clean_prob: np.ndarray  # [P] clean target probability
    target_prob: np.ndarray  # [L, S, P] steered target probability
    kl: np.ndarray  # [L, S, P] KL(clean || steered), nats

    @property
    def boost(self) -> np.ndarray:
        """[L, S, P] steered - clean target probability."""
        return self.target_prob - self.clean_prob


def steer_grid(
    runner: Runner,
    targets: Sequence[int],
    layers: Sequence[int],
    strengths: Sequence[float],
    directions: Mapping[int, torch.Tensor],
    progress: bool = False,
) -> SteerGrid:
    """Steer every layer in ``layers`` with ``directions[layer]`` at every strength, over the runner's
    prompts, in one batched sweep. Every input is checked before any forward runs."""
    layers, strengths = list(layers), [float(s) for s in strengths]
    if not layers or not strengths:
        raise AtlasError("steering needs at least one layer and one strength (check the profile)")
    for s in strengths:
        if not math.isfinite(s):
            raise AtlasError(f"steering strength {s} is not finite; use finite strengths such as -4..4")
    for layer in layers:
        check_layer(layer, runner.dims, "steering layer")
        if layer not in directions:
            raise AtlasError(f"no steering direction for layer {layer}; compute one with skill_direction")
        check_direction(directions[layer], runner.dims.d_model, f"steering direction at layer {layer}")
    if len(targets) != runner.enc.n:
        raise AtlasError(f"{len(targets)} targets for {runner.enc.n} prompts")

    cells = [(li, si) for li in range(len(layers)) for si, s in enumerate(strengths) if s != 0.0]
    variants = [
        Variant(f"L{layers[li]}/{strengths[si]:+g}", (Steer(layers[li], directions[layers[li]], strengths[si]),))
        for li, si in cells
    ]
    p = runner.enc.n
    clean = runner.clean_logprobs
    tid = torch.as_tensor(list(targets), device=clean.device)
    clean_prob = clean.gather(-1, tid[:, None]).squeeze(-1).exp().double().cpu().numpy()
    target_prob = np.broadcast_to(clean_prob, (len(layers), len(strengths), p)).copy()
    kl = np.zeros((len(layers), len(strengths), p), np.float64)
    if variants:
        stats = runner.sweep(variants, targets, progress=progress)
        for vi, (li, si) in enumerate(cells):
            target_prob[li, si] = stats.target_prob[vi]
            kl[li, si] = stats.kl[vi]
    return SteerGrid(layers, strengths, clean_prob, target_prob, kl)


def run(ctx: Context, family: str | None = None) -> SteeringResult:
    family = family or ctx.driven_family(NAME, FAMILY)
    check_family(ctx, family)
    fam = ctx.families[family]
    layers = steer_layers(ctx)
    strengths = [float(s) for s in ctx.profile.steer_strengths]
    targets = [target_token_id(ctx.lm.tokenizer, it.target) for it in fam.items]  # before any forward
    runner = family_runner(ctx, family)
    directions = {layer: skill_direction(ctx, family, layer) for layer in layers}
    grid = steer_grid(runner, targets, layers, strengths, directions, progress=ctx.progress)

    boost = grid.boost
    mean_boost = boost.mean(-1)  # [L, S]
    li, si = np.unravel_index(int(np.argmax(mean_boost)), mean_boost.shape)
    s_layer = study_layer(ctx.lm.info.n_layers)
    sl = layers.index(s_layer)
    ss = int(np.argmax(mean_boost[sl]))

    prompts = []
    for pi, it in enumerate(fam.items):
        if it.id not in STUDY_PROMPT_IDS:
            continue
        per = grid.target_prob[:, :, pi]
        bl, bs = np.unravel_index(int(np.argmax(per)), per.shape)
        prompts.append(
            SteeringPrompt(
                prompt=it.prompt,
                target=it.target,
                baseline_prob=float(grid.clean_prob[pi]),
                best_prob=float(per[bl, bs]),
                best_strength=strengths[bs],
                best_layer=layers[bl],
            )
        )

    result = SteeringResult(
        family=family,
        layers=layers,
        strengths=strengths,
        direction_norm=[direction_norm(ctx, family, layer) for layer in layers],
        baseline_prob=float(grid.clean_prob.mean()),
        target_prob=grid.target_prob.mean(-1).tolist(),
        boost=mean_boost.tolist(),
        kl=grid.kl.mean(-1).tolist(),
        best_layer=layers[li],
        best_strength=strengths[si],
        best_boost=ctx.estimate(boost[li, si]),
        study_layer=s_layer,
        study_layer_best_boost=ctx.estimate(boost[sl, ss]),
        prompts=prompts,
    )
    return result


def relayer(result: SteeringResult, order) -> SteeringResult:
    """The result as if layer i had been steered as layer ``order[i]`` was; the best cell and the study
    layer's boost re-read from the per-layer means (the study layer keeps its number)."""
    from dataclasses import replace

    from atlas_core.metrics import Estimate

    layers, (dn, tp, boost, kl) = relabel(
        result.layers, order, result.direction_norm, result.target_prob, result.boost, result.kl
    )
    mean = np.asarray(boost, dtype=float)
    li, _ = np.unravel_index(int(np.argmax(mean)), mean.shape)
    if result.study_layer in layers:
        row = mean[layers.index(result.study_layer)]
        old = result.study_layer_best_boost
        shift = float(row.max()) - (finite(old.value) or 0.0)  # the stored interval, moved with the value
        study = Estimate(float(row.max()), old.lo + shift, old.hi + shift, old.n)
    else:
        study = Estimate(float("nan"), float("nan"), float("nan"), 0)
    return replace(
        result,
        layers=layers,
        direction_norm=dn,
        target_prob=tp,
        boost=boost,
        kl=kl,
        best_layer=layers[int(li)],
        study_layer_best_boost=study,
    )


def statistics(result: SteeringResult, n_layers: int, results: dict) -> dict[str, Stat]:
    """Steering leverage: the best mean target-probability boost (over layers and strengths) with its
    interval, where it was found, and the boost at the study's layer."""
    layers = list(result.layers)
    bl = result.best_layer
    label = f"L{bl} x{result.best_strength:+g}"
    curve = (
        series(
            result.strengths, result.boost[layers.index(bl)], "steering strength", f"mean target-prob boost at L{bl}"
        )
        if bl in layers
        else None
    )
    return {
        "steering.best_boost": estimate_stat(result.best_boost, label=label, series=curve),
        "steering.best_layer": Stat(float(bl), kind="index", label=label),
        "steering.best_layer_depth": Stat(relative_depth(bl, n_layers), label=label),
        "steering.best_strength": Stat(float(result.best_strength), label=label),
        "steering.study_layer_best_boost": estimate_stat(result.study_layer_best_boost, label=f"L{result.study_layer}"),
        "steering.baseline_prob": Stat(finite(result.baseline_prob)),
        "steering.layer_profile": profile_stat(
            layers, [max(row) for row in result.boost], n_layers, ylabel="best mean target-prob boost over strengths"
        ),
    }


SPEC = ExperimentSpec(
    name=NAME,
    title="Steering",
    about="dose-response of adding the factual-recall direction at each layer",
    order=40,
    run=run,
    config=config,
    result=SteeringResult,
    group="steering",
    statistics=statistics,
    headline=True,
    families=(FAMILY,),
    claims=("steering.best_boost", "steering.study_layer_best_boost"),
    finding="headline finding, steering collapse",
    profile_fields=("steer_layers", "steer_strengths"),
    section="atlas_core.report.sections.steering:steering",
    macro="steering",
    overlay="atlas_core.report.compare:steering_overlay",
    declares=(
        StatDecl("steering.layer_profile", "probability", -1.0, 1.0, 0.0, axis="layer", about="best boost per layer"),
        StatDecl("steering.best_boost", "probability", -1.0, 1.0, 0.0, about="mean target-probability boost"),
        StatDecl(
            "steering.study_layer_best_boost",
            "probability",
            -1.0,
            1.0,
            0.0,
            about="mean target-probability boost at the study's layer",
        ),
        StatDecl("steering.best_layer_depth", "fraction", 0.0, 1.0, None, direction=0),
        StatDecl("steering.best_layer", "layer", 0.0, math.inf, None, direction=0),
        StatDecl("steering.best_strength", "count", direction=0, about="steering strength (x direction norm)"),
        StatDecl("steering.baseline_prob", "probability", 0.0, 1.0, None, direction=0),
    ),
    relayer=relayer,
)
