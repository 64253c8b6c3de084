"""Head ablation: zero one query head's output (its ``head_dim`` slice at the input of the attention
output projection, exact under grouped-query attention) at a time, for every head of the swept layers
(every layer at the full profile, ``profile.head_layers`` sampled evenly otherwise), and measure the KL
from the clean run per family."""

from __future__ import annotations

import numpy as np

from atlas_core.experiments.clean import check_families
from atlas_core.experiments.context import Context
from atlas_core.experiments.schema import HeadAblationResult, HeadScore
from atlas_core.interventions import Ablate, Variant
from atlas_core.profiles import sample_layers
from atlas_core.sites import Site

NAME = "head_ablation"
SEED_DEPENDENT = False
REQUIRES = ()
MODE = "zero"
TOP = 10


def config(ctx: Context) -> dict:
    return {"mode": MODE, "head_layers": ctx.profile.head_layers, "top": TOP}


def max_layer_kl(shared: dict) -> float | None:
    """The strongest whole-layer mean KL across families of the layer ablation's primary sweep, when that
    experiment ran earlier in the same run (a dataclass, or its JSON form)."""
    res = shared.get("layer_ablation")
    if res is None:
        return None
    get = (lambda o, k: o[k]) if isinstance(res, dict) else getattr
    primary = get(res, "primary")
    for sweep in get(res, "sweeps"):
        if f"{get(sweep, 'target')}/{get(sweep, 'mode')}" == primary:
            return float(max(get(sweep, "family_mean_kl")))
    return None


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
        max_head=top[0], top=top, max_layer_kl=max_layer_kl(ctx.shared),
    )
    ctx.shared[NAME] = result
    return result
