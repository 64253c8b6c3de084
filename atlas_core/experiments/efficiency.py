"""Efficiency: layer skipping and early exit.

- Skip: a skipped layer passes its input residual through unchanged (its write is dropped). Every layer
  is skipped alone first (``single_skip_kl`` ranks the weakest layers), then the study's four
  configurations, defined relative to depth: the weakest single layer; a mid block of five (layers 4..8
  of 28, i.e. starting at round(4 n / 28)); the six and the eight weakest layers. "Weakest" excludes the
  first and the last layer.
- Early exit at every layer: the final norm and LM head read the residual after that layer (the logit
  lens), compared with the full model; the stock forward truncated to that depth is timed for the
  speedup.
"""

from __future__ import annotations

from dataclasses import dataclass
from atlas_core.metrics import Estimate

import inspect
import math
from statistics import median
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from atlas_core import AtlasError
from atlas_core.experiments.clean import check_families
from atlas_core.experiments.context import Context
from atlas_core.layers import profile_stat, relabel
from atlas_core.spec import ExperimentSpec, StatDecl
from atlas_core.stat import Stat, estimate_stat, finite, relative_depth, series
from atlas_core.interventions import ExitAt, Skip, Variant
from atlas_core.models.adapters import layer_window
from atlas_core.sites import dims

NAME = "efficiency"


@dataclass
class SkipConfig:
    name: str
    layers: list[int]
    mean_kl: Estimate
    top5_overlap: Estimate
    argmax_match: Estimate


@dataclass
class ExitPoint:
    layer: int
    layers_skipped: int
    mean_kl: Estimate
    argmax_match: Estimate
    top5_overlap: Estimate
    seconds: float  # measured forward time exiting here
    speedup: float  # full-depth forward time / this one


@dataclass
class EfficiencyResult:
    skip_configs: list[SkipConfig]
    exits: list[ExitPoint]
    single_skip_kl: list[float]  # per layer: KL of skipping that layer alone (ranks the weakest layers)
    notes: str = ""


TOP_K = 5
TIMING_PROMPTS = 8  # prompts per timed forward (spread over the families): the depth ratio, not the batch, matters
STUDY_DEPTH = 28  # the study's model depth; its mid block was layers 4..8
# "Mid-layer" (H007): a skip configuration is mid-layer when every layer it skips lies within this band of
# relative depth, i.e. it spares the first and the last tenth of the model (the embedding-adjacent layers and
# the layers that write the output), which no redundancy claim is about
MID_BAND = (0.1, 0.9)


def is_mid(layers, n_layers: int) -> bool:
    """Every layer of ``layers`` lies within :data:`MID_BAND` of relative depth."""
    lo, hi = MID_BAND
    return bool(layers) and all(lo <= relative_depth(layer, n_layers) <= hi for layer in layers)


def config(ctx: Context) -> dict:
    return {
        "top_k": TOP_K,
        "timing_prompts": TIMING_PROMPTS,
        "timing_repeats": ctx.profile.timing_repeats,
        "configs": ["skip_weakest_1", "skip_mid_5", "skip_6_layers", "skip_8_layers"],
    }


def skip_configs(single_skip_kl: list[float]) -> list[tuple[str, list[int]]]:
    """The study's four skip configurations for a model of ``len(single_skip_kl)`` layers."""
    n = len(single_skip_kl)
    interior = list(range(1, n - 1))
    if not interior:
        raise AtlasError(
            f"layer skipping needs a model with at least 3 layers (this one has {n}): "
            "the first and last layer are never skipped"
        )
    weakest = sorted(interior, key=lambda layer: (single_skip_kl[layer], layer))
    k = min(5, len(interior))
    start = min(max(round(4 * n / STUDY_DEPTH), 1), n - 1 - k)
    return [
        ("skip_weakest_1", weakest[:1]),
        ("skip_mid_5", list(range(start, start + k))),
        ("skip_6_layers", sorted(weakest[:6])),
        ("skip_8_layers", sorted(weakest[:8])),
    ]


def _layer_sweep(shared: dict, target: str):
    """The zero-mode sweep of ``target`` from a layer ablation earlier in this run (its typed result)."""
    res = shared.get("layer_ablation")
    if res is None:
        return None
    return next((s for s in res.sweeps if (s.target, s.mode) == (target, "zero")), None)


def reuse_single_skips(shared: dict, n_layers: int) -> list[float] | None:
    """Zeroing a layer's write is the same intervention as skipping it: when the layer ablation already
    ran its delta/zero sweep over every layer in this run, its mean KL per layer is the single-skip KL."""
    sweep = _layer_sweep(shared, "delta")
    if sweep is None or list(sweep.layers) != list(range(n_layers)):
        return None
    return [float(e.value) for e in sweep.mean_kl]


def _zeroed_range(shared: dict) -> str:
    sweep = _layer_sweep(shared, "resid")
    if sweep is None or len(sweep.family_mean_kl) < 3:
        return ""
    mid = sweep.family_mean_kl[1:-1]
    return f": {min(mid):.2f} to {max(mid):.2f} nats over the middle layers in this run"


def _timing_batch(ctx: Context) -> dict:
    enc = ctx.runner.enc
    idx = np.unique(np.linspace(0, enc.n - 1, min(TIMING_PROMPTS, enc.n)).round().astype(int))
    rows = torch.as_tensor(idx, device=enc.input_ids.device)
    mask = enc.attention_mask[rows]
    t0 = int(mask.any(0).long().argmax())  # drop the columns that are padding in every chosen row
    batch = {
        "input_ids": enc.input_ids[rows, t0:],
        "attention_mask": mask[:, t0:],
        "position_ids": enc.position_ids[rows, t0:],
        "use_cache": False,
    }
    if "logits_to_keep" in inspect.signature(ctx.lm.model.forward).parameters:
        # last position only, as the runner does. By index, not ``1``: the stock forward slices ``[:, -1:]``, a
        # strided view that F.linear multiplies by batched matmul over a copied weight, 1.8x the head's time in
        # fp32 and ~200x in bf16 on CPU; an index tensor gathers a contiguous copy and the head runs as one matmul
        batch["logits_to_keep"] = torch.tensor([batch["input_ids"].shape[1] - 1], device=rows.device)
    return batch


def time_exits(ctx: Context, layers: list[int]) -> list[float]:
    """Median seconds of the stock forward truncated to ``layer + 1`` layers, for each layer. Repeats go
    round-robin over the layers so that drift in machine load does not favour one depth."""
    model = ctx.lm.model
    batch = _timing_batch(ctx)
    cuda = batch["input_ids"].device.type == "cuda"
    reps = max(1, ctx.profile.timing_repeats)
    times: dict[int, list[float]] = {layer: [] for layer in layers}
    with torch.inference_mode():
        model(**batch)  # warm-up
        for _ in tqdm(range(reps), desc="exit timing", unit="round", disable=not ctx.progress, leave=False):
            for layer in layers:
                with layer_window(model, 0, layer + 1):
                    if cuda:
                        torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    model(**batch)
                    if cuda:
                        torch.cuda.synchronize()
                    times[layer].append(time.perf_counter() - t0)
    return [median(times[layer]) for layer in layers]


def run(ctx: Context) -> EfficiencyResult:
    check_families(ctx)
    n = dims(ctx.lm.model).n_layers
    if n < 3:
        skip_configs([0.0] * n)  # raises the clear error before any work
    runner = ctx.runner

    single_skip_kl = reuse_single_skips(ctx.results, n)
    if single_skip_kl is None:
        single = runner.sweep(
            [Variant(f"skip/L{layer}", (Skip((layer,)),)) for layer in range(n)], k=TOP_K, progress=ctx.progress
        )
        single_skip_kl = [float(v) for v in single.kl.mean(axis=1)]

    named = skip_configs(single_skip_kl)
    stats = runner.sweep(
        [Variant(name, (Skip(tuple(layers)),)) for name, layers in named], k=TOP_K, progress=ctx.progress
    )
    configs = [
        SkipConfig(
            name=name,
            layers=layers,
            mean_kl=ctx.estimate(stats.kl[i]),
            top5_overlap=ctx.estimate(stats.topk_overlap[i]),
            argmax_match=ctx.estimate(stats.argmax_match[i].astype(np.float64)),
        )
        for i, (name, layers) in enumerate(named)
    ]

    exit_layers = list(range(n))
    ex = runner.sweep(
        [Variant(f"exit/L{layer}", (ExitAt(layer),)) for layer in exit_layers], k=TOP_K, progress=ctx.progress
    )
    seconds = time_exits(ctx, exit_layers)
    full = seconds[-1]
    exits = [
        ExitPoint(
            layer=layer,
            layers_skipped=n - 1 - layer,
            mean_kl=ctx.estimate(ex.kl[i]),
            argmax_match=ctx.estimate(ex.argmax_match[i].astype(np.float64)),
            top5_overlap=ctx.estimate(ex.topk_overlap[i]),
            seconds=float(seconds[i]),
            speedup=float(full / seconds[i]) if seconds[i] > 0 else float("nan"),
        )
        for i, layer in enumerate(exit_layers)
    ]

    middle = single_skip_kl[1:-1]
    notes = (
        "A skipped layer passes its input residual through unchanged (its write to the residual is dropped). "
        f"Measured KL of skipping one layer alone: {min(single_skip_kl):.3f} to {max(single_skip_kl):.3f} nats "
        f"over all layers, {min(middle):.3f} to {max(middle):.3f} nats over the middle layers (first and last "
        "excluded). The study's 9.5 nats for skipping one middle layer (L15 of 28) is far above what a clean "
        "skip gives; figures of that size are what zeroing a layer's whole output gives (layer_ablation, "
        f"target 'resid'{_zeroed_range(ctx.results)}), which a skip does not do. This result does not imitate it. "
        f"Timings: median of {max(1, ctx.profile.timing_repeats)} stock forwards over "
        f"{int(_timing_batch(ctx)['input_ids'].shape[0])} prompts, truncated to the exit depth, last-position logits."
    )
    result = EfficiencyResult(skip_configs=configs, exits=exits, single_skip_kl=single_skip_kl, notes=notes)
    return result


EXIT_SKIPS = (1, 2, 4, 10)  # early exits the study tabulates, by layers skipped (efficiency.exit.skipN.*)


def relayer(result: EfficiencyResult, order) -> EfficiencyResult:
    """The result with layer i holding what layer ``order[i]`` measured: single-skip KLs and exits move
    with their layers (an exit's layers skipped follow its new layer), skip configurations name their
    layers' new numbers."""
    from dataclasses import replace

    n = len(result.single_skip_kl)
    _, (single,) = relabel(range(n), order, result.single_skip_kl)
    inv = {old: new for new, old in enumerate(order)}
    cfgs = [replace(c, layers=sorted(inv[layer] for layer in c.layers)) for c in result.skip_configs]
    by_layer = {e.layer: e for e in result.exits}
    exits = [
        replace(by_layer[old], layer=new, layers_skipped=n - 1 - new)
        for new, old in enumerate(order)
        if old in by_layer
    ]
    return replace(result, skip_configs=cfgs, exits=exits, single_skip_kl=single)


def statistics(result: EfficiencyResult, n_layers: int, results: dict) -> dict[str, Stat]:
    """Layer skipping and early exit: the best top-5 overlap among skip configurations (H007) and
    each configuration's KL and overlap; the best argmax match of an early exit."""
    out: dict[str, Stat] = {}
    cfgs = result.skip_configs
    if cfgs:
        best = max(cfgs, key=lambda c: finite(c.top5_overlap.value) or 0.0)
        curve = series(
            range(len(cfgs)),
            [c.top5_overlap.value for c in cfgs],
            "skip config (" + ", ".join(c.name for c in cfgs) + ")",
            "top-5 overlap",
        )
        out["efficiency.best_top5_overlap"] = estimate_stat(best.top5_overlap, label=best.name, series=curve)
        mid = [c for c in cfgs if is_mid(c.layers, n_layers)]
        if mid:  # H007 reads these: redundancy of the middle layers (MID_BAND)
            bm = max(mid, key=lambda c: finite(c.top5_overlap.value) or 0.0)
            out["efficiency.best_mid_top5_overlap"] = estimate_stat(
                bm.top5_overlap, label=f"{bm.name} {bm.layers} (of {len(mid)} mid-layer configs)"
            )
        for c in cfgs:
            out[f"efficiency.skip.{c.name}.top5_overlap"] = estimate_stat(c.top5_overlap, label=str(c.layers))
            out[f"efficiency.skip.{c.name}.mean_kl"] = estimate_stat(c.mean_kl, label=str(c.layers))
    out["efficiency.skip_profile"] = profile_stat(
        range(len(result.single_skip_kl)),
        result.single_skip_kl,
        n_layers,
        ylabel="KL of skipping the layer alone (nats)",
    )
    # exits that skip something: an exit after the last layer matches the full model by construction
    ex = sorted((e for e in result.exits if e.layers_skipped > 0), key=lambda e: e.layer)
    if ex:
        out["efficiency.exit_profile"] = profile_stat(
            [e.layer for e in ex],
            [e.argmax_match.value for e in ex],
            n_layers,
            lo=[e.argmax_match.lo for e in ex],
            hi=[e.argmax_match.hi for e in ex],
            ylabel="argmax match",
            n=min(e.argmax_match.n for e in ex),
        )
    exits = [e for e in result.exits if e.layers_skipped > 0]
    if exits:
        best = max(exits, key=lambda e: finite(e.argmax_match.value) or 0.0)
        # read at the best exit's layer, which the claims name (the exit profile carries it)
        out["efficiency.best_exit_argmax"] = estimate_stat(
            best.argmax_match,
            label=f"exit L{best.layer}",
            series={**out["efficiency.exit_profile"].series, "at": int(best.layer)},
        )
    for e in exits:  # the exits the study tabulates (an exit after the last layer skips nothing: match 1)
        if e.layers_skipped in EXIT_SKIPS:
            out[f"efficiency.exit.skip{e.layers_skipped}.argmax_match"] = estimate_stat(
                e.argmax_match, label=f"exit L{e.layer}"
            )
    return out


SPEC = ExperimentSpec(
    name=NAME,
    title="Skipping and early exit",
    about="layer-skip configurations and early exit",
    order=90,
    run=run,
    config=config,
    result=EfficiencyResult,
    reuses=("layer_ablation",),
    group="efficiency",
    statistics=statistics,
    claims=("efficiency.best_exit_argmax", "efficiency.exit.*.argmax_match"),
    finding="early exit and layer skipping",
    profile_fields=("timing_repeats",),
    section="atlas_core.report.sections.efficiency:efficiency",
    macro="efficiency",
    overlay="atlas_core.report.compare:efficiency_overlay",
    declares=(
        StatDecl(
            "efficiency.skip_profile", "nats", 0.0, math.inf, 0.0, axis="layer", about="KL of skipping each layer"
        ),
        StatDecl(
            "efficiency.exit_profile",
            "fraction",
            0.0,
            1.0,
            None,
            axis="layer",
            about="argmax match per exit that skips a layer or more",
        ),
        # the exits the study tabulates; an exit after the last layer (skip0) skips nothing and matches the full
        # model by construction, so it is not computed, and a claim of it is refused as an unknown statistic
        *(
            StatDecl(
                f"efficiency.exit.skip{n}.argmax_match",
                "fraction",
                0.0,
                1.0,
                None,
                about=f"argmax match of the exit that skips {n} layer(s)",
            )
            for n in EXIT_SKIPS
        ),
        StatDecl(
            "efficiency.best_exit_argmax",
            "fraction",
            0.0,
            1.0,
            None,
            at="layer",
            about="best argmax match of an early exit",
        ),
        StatDecl("efficiency.best_top5_overlap", "fraction", 0.0, 1.0, None, about="best top-5 overlap of a skip"),
        StatDecl(
            "efficiency.best_mid_top5_overlap",
            "fraction",
            0.0,
            1.0,
            None,
            about="best top-5 overlap of a mid-layer skip",
        ),
        StatDecl("efficiency.skip.*.top5_overlap", "fraction", 0.0, 1.0, None),
        StatDecl("efficiency.skip.*.mean_kl", "nats", 0.0, math.inf, 0.0, direction=-1),
    ),
    relayer=relayer,
)
