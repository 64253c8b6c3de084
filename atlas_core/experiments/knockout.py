"""Experiment 5, skill knockout: negative steering with the factual-recall skill direction at each
layer, measuring how much it lowers the skill's own target probabilities against every other family's.

Per layer: ``skill_drop`` = mean over the skill family's prompts of (clean - knocked-out) target
probability; ``nonskill_drop`` = the same over every other family's prompts (each with its own
target); ``selectivity = skill_drop / nonskill_drop`` (the study's ratio). Signs are kept: a knockout
can raise a probability (the study's table has negative drops and negative selectivities). The best
layer is the one with the highest selectivity.

Strength: ``STRENGTH = -1.0``, i.e. the raw (unnormalised) direction is subtracted once, removing the
mean item-vs-contrast difference at that layer. The study does not state its knockout strength; -1
is the natural "remove the skill direction" choice and is a config knob (it enters the config hash).
All layers' variants go through one batched sweep over every family's prompts (``ctx.runner``).
"""

from __future__ import annotations

from dataclasses import dataclass
from atlas_core.metrics import Estimate

import math

import numpy as np

from atlas_core import AtlasError
from atlas_core.experiments.context import Context
from atlas_core.experiments.directions import check_family, direction_norm, skill_direction
from atlas_core.layers import profile_stat, relabel
from atlas_core.spec import ExperimentSpec, StatDecl
from atlas_core.stat import Stat, estimate_stat, finite, relative_depth, series
from atlas_core.experiments.steering import steer_grid
from atlas_core.metrics import selectivity
from atlas_core.profiles import sample_layers

NAME = "knockout"


@dataclass
class KnockoutLayer:
    layer: int
    direction_norm: float
    skill_drop: Estimate  # mean drop of the skill family's target probability
    nonskill_drop: Estimate  # mean drop of the other families' target probabilities
    selectivity: float  # skill_drop / nonskill_drop


@dataclass
class KnockoutResult:
    family: str
    strength: float  # the negative steering strength applied
    layers: list[KnockoutLayer]
    best_layer: int
    best_selectivity: float


FAMILY = "factual_recall"  # the study's knocked-out skill
STRENGTH = -1.0  # times the raw skill direction


def knockout_layers(ctx: Context) -> list[int]:
    return sample_layers(ctx.lm.info.n_layers, ctx.profile.steer_layers)


def config(ctx: Context) -> dict:
    return {
        "family": ctx.driven_family(NAME, FAMILY),
        "strength": STRENGTH,
        "layers": knockout_layers(ctx),
        "direction": "mean last-token residual after the layer, items - contrast, unnormalised",
        "positions": "all",
    }


def _check(ctx: Context, family: str, strength: float) -> None:
    check_family(ctx, family)
    if len(ctx.families) < 2:
        raise AtlasError(
            f"knockout compares {family!r} with other families, but only {family!r} is loaded; "
            f"run it with at least one more task family"
        )
    if not math.isfinite(strength):
        raise AtlasError(f"knockout strength {strength} is not finite; use a negative finite value such as -1.0")


def run(ctx: Context, family: str | None = None, strength: float = STRENGTH) -> KnockoutResult:
    family = family or ctx.driven_family(NAME, FAMILY)
    _check(ctx, family, strength)
    layers = knockout_layers(ctx)
    targets = ctx.targets  # tokenized before any forward
    directions = {layer: skill_direction(ctx, family, layer) for layer in layers}
    grid = steer_grid(ctx.runner, targets, layers, [strength], directions, progress=ctx.progress)
    drop = grid.clean_prob - grid.target_prob[:, 0, :]  # [L, P], positive = the knockout lowered it

    skill = np.zeros(drop.shape[1], bool)
    skill[ctx.family_slices[family]] = True
    out = []
    for li, layer in enumerate(layers):
        s_drop, n_drop = ctx.estimate(drop[li, skill]), ctx.estimate(drop[li, ~skill])
        out.append(
            KnockoutLayer(
                layer=layer,
                direction_norm=direction_norm(ctx, family, layer),
                skill_drop=s_drop,
                nonskill_drop=n_drop,
                selectivity=selectivity(s_drop.value, n_drop.value),
            )
        )
    best = max(out, key=lambda k: k.selectivity)
    result = KnockoutResult(
        family=family, strength=float(strength), layers=out, best_layer=best.layer, best_selectivity=best.selectivity
    )
    return result


def relayer(result: KnockoutResult, order) -> KnockoutResult:
    """The result with layer i holding what layer ``order[i]`` measured; the best layer re-read."""
    from dataclasses import replace

    layers, (rows,) = relabel([r.layer for r in result.layers], order, result.layers)
    rows = [replace(r, layer=layer) for r, layer in zip(rows, layers)]
    best = max(rows, key=lambda k: k.selectivity)
    return replace(result, layers=rows, best_layer=best.layer, best_selectivity=best.selectivity)


def statistics(result: KnockoutResult, n_layers: int, results: dict) -> dict[str, Stat]:
    """Knockout selectivity: the best skill-drop / non-skill-drop ratio, its layer, and the two drops."""
    rows = result.layers
    bl = result.best_layer
    label = f"L{bl}"
    curve = series([r.layer for r in rows], [r.selectivity for r in rows], "layer", "selectivity")
    best = next((r for r in rows if r.layer == bl), None)
    out = {
        "knockout.best_selectivity": Stat(finite(result.best_selectivity), label=label, series=curve),
        "knockout.best_layer": Stat(float(bl), kind="index", label=label),
        "knockout.best_layer_depth": Stat(relative_depth(bl, n_layers), label=label),
        "knockout.layer_profile": profile_stat(
            [r.layer for r in rows], [r.selectivity for r in rows], n_layers, ylabel="selectivity"
        ),
    }
    if best is not None:
        out["knockout.skill_drop"] = estimate_stat(best.skill_drop, label=label)
        out["knockout.nonskill_drop"] = estimate_stat(best.nonskill_drop, label=label)
    return out


SPEC = ExperimentSpec(
    name=NAME,
    title="Skill knockout",
    about="negative steering: skill drop vs non-skill drop per layer",
    order=50,
    run=run,
    config=config,
    result=KnockoutResult,
    group="knockout",
    statistics=statistics,
    headline=True,
    families=(FAMILY,),
    claims=("knockout.best_selectivity", "knockout.skill_drop", "knockout.nonskill_drop"),
    finding="headline finding, knockout selectivity",
    profile_fields=("steer_layers",),
    section="atlas_core.report.sections.steering:knockout",
    macro="knockout",
    overlay="atlas_core.report.compare:knockout_overlay",
    declares=(
        StatDecl("knockout.layer_profile", "ratio", axis="layer", null=1.0, about="selectivity per layer"),
        StatDecl("knockout.best_selectivity", "ratio", null=1.0, about="skill drop / non-skill drop (1: unselective)"),
        StatDecl(
            "knockout.nonskill_drop",
            "probability",
            -1.0,
            1.0,
            0.0,
            about="mean drop of the other families",
            invariant="the knockout's collateral drop on the other families' target probability is about 0.1 on "
            "every model measured (full profile: Coder-0.5B 0.111, Coder-1.5B 0.094, Gemma-3-270M "
            "0.126), whichever model it is",
        ),
        StatDecl("knockout.skill_drop", "probability", -1.0, 1.0, 0.0, about="mean drop of target probability"),
        StatDecl("knockout.best_layer_depth", "fraction", 0.0, 1.0, None, direction=0),
        StatDecl("knockout.best_layer", "layer", 0.0, math.inf, None, direction=0),
    ),
    relayer=relayer,
)
