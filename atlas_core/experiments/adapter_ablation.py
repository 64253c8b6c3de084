"""Experiment 8, adapter ablation: with the trained LoRA adapter attached, switch it off in one decoder
layer at a time and measure KL(full trained || adapter off at L) at the last position; set that
against the adapter's weight norm per layer (sum over the layer's LoRA modules of ``||B A||_F * scale``)
with a Pearson correlation and a bootstrap interval over layers (the study: 0.85 at 0.5B, 0.54 at 1.5B).

Switching the adapter off at L leaves layers below L as in the trained run, so each layer's variant
starts from the trained runner's cached residual entering L (clean-prefix reuse) and runs L and up
with peft's per-module disable flag set on layer L's LoRA modules.

Under ``atlas run --ray`` the layers are cut into one chunk per free actor (``RayPool.spread``); each actor attaches
the adapter (sent as its files) to its own replica and measures its chunk as the driver would, bit for bit at the
same thread count, checkpointing in a subfolder of the experiment's per chunk. Each actor runs the adapted model's
clean pass for its chunk (its reference and prefixes): one pass per actor, side by side, where the driver runs one.
"""

from __future__ import annotations

from dataclasses import dataclass
from atlas_core.metrics import Estimate

import math

import numpy as np
from tqdm.auto import tqdm

from atlas_core.adapters_lora import adapter_disabled_at, adapter_norms, attached_adapter
from atlas_core.experiments import lora_training
from atlas_core.experiments.context import Context
from atlas_core.layers import profile_stat, relabel
from atlas_core.spec import GOLDEN_REL_TRAINED, ExperimentSpec, StatDecl
from atlas_core.stat import Stat, finite, series
from atlas_core.interventions import Noop, Variant
from atlas_core.metrics import correlation_ci, pearson, spearman
from atlas_core.runner import Runner
from atlas_core.sites import Site

NAME = "adapter_ablation"


@dataclass
class AdapterAblationResult:
    layers: list[int]
    kl: list[Estimate]  # per layer: KL(full trained || adapter disabled at that layer)
    norm: list[float]  # per layer: adapter weight norm (sum over its modules of ||B A|| * scale)
    pearson: float
    pearson_ci: list[float]  # bootstrap over layers
    top_layers: list[int]


N_TOP = 5  # the study's table lists the five strongest layers


def config(ctx: Context) -> dict:
    return {"lora": lora_training.config(ctx), "n_top": N_TOP, "disable": "per-layer peft flag"}


def layer_kls(peft_model, trained: Runner, layers: list[int], progress: bool = False) -> list[np.ndarray]:
    """KL per prompt of the adapted model against itself with the adapter off at each of ``layers`` (``trained``:
    a runner over ``peft_model``, whose cached run gives each layer's prefix)."""
    trained.residuals  # cache the full trained run (the reference and every layer's prefix)
    out = []
    for layer in tqdm(layers, desc="adapter ablation", unit="layer", disable=not progress, leave=False):
        with adapter_disabled_at(peft_model, layer):
            stats = trained.sweep([Variant(f"L{layer}", (Noop(Site("resid", layer)),))], progress=False)
        out.append(stats.kl[0])
    return out


@dataclass(frozen=True)
class AdaptedLayers:
    """What a replica of the base model needs to measure layers of the adapter as the driver would: the
    trained runner's prompts and settings, the adapter's files, and the folder its sweeps checkpoint in."""

    prompts: tuple[str, ...]
    memory_mb: int
    seed: int
    adapter: dict[str, bytes]
    partial: str | None  # the experiment's checkpoints folder (None: none lent)


def layer_kls_on(lm, job: AdaptedLayers, layers: list[int]) -> list[np.ndarray]:
    """``layer_kls`` for ``layers`` on ``lm`` (a Ray actor's replica, ``RayPool.spread``): the adapter placed in a
    temporary folder and attached for the call; the sweeps checkpoint in a subfolder of the experiment's, one per
    chunk of layers, so a rerun with the same workers resumes them."""
    import tempfile
    from pathlib import Path

    from atlas_core.adapters_lora import place_adapter
    from atlas_core.checkpoints import Checkpoints
    from atlas_core.runner import Sweeping

    ck = None if job.partial is None else Checkpoints(Path(job.partial) / f"layers-{layers[0]}-{layers[-1]}")
    with tempfile.TemporaryDirectory(prefix="atlas-adapter-") as tmp:
        path = place_adapter(Path(tmp) / "adapter", job.adapter)
        with attached_adapter(lm.model, path) as peft_model:
            trained = Runner(
                peft_model,
                lm.tokenizer,
                list(job.prompts),
                memory_mb=job.memory_mb,
                seed=job.seed,
                sweeping=Sweeping(checkpoints=ck),
            )
            return layer_kls(peft_model, trained, layers)


def _on_replicas(ctx: Context, adapter, layers: list[int]) -> list[np.ndarray] | None:
    """The layers measured on the Ray pool's replicas, spread over its free actors (``atlas run --ray``); None
    when no pool takes the run's model (then the driver measures them)."""
    backend = ctx.sweeping.backend
    spread = getattr(backend, "spread", None)
    if backend is None or spread is None or not backend.takes(ctx.runner):
        return None
    from atlas_core.adapters_lora import adapter_files

    ck = ctx.sweeping.checkpoints
    job = AdaptedLayers(
        tuple(ctx.prompts),
        ctx.profile.memory_mb,
        ctx.seed,
        adapter_files(adapter),
        None if ck is None else str(ck.directory),
    )
    return spread(layer_kls_on, job, layers)


def run(ctx: Context) -> AdapterAblationResult:
    model = ctx.lm.model
    ctx.runner.clean_logprobs  # the shared base clean pass happens before any adapter is attached
    adapter = lora_training.ensure_adapter(ctx)
    n_layers = ctx.runner.dims.n_layers
    layer_ids = list(range(n_layers))

    spread = _on_replicas(ctx, adapter, layer_ids)
    with attached_adapter(model, adapter) as peft_model:
        norms = adapter_norms(peft_model)
        if spread is not None:
            per_layer_kl = spread
        else:
            trained = lora_training.trained_runner(ctx, peft_model)
            per_layer_kl = layer_kls(peft_model, trained, layer_ids, ctx.progress)

    kl = [ctx.estimate(v) for v in per_layer_kl]
    means = np.array([e.value for e in kl])
    r = pearson(norms, means)
    result = AdapterAblationResult(
        layers=layer_ids,
        kl=kl,
        norm=norms,
        pearson=r,
        pearson_ci=correlation_ci(norms, list(means), pearson, ctx.profile.n_boot, ctx.seed),
        top_layers=[layer_ids[i] for i in np.argsort(-means, kind="stable")[:N_TOP]],
    )
    return result


def relayer(result: AdapterAblationResult, order) -> AdapterAblationResult:
    """The result with layer i holding layer ``order[i]``'s adapter and effect (norm and KL move together:
    the correlations stay); the top layers re-read."""
    from dataclasses import replace

    layers, (kl, norm) = relabel(result.layers, order, result.kl, result.norm)
    means = np.array([e.value for e in kl])
    return replace(
        result,
        layers=layers,
        kl=kl,
        norm=norm,
        top_layers=[layers[i] for i in np.argsort(-means, kind="stable")[: len(result.top_layers)]],
    )


def statistics(result: AdapterAblationResult, n_layers: int, results: dict) -> dict[str, Stat]:
    """Adapter ablation: Pearson correlation of adapter norm with ablation effect (H008, the study's
    statistic), and Spearman's rank correlation beside it (one layer far above the rest decides r alone;
    its interval: a bootstrap over layers, 1000 resamples, seed 0, taken here from the stored means)."""
    ci = list(result.pearson_ci or [None, None])
    top = (list(result.top_layers) or [None])[0]
    kl = [finite(k.value) for k in result.kl]
    curve = series(result.norm, kl, "adapter norm", "ablation KL (nats)")
    lo, hi = finite(ci[0]), finite(ci[1])
    out = {
        "adapter.pearson": Stat(
            finite(result.pearson),
            lo,
            hi,
            len(result.layers),
            kind="estimate" if None not in (lo, hi) else "value",
            series=curve,
        )
    }
    pts = [(n, k) for n, k in zip(result.norm, kl) if finite(n) is not None and k is not None]
    if len(pts) >= 2:
        norm, eff = zip(*pts)
        slo, shi = correlation_ci(norm, eff, spearman)
        out["adapter.spearman"] = Stat(
            finite(spearman(norm, eff)), finite(slo), finite(shi), len(pts), kind="estimate", series=curve
        )
    out["adapter.layer_profile"] = profile_stat(
        result.layers,
        kl,
        n_layers,
        lo=[k.lo for k in result.kl],
        hi=[k.hi for k in result.kl],
        ylabel="adapter-ablation KL (nats)",
        n=min((k.n for k in result.kl), default=None),
    )
    if top is not None:
        out["adapter.top_layer"] = Stat(float(top), kind="index", label=f"L{top}")
    return out


SPEC = ExperimentSpec(
    name=NAME,
    title="Adapter ablation",
    about="adapter weight norm vs its functional effect",
    order=80,
    run=run,
    config=config,
    result=AdapterAblationResult,
    requires=("lora_training",),
    seed_dependent=True,
    group="adapter",
    statistics=statistics,
    finding="adapter ablation, the layers where the trained adapter acts",
    section="atlas_core.report.sections.lora:adapter",
    macro="adapter",
    overlay="atlas_core.report.compare:adapter_overlay",
    declares=(
        StatDecl(
            "adapter.layer_profile", "nats", 0.0, math.inf, 0.0, axis="layer", about="adapter-ablation KL per layer"
        ),
        StatDecl("adapter.pearson", "correlation", -1.0, 1.0, 0.0),
        StatDecl("adapter.spearman", "correlation", -1.0, 1.0, 0.0),
        StatDecl("adapter.top_layer", "layer", 0.0, math.inf, None, direction=0),
    ),
    relayer=relayer,
    golden_rel=GOLDEN_REL_TRAINED,  # LoRA-derived
)
