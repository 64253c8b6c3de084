"""Layer ablation: ablate each layer in turn and measure how far the last-position distribution moves
(KL from the clean run, nats), per family, for every ablation mode of the profile.

Two targets, both reported:
- ``resid``: the layer's whole output hidden state is replaced (the study's definition: its 5.4 to
  13.7 nats per layer come from wiping the residual stream itself);
- ``delta``: the layer's write (output minus input) is replaced, so the residual it received flows on;
  zeroing it is exactly skipping the layer.

``layer_sweep`` is shared with the MLP ablation.
"""

from __future__ import annotations

from dataclasses import dataclass
from atlas_core.metrics import Estimate

import math

import numpy as np
from tqdm.auto import tqdm

from atlas_core import AtlasError
from atlas_core.experiments.clean import check_families
from atlas_core.experiments.context import Context
from atlas_core.interventions import ABLATION_MODES, Ablate, Variant
from atlas_core.sites import Site
from atlas_core.layers import relabel, value_at
from atlas_core.spec import ExperimentSpec, StatDecl
from atlas_core.metrics import is_tie
from atlas_core.stat import Stat, finite, relative_depth, series

NAME = "layer_ablation"


@dataclass
class LayerSweep:
    """One ablation target x mode over every layer."""

    target: str  # "resid": the layer's whole output (the study's); "delta": the layer's write; "mlp"
    mode: str  # zero | mean | resample
    layers: list[int]
    kl: dict[str, list[float]]  # family -> mean KL per layer (nats)
    mean_kl: list[Estimate]  # per layer, mean over all prompts (every family)
    family_mean_kl: list[float]  # per layer, mean of the per-family means (the study's "mean KL across families")
    argmax_match: list[float]  # per layer, fraction of prompts whose argmax is unchanged
    ranking: list[int]  # layers by family_mean_kl, strongest first


@dataclass
class LayerAblationResult:
    n_layers: int
    families: list[str]
    sweeps: list[LayerSweep]
    primary: str = "resid/zero"  # "<target>/<mode>" of the study's definition
    notes: str = ""


TARGETS = ("resid", "delta")
PRIMARY = "resid/zero"


def check_modes(modes) -> list[str]:
    modes = list(modes)
    if not modes:
        raise AtlasError(f"the profile selects no ablation modes; use some of {', '.join(ABLATION_MODES)}")
    bad = [m for m in modes if m not in ABLATION_MODES]
    if bad:
        raise AtlasError(f"unknown ablation mode(s) {', '.join(bad)}; modes are {', '.join(ABLATION_MODES)}")
    return modes


def layer_sweep(ctx: Context, kind: str, mode: str, layers: list[int] | None = None) -> LayerSweep:
    """Ablate ``Site(kind, L)`` with ``mode`` for each layer L (default: every layer), one batched sweep."""
    runner = ctx.runner
    layers = list(range(runner.dims.n_layers)) if layers is None else list(layers)
    sites = [Site(kind, layer) for layer in layers]
    if mode in ("mean", "resample"):
        runner.reference.record(sites)  # one clean pass records every site, not one pass per layer
    variants = [Variant(f"{kind}/{mode}/L{s.layer}", (Ablate(s, mode),)) for s in sites]
    stats = runner.sweep(variants, progress=ctx.progress)
    kl = stats.kl  # [layers, prompts]
    per_family = {name: kl[:, sl].mean(axis=1) for name, sl in ctx.family_slices.items()}
    family_mean = np.mean(np.stack(list(per_family.values())), axis=0)
    ranking = np.argsort(-family_mean, kind="stable")
    return LayerSweep(
        target=kind,
        mode=mode,
        layers=layers,
        kl={name: [float(v) for v in vals] for name, vals in per_family.items()},
        mean_kl=[ctx.estimate(kl[i]) for i in range(len(layers))],
        family_mean_kl=[float(v) for v in family_mean],
        argmax_match=[float(v) for v in stats.argmax_match.mean(axis=1)],
        ranking=[layers[i] for i in ranking],
    )


def run_sweeps(ctx: Context, targets: tuple[str, ...], desc: str) -> list[LayerSweep]:
    check_families(ctx)
    modes = check_modes(ctx.profile.ablation_modes)
    jobs = [(t, m) for t in targets for m in modes]
    out = []
    for target, mode in tqdm(jobs, desc=desc, unit="sweep", disable=not ctx.progress):
        out.append(layer_sweep(ctx, target, mode))
    return out


def find_sweep(sweeps: list[LayerSweep], key: str) -> LayerSweep | None:
    """The sweep named ``"<target>/<mode>"``, or None."""
    return next((s for s in sweeps if f"{s.target}/{s.mode}" == key), None)


def _range(sweep: LayerSweep | None) -> str:
    if sweep is None:
        return "not run"
    v = sweep.family_mean_kl
    return f"{min(v):.2f} to {max(v):.2f} nats (strongest L{sweep.ranking[0]})"


def config(ctx: Context) -> dict:
    return {"targets": list(TARGETS), "modes": list(ctx.profile.ablation_modes), "primary": PRIMARY}


def run(ctx: Context) -> LayerAblationResult:
    sweeps = run_sweeps(ctx, TARGETS, "layer ablation")
    resid, delta = find_sweep(sweeps, "resid/zero"), find_sweep(sweeps, "delta/zero")
    notes = (
        "Two ablation targets per layer. 'resid': the layer's whole output hidden state is replaced, so "
        "everything written to the residual stream up to and including that layer is lost (the study's "
        "definition; its 5.4 to 13.7 nats per layer match this target, not the other). 'delta': only the "
        "layer's write (output minus input) is replaced, so the residual it received flows on; zeroing it is "
        "exactly skipping the layer. Measured mean KL across families, zero mode: "
        f"resid {_range(resid)}; delta {_range(delta)}. Primary (the replication): {PRIMARY}."
    )
    result = LayerAblationResult(
        n_layers=ctx.runner.dims.n_layers, families=list(ctx.families), sweeps=sweeps, primary=PRIMARY, notes=notes
    )
    return result


def primary_sweep(result: LayerAblationResult) -> LayerSweep:
    """The result's primary sweep (the study's definition), or its first."""
    if not result.sweeps:
        raise AtlasError("the stored ablation result has no sweeps: re-run the experiment (atlas run ...)")
    return find_sweep(result.sweeps, result.primary) or result.sweeps[0]


def sweep_stats(prefix: str, sweep: LayerSweep, n_layers: int) -> dict[str, Stat]:
    """The top layer of an ablation sweep, its KL, depth and rank order. When every layer gives the same
    KL (:func:`atlas_core.metrics.is_tie`: zeroing the whole residual of a model without biases) there is
    no top layer: the layer, depth and ranking are None with ``tie`` set, and the KL is the common value."""
    layers, fmk = list(sweep.layers), list(sweep.family_mean_kl)
    ranking = tuple(int(v) for v in sweep.ranking)
    tie = is_tie(fmk)
    top = ranking[0]
    i = layers.index(top)
    est = sweep.mean_kl[i]
    shift = fmk[i] - (finite(est.value) or 0.0)  # interval of the all-prompt mean, centred on the family mean
    curve = series(layers, fmk, "layer", "mean KL over families (nats)")
    shifts = [f - (finite(e.value) or 0.0) for f, e in zip(fmk, sweep.mean_kl)]
    profile = {
        **curve,
        "axis": "layer",
        "n_layers": n_layers,
        "lo": [None if finite(e.lo) is None else finite(e.lo) + d for e, d in zip(sweep.mean_kl, shifts)],
        "hi": [None if finite(e.hi) is None else finite(e.hi) + d for e, d in zip(sweep.mean_kl, shifts)],
        "n": min((e.n for e in sweep.mean_kl), default=None),
    }
    label = f"all {len(layers)} layers tie" if tie else f"L{top}"
    # the layers that could be the top: their KL interval reaches the top layer's (H001 reads their depths)
    top_lo = profile["lo"][i]
    rivals = [layer for layer, h in zip(layers, profile["hi"]) if top_lo is not None and h is not None and h >= top_lo]
    depths = [relative_depth(layer, n_layers) for layer in rivals or [top]]
    at = None if tie else float(top)
    lo, hi = finite(est.lo), finite(est.hi)
    out = {
        f"{prefix}.ranking": Stat(
            at, kind="ranking", ranking=() if tie else ranking, label=label, series=profile, tie=tie
        ),
        f"{prefix}.top_layer": Stat(at, kind="index", label=label, series=curve, tie=tie),
        f"{prefix}.top_layer_depth": Stat(
            None if tie else relative_depth(top, n_layers),
            None if tie or top_lo is None else min(depths),
            None if tie or top_lo is None else max(depths),
            label=label if tie else f"L{top} of {n_layers}",
            tie=tie,
        ),
        f"{prefix}.top_layer_kl": Stat(
            fmk[i],
            None if lo is None else lo + shift,
            None if hi is None else hi + shift,
            est.n,
            kind="estimate",
            label=label,
            series=curve,
        ),
    }
    for fam, vals in sweep.kl.items():  # read at the top layer, which the claims name
        out[f"{prefix}.family_kl.{fam}"] = value_at(
            layers, vals, top, n_layers, anchored=not tie, label=label, ylabel=f"{fam} KL (nats)"
        )
    return out


def relayer_sweep(sweep: LayerSweep, order) -> LayerSweep:
    """``sweep`` as if layer i had measured what layer ``order[i]`` did; its ranking recomputed."""
    fams = list(sweep.kl)
    layers, arrays = relabel(
        sweep.layers, order, sweep.mean_kl, sweep.family_mean_kl, sweep.argmax_match, *(sweep.kl[f] for f in fams)
    )
    mean_kl, fmk, am, *kl = arrays
    ranking = [layers[i] for i in np.argsort(-np.asarray(fmk, dtype=float), kind="stable")]
    return LayerSweep(sweep.target, sweep.mode, layers, dict(zip(fams, kl)), mean_kl, fmk, am, ranking)


def relayer(result, order):
    from dataclasses import replace

    return replace(result, sweeps=[relayer_sweep(s, order) for s in result.sweeps])


def sweep_decls(prefix: str, top: str, what: str, axis: str | None = "layer") -> tuple[StatDecl, ...]:
    """The statistics of :func:`sweep_stats` (``top``: ``top_layer`` or, for the MLP, ``max_layer``; ``axis``:
    None where another statistic already carries the same per-layer profile, so that its location claims are
    written once)."""
    kl = "top_layer_kl" if top == "top_layer" else "max_kl"
    return (
        StatDecl(f"{prefix}.ranking", "nats", 0.0, math.inf, 0.0, axis=axis, about=f"{what} KL per layer"),
        StatDecl(
            f"{prefix}.{top}_depth", "fraction", 0.0, 1.0, None, direction=0, about="relative depth of the top layer"
        ),
        StatDecl(f"{prefix}.{top}", "layer", 0.0, math.inf, None, direction=0, about="the top layer"),
        StatDecl(f"{prefix}.{kl}", "nats", 0.0, math.inf, 0.0, about=f"the top layer's {what} KL"),
        StatDecl(
            f"{prefix}.family_kl.{{family}}",
            "nats",
            0.0,
            math.inf,
            0.0,
            at="layer",
            about="KL per family at the top layer",
        ),
    )


def statistics(result: LayerAblationResult, n_layers: int, results: dict) -> dict[str, Stat]:
    """The hub: the layer whose ablation moves the output most (the primary sweep, the study's
    mean-over-families KL), its KL, its relative depth, its rank order, and its KL per family. Zeroing a
    layer's whole output leaves nothing for later layers to read, so in a model without biases every layer
    ties there; ``hub.skip.*`` reads the same statistics off the skip sweep (``delta/zero``), with each
    layer's skip KL and argmax match (``hub.skip.layer_kl.<L>``), which localise the work."""
    out = sweep_stats("hub", primary_sweep(result), n_layers)
    skip = find_sweep(result.sweeps, "delta/zero")
    if skip is not None:  # zeroing a layer's write is skipping it: the layer that does the work, located
        out.update(sweep_stats("hub.skip", skip, n_layers))
        for layer, kl, match in zip(skip.layers, skip.family_mean_kl, skip.argmax_match):
            out[f"hub.skip.layer_kl.{layer}"] = Stat(float(kl), label=f"L{layer} skipped")
            out[f"hub.skip.layer_argmax.{layer}"] = Stat(float(match), label=f"L{layer} skipped")
    return out


SPEC = ExperimentSpec(
    name=NAME,
    title="Layer ablation",
    about="KL (nats) from ablating each layer, per family",
    order=10,
    run=run,
    config=config,
    result=LayerAblationResult,
    group="hub",
    statistics=statistics,
    headline=True,
    claims=("hub.top_layer_kl", "hub.family_kl.*"),
    ranked=("hub.ranking", "layer ablation"),
    finding="headline finding, the hub layer",
    profile_fields=("ablation_modes",),
    section="atlas_core.report.sections.ablation:layer_sweeps",
    macro="sweeps",
    overlay="atlas_core.report.compare:sweeps_overlay",
    declares=sweep_decls("hub", "top_layer", "layer-ablation")
    + sweep_decls(  # the skip sweep's profile is efficiency.skip_profile's
        "hub.skip", "top_layer", "layer-skip", axis=None
    )
    + (
        StatDecl("hub.skip.layer_kl.*", "nats", 0.0, math.inf, 0.0, about="KL of skipping one layer (by layer)"),
        StatDecl("hub.skip.layer_argmax.*", "fraction", 0.0, 1.0, None, about="argmax match skipping one layer"),
    ),
    relayer=relayer,
)
