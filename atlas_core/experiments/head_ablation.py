"""Head ablation: zero one query head's output (its ``head_dim`` slice at the input of the attention
output projection, exact under grouped-query attention) at a time, for every head of the swept layers
(every layer at the full profile, ``profile.head_layers`` sampled evenly otherwise), and measure the KL
from the clean run per family."""

from __future__ import annotations

import numpy as np

from atlas_core.experiments.clean import check_families
from atlas_core.experiments.context import Context
from atlas_core.experiments.layer_ablation import primary_sweep
from atlas_core.experiments.schema import HeadAblationResult, HeadScore
from atlas_core.interventions import Ablate, Variant
from atlas_core.profiles import sample_layers
from atlas_core.sites import Site
from atlas_core.spec import ExperimentSpec
from atlas_core.stat import Stat, ratio, relative_depth, series

NAME = "head_ablation"
MODE = "zero"
TOP = 10


def config(ctx: Context) -> dict:
    return {"mode": MODE, "head_layers": ctx.profile.head_layers, "top": TOP}


def run(ctx: Context) -> HeadAblationResult:
    check_families(ctx)
    runner = ctx.runner
    d = runner.dims
    layers = sample_layers(d.n_layers, ctx.profile.head_layers)
    cells = [(layer, head) for layer in layers for head in range(d.n_heads)]
    variants = [Variant(f"head/{MODE}/L{layer}H{head}", (Ablate(Site("head", layer, head), MODE),))
                for layer, head in cells]
    stats = runner.sweep(variants, progress=ctx.progress)
    kl = stats.kl.reshape(len(layers), d.n_heads, -1)  # [layer index, head, prompt]
    per_family = {name: kl[..., sl].mean(axis=-1) for name, sl in ctx.family_slices.items()}

    scores = [HeadScore(family=name, layer=layers[li], head=h, kl=float(m[li, h]))
              for name, m in per_family.items() for li in range(len(layers)) for h in range(d.n_heads)]
    order = sorted(range(len(scores)), key=lambda i: (-scores[i].kl, i))  # ties: family, layer, head order
    top = [scores[i] for i in order[:TOP]]
    result = HeadAblationResult(
        n_layers=d.n_layers, n_heads=d.n_heads, layers=layers, families=list(ctx.families), mode=MODE,
        kl={name: [[float(v) for v in row] for row in np.asarray(m)] for name, m in per_family.items()},
        max_head=top[0], top=top,
    )
    ctx.shared[NAME] = result
    return result


def statistics(result: HeadAblationResult, n_layers: int, results: dict) -> dict[str, Stat]:
    """The strongest single head (family, layer, head, KL), its depth, the strongest head per family
    and, with the layer ablation of the same run, the layer/head gap (max layer KL / max head KL)."""
    mh = result.max_head
    label = f"{mh.family} L{mh.layer} H{mh.head}"
    layers = list(result.layers)
    grids = list(result.kl.values())
    per_layer = [max(max(g[i]) for g in grids) for i in range(len(layers))] if grids else []
    curve = series(layers, per_layer, "layer", "max head-ablation KL (nats)")
    out = {
        # the share of layers whose heads were ablated: below 1 the strongest head may sit in a skipped layer
        "heads.layer_coverage": Stat(len(layers) / n_layers, label=f"{len(layers)} of {n_layers} layers"),
        "heads.max_kl": Stat(float(mh.kl), label=label, series=curve),
        "heads.max_layer": Stat(float(mh.layer), kind="index", label=label),
        "heads.max_head": Stat(float(mh.head), kind="index", label=label),
        "heads.max_layer_depth": Stat(relative_depth(mh.layer, n_layers), label=label),
    }
    for fam, grid in result.kl.items():
        best = max(((v, li, h) for li, row in enumerate(grid) for h, v in enumerate(row)), default=None)
        if best is not None:
            out[f"heads.family_max_kl.{fam}"] = Stat(float(best[0]), label=f"L{layers[best[1]]} H{best[2]}")
    layer = results.get("layer_ablation")
    if layer is not None:
        out["heads.layer_head_gap"] = Stat(ratio(max(primary_sweep(layer).family_mean_kl), mh.kl),
                                           label="max layer KL / max head KL")
    return out


SPEC = ExperimentSpec(
    name=NAME, title="Head ablation", about="KL from zeroing one attention head at a time", order=30,
    run=run, config=config, result=HeadAblationResult, group="heads", statistics=statistics,
    statistic_names=("heads.family_max_kl.{family}", "heads.layer_coverage", "heads.layer_head_gap", "heads.max_head", "heads.max_kl", "heads.max_layer", "heads.max_layer_depth"), headline=True,
    claims=("heads.max_kl", "heads.max_layer_depth", "heads.family_max_kl.*"),
    reads={"heads.layer_head_gap": ("layer_ablation",)}, finding="headline finding, specialist heads",
    profile_fields=("head_layers",), section="atlas_core.report.sections:heads", macro="heads",
    overlay="atlas_core.report.compare:heads_overlay",
)
