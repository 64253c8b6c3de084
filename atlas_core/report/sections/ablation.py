"""The sections of the ablation experiments: the clean baseline, layer and MLP ablation sweeps, head ablation."""

from __future__ import annotations

import numpy as np

from atlas_core.experiments.head_ablation import HeadAblationResult
from atlas_core.experiments.layer_ablation import LayerAblationResult
from atlas_core.experiments.mlp_ablation import MLPAblationResult
from atlas_core.metrics import is_tie
from atlas_core.report import plots
from atlas_core.report.data import ReportedRun, defined, derived
from atlas_core.report.sections.common import L, TOP_K, depth_cmap, interval


def clean(run: ReportedRun) -> dict | None:
    if not run.has("clean"):
        return None
    r = run.typed("clean")
    fams = [f.family for f in r.families]
    rows = [
        {
            "family": f.family,
            "n": run.rnum("clean", "families", i, "n"),
            "acc": run.est("clean", "families", i, "top1_accuracy", kind="pct"),
            "prob": run.est("clean", "families", i, "target_prob"),
        }
        for i, f in enumerate(r.families)
    ]
    acc = [f.top1_accuracy for f in r.families]
    prob = [f.target_prob for f in r.families]
    plot_acc = plots.bars(
        fams,
        [
            {
                "name": run.name,
                **interval(acc, "values"),
            }
        ],
        "top-1 accuracy",
        "clean top-1 accuracy per family (95% CI)",
        ylim=(0, 1.05),
    )
    plot_prob = plots.bars(
        fams,
        [
            {
                "name": run.name,
                **interval(prob, "values"),
                "color": plots.RUN_COLORS[2],
            }
        ],
        "target probability",
        "clean target-token probability (95% CI)",
        ylim=(0, 1.05),
    )
    prompts = [
        {
            "family": p.family,
            "prompt": p.prompt,
            "target": p.target,
            "predicted": p.predicted,
            "prob": run.rnum("clean", "prompts", i, "target_prob"),
            "correct": p.correct,
        }
        for i, p in enumerate(r.prompts)
    ]
    return {
        "rows": rows,
        "overall": run.est("clean", "overall_accuracy", kind="pct"),
        "plots": [plot_acc, plot_prob],
        "prompts": prompts,
    }


def sweep_index(r: LayerAblationResult | MLPAblationResult) -> int:
    keys = [f"{s.target}/{s.mode}" for s in r.sweeps]
    return keys.index(r.primary) if r.primary in keys else 0


def sweeps(run: ReportedRun, key: str) -> dict | None:
    """Layer or MLP ablation: heatmaps (layer x family) per target with the modes side by side on one
    colour scale, mean-KL-per-layer curves of every sweep, the top layers of the primary sweep."""
    if not run.has(key):
        return None
    r = run.typed(key)
    fams = r.families
    p = sweep_index(r)
    heat = []
    for target in dict.fromkeys(s.target for s in r.sweeps):
        idx = [i for i, s in enumerate(r.sweeps) if s.target == target]
        panels = [
            {
                "title": f"{target} / {r.sweeps[i].mode}",
                "z": [r.sweeps[i].kl[f] for f in fams],
                "x": [L(l) for l in r.sweeps[i].layers],
                "y": fams,
            }
            for i in idx
        ]
        heat.append(
            {
                "target": target,
                "modes": [r.sweeps[i].mode for i in idx],
                "svg": plots.heatmaps(panels, "layer", "family", "mean KL (nats)", panel_w=3.4),
            }
        )
    cols = depth_cmap(len(r.sweeps))
    curves = plots.lines(
        [
            {
                "name": f"{s.target}/{s.mode}" + (" (primary)" if i == p else ""),
                "x": s.layers,
                "y": s.family_mean_kl,
                "lw": 2.4 if i == p else 1.1,
                "color": plots.RUN_COLORS[0] if i == p else cols[i],
                "style": "-" if s.target == r.sweeps[p].target else "--",
            }
            for i, s in enumerate(r.sweeps)
        ],
        "layer",
        "mean KL across families (nats)",
        "mean KL per layer, every sweep",
        yscale="log" if key == "mlp_ablation" else "linear",
        legend_out=True,
        width=6.4,
    )
    summary = []
    for i, s in enumerate(r.sweeps):
        j = s.layers.index(s.ranking[0]) if s.ranking and s.ranking[0] in s.layers else None
        finite = [v for v in s.family_mean_kl if defined(v)]
        lo_j = int(np.argmin(finite)) if finite else None
        summary.append(
            {
                "sweep": f"{s.target}/{s.mode}",
                "primary": i == p,
                "top": run.rnum(key, "sweeps", i, "ranking", 0) if s.ranking else None,
                "depth": run.depth_num(s.ranking[0]) if s.ranking else None,
                "top_kl": run.rnum(key, "sweeps", i, "family_mean_kl", j) if j is not None else None,
                "min_layer": run.rnum(key, "sweeps", i, "layers", lo_j) if lo_j is not None else None,
                "min_kl": run.rnum(key, "sweeps", i, "family_mean_kl", lo_j) if lo_j is not None else None,
                "tie": is_tie(s.family_mean_kl),
            }
        )
    s = r.sweeps[p]
    top = []
    for rank, layer in enumerate(s.ranking[:TOP_K]):
        j = s.layers.index(layer)
        top.append(
            {
                "rank": rank + 1,
                "layer": run.rnum(key, "sweeps", p, "ranking", rank),
                "depth": run.depth_num(layer),
                "fmkl": run.rnum(key, "sweeps", p, "family_mean_kl", j),
                "mkl": run.est(key, "sweeps", p, "mean_kl", j),
                "argmax": run.rnum(key, "sweeps", p, "argmax_match", j, kind="pct"),
            }
        )
    full = [
        {
            "layer": run.rnum(key, "sweeps", p, "layers", j),
            "cells": [run.rnum(key, "sweeps", p, "kl", f, j) for f in fams],
            "fmkl": run.rnum(key, "sweeps", p, "family_mean_kl", j),
        }
        for j in range(len(s.layers))
    ]
    return {
        "primary": r.primary,
        "families": fams,
        "heat": heat,
        "curves": curves,
        "summary": summary,
        "top": top,
        "full": full,
        "notes": r.notes,
        "tie": summary[p]["tie"],
    }


def heads(run: ReportedRun) -> dict | None:
    if not run.has("head_ablation"):
        return None
    r = run.typed("head_ablation")
    fams = r.families
    panels = [
        {"title": f, "z": r.kl[f], "x": [str(h) for h in range(r.n_heads)], "y": [L(l) for l in r.layers]} for f in fams
    ]
    ncols = min(4, len(fams)) or 1
    grid = plots.heatmaps(
        panels,
        "head",
        "layer",
        "mean KL (nats)",
        ncols=ncols,
        panel_w=2.5,
        panel_h=min(3.0, max(1.5, 0.1 * len(r.layers) + 1.0)),
        log=True,
    )
    top = [
        {
            "family": t.family,
            "layer": run.rnum("head_ablation", "top", i, "layer"),
            "head": run.rnum("head_ablation", "top", i, "head"),
            "kl": run.rnum("head_ablation", "top", i, "kl"),
            "depth": run.depth_num(t.layer),
        }
        for i, t in enumerate(r.top[:10])
    ]
    mh = r.max_head
    layer_kl = _max_layer_kl(run)
    gap = None
    if layer_kl is not None and defined(layer_kl.value) and layer_kl.value and defined(mh.kl) and mh.kl:
        gap = derived(layer_kl.value / mh.kl, "strongest layer KL / max_head.kl", kind="x", run=run.label)
    return {
        "grid": grid,
        "top": top,
        "mode": r.mode,
        "layers": r.layers,
        "n_heads": r.n_heads,
        "max": {
            "family": mh.family,
            "layer": run.rnum("head_ablation", "max_head", "layer"),
            "head": run.rnum("head_ablation", "max_head", "head"),
            "kl": run.rnum("head_ablation", "max_head", "kl"),
        },
        "max_layer_kl": layer_kl,
        "gap": gap,
        "screen": _screen(r),
    }


def _screen(r: HeadAblationResult) -> dict | None:
    """A screened head ablation's verification (``atlas run --screen atp``), or None for the exhaustive sweep."""
    sc = r.screen
    if not sc:
        return None
    return {
        "method": sc.method,
        "k": sc.k,
        "verified": ", ".join(f"L{x}" for x in sorted(sc.verified)),
        "n": len(sc.verified),
        "rounds": sc.rounds,
        "margin": f"{sc.margin:.3g}",
    }


def _max_layer_kl(run: ReportedRun):
    """The strongest whole-layer KL (the primary sweep of this run's layer ablation), or None."""
    if not run.has("layer_ablation"):
        return None
    r = run.typed("layer_ablation")
    p = sweep_index(r)
    fmk = r.sweeps[p].family_mean_kl
    vals = [v for v in fmk if defined(v)]
    return run.rnum("layer_ablation", "sweeps", p, "family_mean_kl", fmk.index(max(vals))) if vals else None


def layer_sweeps(run: ReportedRun) -> dict | None:
    return sweeps(run, "layer_ablation")


def mlp_sweeps(run: ReportedRun) -> dict | None:
    return sweeps(run, "mlp_ablation")
