"""Several runs side by side, their figures: per-layer curves overlaid on relative depth (layer / (n_layers - 1)),
heatmaps with one row per run, grouped bars per family (the builders the specs name as ``overlay``). The page
around them, its tables and its rendering: :mod:`atlas_core.report.compare_page`."""

from __future__ import annotations

from typing import Any

import numpy as np

from atlas_core.experiments.layer_ablation import primary_sweep
from atlas_core.report import plots
from atlas_core.report import sections as S
from atlas_core.report.data import ReportedRun
from atlas_core.spec import experiments, resolve
from atlas_core.stat import finite

DEPTH = "relative depth (layer / (n_layers − 1))"
XLIM = (-0.03, 1.03)


def _depths(run: ReportedRun, layers) -> list[float | None]:
    return [run.depth(layer) for layer in layers]


def _name(run: ReportedRun) -> str:
    return f"{run.label.upper()}: {run.name}"


def run_color(i: int) -> str:
    """The colour of the ``i``-th run, in every figure and on the page."""
    return plots.RUN_COLORS[i % len(plots.RUN_COLORS)]


def overlay(sid: str, runs: list[ReportedRun]) -> list[dict]:
    """The section's figures over every run: per-layer curves on one relative-depth axis, heatmaps
    with one row per run on a shared colour scale, grouped bars per family (the builder its spec names,
    ``overlay``; the statistics' series on one axis without one). Each item is ``{"svg", "wide"}`` (wide:
    the figure takes the page's full width)."""
    have = [(i, run) for i, run in enumerate(runs) if run.has(sid)]
    if not have:
        return []
    spec = experiments()[sid]
    figs = resolve(spec.overlay)(sid, have) if spec.overlay else generic_overlay(sid, have)
    return [{"svg": f, "wide": getattr(f, "_fn", None) is plots.heatmaps.draw} for f in figs]


def generic_overlay(sid: str, have: list[tuple[int, ReportedRun]]) -> list:
    """One figure per statistic series of the experiment, every run's on it."""
    group = experiments()[sid].group
    per_run = [
        (i, run, {n: st for n, st in S.statistics(run).items() if st.series and n.startswith(f"{group}.")})
        for i, run in have
    ]
    out = []
    for name in dict.fromkeys(n for _, _, st in per_run for n in st):
        series = [
            {"name": _name(run), "x": st[name].series["x"], "y": st[name].series["y"], "color": run_color(i)}
            for i, run, st in per_run
            if name in st
        ]
        ser = next(st[name].series for _, _, st in per_run if name in st)
        out.append(plots.lines(series, ser["xlabel"], ser["ylabel"], name))
    return out


def _band(ests) -> dict:
    """Values and interval ends of a list of Estimates (None where undefined), for bars and bands."""
    ests = list(ests)
    return {
        "values": [finite(e.value) if e else None for e in ests],
        "lo": [finite(e.lo) if e else None for e in ests],
        "hi": [finite(e.hi) if e else None for e in ests],
    }


def _nums(xs) -> list[float | None]:
    return [finite(x) for x in xs]


def clean_overlay(sid: str, have: list[tuple[int, ReportedRun]]) -> list:
    fams = _families(f.family for _, run in have for f in run.typed("clean").families)
    out = []
    for field, ylabel, title in (
        ("top1_accuracy", "top-1 accuracy", "clean top-1 accuracy per family (95% CI)"),
        ("target_prob", "target probability", "clean target-token probability (95% CI)"),
    ):
        series = []
        for i, run in have:
            by = {f.family: getattr(f, field) for f in run.typed("clean").families}
            series.append({"name": _name(run), "color": run_color(i), **_band(by.get(f) for f in fams)})
        out.append(plots.bars(fams, series, ylabel, title, ylim=(0, 1.05)))
    return out


def sweeps_overlay(sid: str, have: list[tuple[int, ReportedRun]]) -> list:
    out = []
    for target in dict.fromkeys(s.target for _, run in have for s in run.typed(sid).sweeps):
        modes = list(dict.fromkeys(s.mode for _, run in have for s in run.typed(sid).sweeps if s.target == target))
        panels = []
        for _, run in have:
            r = run.typed(sid)
            by = {s.mode: s for s in r.sweeps if s.target == target}
            for mode in modes:
                s = by.get(mode)
                panels.append(
                    {
                        "title": f"{run.label.upper()} · {target} / {mode}",
                        "z": [_nums(s.kl[f]) for f in r.families] if s else None,
                        "x": [f"L{l}" for l in s.layers] if s else [""],
                        "y": r.families if s else [""],
                    }
                )
        # a row per run, a column per mode; with one mode the runs sit side by side instead
        out.append(
            plots.heatmaps(
                panels,
                "layer (axis spans each model's depth)",
                "family",
                "mean KL (nats)",
                ncols=len(modes) if len(modes) > 1 else len(have),
                panel_w=3.6,
            )
        )
    yscale = "log" if sid == "mlp_ablation" else "linear"
    series, modes = [], []
    for i, run in have:
        primary = primary_sweep(run.typed(sid))
        series.append(
            {
                "name": f"{_name(run)} ({primary.target}/{primary.mode})",
                "x": _depths(run, primary.layers),
                "y": _nums(primary.family_mean_kl),
                "color": run_color(i),
            }
        )
        for s in run.typed(sid).sweeps:
            if s.target == primary.target:
                modes.append(
                    {
                        "name": f"{run.label.upper()} {s.mode}",
                        "x": _depths(run, s.layers),
                        "y": _nums(s.family_mean_kl),
                        "color": run_color(i),
                        "style": {"zero": "-", "mean": "--", "resample": ":"}.get(s.mode, "-."),
                        "lw": 1.1,
                    }
                )
    out.append(
        plots.lines(
            series,
            DEPTH,
            "mean KL across families (nats)",
            "primary sweep on relative depth",
            xlim=XLIM,
            yscale=yscale,
            width=6.0,
        )
    )
    out.append(
        plots.lines(
            modes,
            DEPTH,
            "mean KL across families (nats)",
            "every mode (line style = mode)",
            xlim=XLIM,
            legend_out=True,
            markers=False,
            width=6.0,
            yscale=yscale,
        )
    )
    return out


def heads_overlay(sid: str, have: list[tuple[int, ReportedRun]]) -> list:
    fams = _families(f for _, run in have for f in run.typed(sid).families)
    panels, series = [], []
    for i, run in have:
        r = run.typed(sid)
        for f in fams:
            panels.append(
                {
                    "title": f"{run.label.upper()} · {f}",
                    "z": r.kl.get(f),
                    "x": [str(h) for h in range(r.n_heads)],
                    "y": [f"L{l}" for l in r.layers],
                }
            )
        grids = [np.asarray(plots.matrix(g)) for g in r.kl.values()]
        per_layer = np.nanmax(np.stack(grids), axis=(0, 2)) if grids else []
        series.append({"name": _name(run), "x": _depths(run, r.layers), "y": list(per_layer), "color": run_color(i)})
    return [
        plots.heatmaps(panels, "head", "layer", "mean KL (nats)", ncols=min(len(fams), 8), panel_w=1.7, log=True),
        plots.lines(
            series, DEPTH, "strongest head KL (nats)", "strongest head per layer (any family)", xlim=XLIM, yscale="log"
        ),
    ]


def steering_overlay(sid: str, have: list[tuple[int, ReportedRun]]) -> list:
    series = [
        {
            "name": _name(run),
            "x": _depths(run, run.typed(sid).layers),
            "y": [float(np.nanmax(plots.arr(b))) for b in run.typed(sid).boost],
            "color": run_color(i),
        }
        for i, run in have
    ]
    return [
        plots.lines(
            series,
            DEPTH,
            "best boost over strengths",
            "steering: best target-prob boost per layer",
            xlim=XLIM,
            hlines=[(0.0, "")],
        )
    ]


def knockout_overlay(sid: str, have: list[tuple[int, ReportedRun]]) -> list:
    series = [
        {
            "name": _name(run),
            "x": _depths(run, [k.layer for k in run.typed(sid).layers]),
            "y": _nums(k.selectivity for k in run.typed(sid).layers),
            "color": run_color(i),
        }
        for i, run in have
    ]
    return [
        plots.lines(
            series,
            DEPTH,
            "selectivity",
            "knockout selectivity per layer",
            xlim=XLIM,
            yscale="symlog",
            hlines=[(1.0, "1×"), (0.0, "")],
        )
    ]


def lora_overlay(sid: str, have: list[tuple[int, ReportedRun]]) -> list:
    series = [
        {
            "name": _name(run),
            "x": list(range(1, len(run.typed(sid).loss_curve) + 1)),
            "y": _nums(run.typed(sid).loss_curve),
            "color": run_color(i),
        }
        for i, run in have
    ]
    fams = _families(f for _, run in have for f in run.typed(sid).kl_per_family)
    bars = [
        {"name": _name(run), "color": run_color(i), **_band(run.typed(sid).kl_per_family.get(f) for f in fams)}
        for i, run in have
    ]
    return [
        plots.lines(series, "step", "loss", "LoRA loss curves", yscale="log", markers=False),
        plots.bars(fams, bars, "KL (nats)", "base → trained KL per family (95% CI)"),
    ]


def transfer_overlay(sid: str, have: list[tuple[int, ReportedRun]]) -> list:
    series = []
    for i, run in have:
        r = run.typed(sid)
        band = _band(r.mean_recovery)
        series.append(
            {
                "name": _name(run),
                "x": _depths(run, r.layers),
                "y": band["values"],
                "lo": band["lo"],
                "hi": band["hi"],
                "color": run_color(i),
            }
        )
    return [plots.lines(series, DEPTH, "mean KL recovery", "transfer recovery per layer (95% CI)", xlim=XLIM)]


def adapter_overlay(sid: str, have: list[tuple[int, ReportedRun]]) -> list:
    series, groups = [], []
    for i, run in have:
        r = run.typed(sid)
        band = _band(r.kl)
        series.append(
            {
                "name": _name(run),
                "x": _depths(run, r.layers),
                "y": band["values"],
                "lo": band["lo"],
                "hi": band["hi"],
                "color": run_color(i),
            }
        )
        groups.append(
            {
                "name": f"{_name(run)} (r = {_r(finite(r.pearson))})",
                "x": _nums(r.norm),
                "y": band["values"],
                "color": run_color(i),
            }
        )
    return [
        plots.lines(series, DEPTH, "KL when disabled (nats)", "adapter ablation per layer", xlim=XLIM),
        plots.scatter(groups, "adapter weight norm", "KL when disabled (nats)", "norm vs effect"),
    ]


def efficiency_overlay(sid: str, have: list[tuple[int, ReportedRun]]) -> list:
    series, exits = [], []
    for i, run in have:
        r = run.typed(sid)
        series.append(
            {
                "name": _name(run),
                "x": _depths(run, range(len(r.single_skip_kl))),
                "y": _nums(r.single_skip_kl),
                "color": run_color(i),
            }
        )
        exits.append(
            {
                "name": _name(run),
                "x": _depths(run, [e.layer for e in r.exits]),
                "y": _nums(e.argmax_match.value for e in r.exits),
                "color": run_color(i),
            }
        )
    return [
        plots.lines(series, DEPTH, "KL (nats)", "skipping a single layer", xlim=XLIM),
        plots.lines(exits, DEPTH, "argmax match", "early exit: argmax match", xlim=XLIM),
    ]


def _families(names) -> list[str]:
    """Unique family names in the canonical order of ``atlas_core.tasks.FAMILIES``."""
    from atlas_core.tasks import FAMILIES

    names = list(dict.fromkeys(names))
    return sorted(names, key=lambda f: (FAMILIES.index(f) if f in FAMILIES else len(FAMILIES), f))


def _r(v: Any) -> str:
    return "n/a" if v is None else f"{v:.3g}"
