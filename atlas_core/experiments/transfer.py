"""Experiment 7, cross-model activation transfer: patch the LoRA-trained model's residual after layer L
(every position) into the base model and ask how much of the trained model's output comes back.

Recovery is ``1 - KL(trained || patched) / KL(trained || base)`` (``metrics.kl_recovery``): 1 when
the patch reproduces the trained output, 0 when it changes nothing. It is a ratio of means over
prompts, not a mean of per-prompt ratios: a prompt the adapter barely moved has a near-zero
denominator, and its ratio would swamp the mean (measured on Coder-0.5B at the ci profile: per-prompt
means of -1 to -2 at every layer below 20, driven by prompts with base KL near 1e-3). A family whose
mean base KL is below ``MIN_BASE_KL`` (the adapter left it alone) has no defined recovery and is
reported as NaN; its prompts add next to nothing to the pooled means. Patching the last layer's
residual gives recovery 1 (only the final norm and LM head follow, and LoRA does not touch them).

The trained activations come from the adapter attached to the shared model for one clean pass; the
patched sweep runs on the base model after the adapter is unloaded, reusing the run's clean prefix.
"""

from __future__ import annotations

from dataclasses import dataclass
from atlas_core.metrics import Estimate

import math

import numpy as np

from atlas_core import AtlasError
from atlas_core.adapters_lora import attached_adapter
from atlas_core.experiments import lora_training
from atlas_core.experiments.context import Context
from atlas_core.layers import profile_stat, relabel
from atlas_core.spec import GOLDEN_REL_TRAINED, ExperimentSpec, StatDecl
from atlas_core.stat import Stat, estimate_stat, final_fraction, finite, series
from atlas_core.interventions import Patch, Variant
from atlas_core.metrics import bootstrap, kl_divergence, kl_recovery
from atlas_core.sites import Site

NAME = "transfer"


@dataclass
class TransferResult:
    layers: list[int]
    families: list[str]
    recovery: dict[str, list[float]]  # family -> per-layer mean KL recovery (1 = trained output restored)
    mean_recovery: list[Estimate]  # per layer, over prompts
    base_kl: dict[str, float]  # family -> KL(trained || base) before patching
    top_layers: list[int]  # by mean recovery, strongest first
    zone: list[int]  # layers with mean recovery >= zone_threshold
    zone_threshold: float


ZONE_THRESHOLD = 0.95  # layers recovering at least this much form the transfer zone
MIN_BASE_KL = 1e-4  # nats: a family (or run) the adapter moved less than this has no defined recovery
N_TOP = 3  # the study reports the top three transfer layers


def config(ctx: Context) -> dict:
    return {
        "lora": lora_training.config(ctx),
        "zone_threshold": ZONE_THRESHOLD,
        "min_base_kl": MIN_BASE_KL,
        "n_top": N_TOP,
        "positions": "all",
        "site": "resid",
    }


def _pooled(ctx: Context, kl_patched: np.ndarray, kl_base: np.ndarray):
    """Pooled recovery over prompts, ``1 - mean(kl_patched) / mean(kl_base)``, with a bootstrap interval
    (prompts resampled in pairs)."""
    pairs = np.stack([kl_patched, kl_base], axis=1)
    return bootstrap(
        pairs,
        stat=lambda a: float(kl_recovery(a[:, 0].mean(), a[:, 1].mean())),
        n_boot=ctx.profile.n_boot,
        seed=ctx.seed,
    )


def run(ctx: Context) -> TransferResult:
    model = ctx.lm.model
    n_layers = ctx.runner.dims.n_layers
    base_logp = ctx.runner.clean_logprobs  # the base clean pass (and its residual cache) before any adapter
    adapter = lora_training.ensure_adapter(ctx)

    with attached_adapter(model, adapter) as peft_model:
        trained = lora_training.trained_runner(ctx, peft_model)
        trained_resid = trained.residuals  # [n_layers + 1, P, T, d], same padded layout as ctx.runner
        trained_logp = trained.clean_logprobs
    # the adapter is unloaded: ctx.runner's model is the base model again
    base_kl = kl_divergence(trained_logp, base_logp).cpu().numpy()  # [P]
    if base_kl.mean() < MIN_BASE_KL:
        raise AtlasError(
            f"the trained adapter moves the output by {base_kl.mean():.2e} nats on average (< {MIN_BASE_KL}): "
            "nothing to transfer (train longer or with a higher learning rate)"
        )

    layer_ids = list(range(n_layers))
    variants = [Variant(f"L{layer}", (Patch(Site("resid", layer), trained_resid[layer + 1]),)) for layer in layer_ids]
    stats = ctx.runner.sweep(variants, reference_logprobs=trained_logp, progress=ctx.progress)

    recovery, fam_base_kl = {}, {}
    for name, sl in ctx.family_slices.items():
        fam_base_kl[name] = float(base_kl[sl].mean())
        recovery[name] = [
            float(kl_recovery(stats.kl[i, sl].mean(), base_kl[sl].mean()))
            if fam_base_kl[name] >= MIN_BASE_KL
            else float("nan")
            for i in range(len(layer_ids))
        ]
    mean_recovery = [_pooled(ctx, stats.kl[i], base_kl) for i in range(len(layer_ids))]
    values = np.array([e.value for e in mean_recovery])
    ranked = [layer_ids[i] for i in np.argsort(-values, kind="stable")]
    result = TransferResult(
        layers=layer_ids,
        families=list(ctx.families),
        recovery=recovery,
        mean_recovery=mean_recovery,
        base_kl=fam_base_kl,
        top_layers=ranked[:N_TOP],
        zone=[layer for layer, v in zip(layer_ids, values) if v >= ZONE_THRESHOLD],
        zone_threshold=ZONE_THRESHOLD,
    )
    return result


def relayer(result: TransferResult, order) -> TransferResult:
    """The result with layer i holding what layer ``order[i]`` recovered; top layers and zone re-read."""
    from dataclasses import replace

    fams = list(result.recovery)
    layers, (mean, *rec) = relabel(result.layers, order, result.mean_recovery, *(result.recovery[f] for f in fams))
    values = np.array([e.value for e in mean])
    ranked = [layers[i] for i in np.argsort(-values, kind="stable")]
    return replace(
        result,
        layers=layers,
        mean_recovery=mean,
        recovery=dict(zip(fams, rec)),
        top_layers=ranked[: len(result.top_layers)],
        zone=[layer for layer, v in zip(layers, values) if v >= result.zone_threshold],
    )


def statistics(result: TransferResult, n_layers: int, results: dict, top_k: int = N_TOP) -> dict[str, Stat]:
    """The transfer zone: recovery when patching at the last swept layer, the best layer, and the
    final fraction of depth the top-``top_k`` layers (and the thresholded zone) occupy."""
    layers = list(result.layers)
    last = max(layers)
    i = layers.index(last)
    rec = result.mean_recovery
    top = list(result.top_layers)[:top_k]
    curve = series(layers, [r.value for r in rec], "layer", "mean KL recovery")
    out = {
        "transfer.final_recovery": estimate_stat(rec[i], label=f"L{last}", series=curve),
        "transfer.top_layer": Stat(float(top[0]), kind="index", label=f"L{top[0]}")
        if top
        else Stat(None, kind="index"),
        "transfer.top_final_fraction": Stat(final_fraction(top, n_layers), label=f"top {len(top)}: {top}"),
    }
    zone = list(result.zone or [])
    # its interval: the zone of the layers whose recovery interval lies above the threshold, and of those whose
    # interval reaches it (H005 reads it)
    certain = [layer for layer, r in zip(layers, rec) if finite(r.lo) is not None and r.lo >= result.zone_threshold]
    possible = [layer for layer, r in zip(layers, rec) if finite(r.hi) is not None and r.hi >= result.zone_threshold]
    measured = all(finite(r.lo) is not None for r in rec)
    frac = lambda z: final_fraction(z, n_layers) if z else 0.0  # noqa: E731
    out["transfer.zone_final_fraction"] = Stat(
        frac(zone),
        frac(certain) if measured else None,
        frac(possible) if measured else None,
        label=f"recovery >= {result.zone_threshold}: {zone}",
    )
    out["transfer.layer_profile"] = profile_stat(
        layers,
        [r.value for r in rec],
        n_layers,
        lo=[r.lo for r in rec],
        hi=[r.hi for r in rec],
        ylabel="mean KL recovery",
        n=min((r.n for r in rec), default=None),
    )
    for fam, vals in result.recovery.items():
        out[f"transfer.family_final_recovery.{fam}"] = Stat(finite(vals[i]), label=f"L{last}")
    return out


SPEC = ExperimentSpec(
    name=NAME,
    title="Cross-model transfer",
    about="patching trained activations into the base model",
    order=70,
    run=run,
    config=config,
    result=TransferResult,
    requires=("lora_training",),
    seed_dependent=True,
    # claims: not final_recovery nor the top-3 final fraction, true by construction (claim_hygiene)
    group="transfer",
    statistics=statistics,
    headline=True,
    claims=("transfer.zone_final_fraction",),
    finding="headline finding, the transfer zone",
    section="atlas_core.report.sections.lora:transfer",
    macro="transfer",
    overlay="atlas_core.report.compare:transfer_overlay",
    declares=(
        StatDecl(
            "transfer.layer_profile",
            "fraction",
            -math.inf,
            1.0,
            0.0,
            axis="layer",
            about="recovery per layer",
            order_constructed="recovery reaches 1 at the last layer by construction (patching the last "
            "residual leaves only the final norm and LM head, which LoRA does not touch) and "
            "rises toward it with depth on every model measured: the top and the top-k set "
            "are the last layers and the rank order is depth order; the per-layer values "
            "say where recovery rises",
        ),
        StatDecl(
            "transfer.final_recovery",
            "fraction",
            -math.inf,
            1.0,
            0.0,
            constructed="patching the last layer's residual recovers 1 by construction (only the final norm "
            "and LM head follow, and LoRA does not touch them)",
        ),
        StatDecl(
            "transfer.family_final_recovery.{family}",
            "fraction",
            -math.inf,
            1.0,
            0.0,
            constructed="patching the last layer's residual recovers 1 by construction in every family",
        ),
        StatDecl(
            "transfer.top_final_fraction",
            "fraction",
            0.0,
            1.0,
            None,
            direction=0,
            constructed="the top 3 transfer layers are the last 3 of any model whose recovery rises with "
            "depth (it ends at 1 by construction); claim transfer.zone_final_fraction",
        ),
        StatDecl("transfer.zone_final_fraction", "fraction", 0.0, 1.0, None, direction=0),
        StatDecl(
            "transfer.top_layer",
            "layer",
            0.0,
            math.inf,
            None,
            direction=0,
            constructed="the last layer recovers 1 by construction, so it is the top layer of any model",
        ),
    ),
    relayer=relayer,
    # recovery is 1 - KL(patched) / KL(base) for nearly equal KLs: the trained values' relative freedom is an
    # absolute one here (measured: 2e-4 on recoveries near 0.1)
    golden_rel=GOLDEN_REL_TRAINED,
    golden_abs=2e-3,
)
