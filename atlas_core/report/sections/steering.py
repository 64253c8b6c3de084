"""The sections of the direction experiments: steering and skill knockout."""

from __future__ import annotations

import numpy as np

from atlas_core.report import plots
from atlas_core.report.data import ReportedRun
from atlas_core.report.sections.common import L, depth_cmap, interval


def steering(run: ReportedRun) -> dict | None:
    if not run.has("steering"):
        return None
    r = run.typed("steering")
    layers, strengths = r.layers, r.strengths
    cols = depth_cmap(len(layers))
    many = len(layers) > 10
    dose = plots.lines(
        [
            {
                "name": None if many and j not in (0, len(layers) - 1) else L(l),
                "x": strengths,
                "y": r.target_prob[j],
                "color": cols[j],
                "lw": 2.2 if l == r.study_layer else 1.1,
            }
            for j, l in enumerate(layers)
        ],
        "steering strength",
        "target probability",
        f"dose-response per layer ({r.family}; colour = depth)",
        hlines=[(r.baseline_prob, "clean baseline")],
        legend_out=True,
        width=5.6,
    )
    kl = plots.lines(
        [
            {
                "name": None if many and j not in (0, len(layers) - 1) else L(l),
                "x": strengths,
                "y": r.kl[j],
                "color": cols[j],
            }
            for j, l in enumerate(layers)
        ],
        "steering strength",
        "KL(clean ‖ steered) (nats)",
        "KL per layer",
        legend_out=True,
        width=5.0,
    )
    boost = plots.heatmaps(
        [
            {
                "title": "boost over clean",
                "z": r.boost,
                "x": [f"{s:g}" for s in strengths],
                "y": [L(l) for l in layers],
            }
        ],
        "strength",
        "layer",
        "target-prob boost",
        panel_w=4.2,
        panel_h=min(3.4, max(1.6, 0.12 * len(layers) + 1.0)),
        diverging=True,
    )
    bi = layers.index(r.best_layer) if r.best_layer in layers else None
    per_layer = [
        {
            "layer": run.rnum("steering", "layers", j),
            "depth": run.depth_num(l),
            "norm": run.rnum("steering", "direction_norm", j),
            "best": run.rnum("steering", "boost", j, int(np.nanargmax(plots.arr(r.boost[j])))),
            "at": strengths[int(np.nanargmax(plots.arr(r.boost[j])))],
        }
        for j, l in enumerate(layers)
    ]
    prompts = [
        {
            "prompt": p.prompt,
            "target": p.target,
            "base": run.rnum("steering", "prompts", i, "baseline_prob"),
            "best": run.rnum("steering", "prompts", i, "best_prob"),
            "strength": run.rnum("steering", "prompts", i, "best_strength"),
            "layer": run.rnum("steering", "prompts", i, "best_layer"),
        }
        for i, p in enumerate(r.prompts or [])
    ]
    return {
        "family": r.family,
        "plots": [dose, kl],
        "boost": boost,
        "per_layer": per_layer,
        "prompts": prompts,
        "baseline": run.rnum("steering", "baseline_prob"),
        "best_layer": run.rnum("steering", "best_layer"),
        "best_depth": run.depth_num(r.best_layer),
        "best_strength": run.rnum("steering", "best_strength"),
        "best_boost": run.est("steering", "best_boost"),
        "study_layer": run.rnum("steering", "study_layer"),
        "study_boost": run.est("steering", "study_layer_best_boost"),
        "bi": bi,
    }


def knockout(run: ReportedRun) -> dict | None:
    if not run.has("knockout"):
        return None
    r = run.typed("knockout")
    ls = r.layers
    x = [k.layer for k in ls]
    sel = plots.lines(
        [{"name": "selectivity", "x": x, "y": [k.selectivity for k in ls]}],
        "layer",
        "selectivity (skill drop / non-skill drop)",
        "knockout selectivity per layer",
        yscale="symlog",
        hlines=[(1.0, "1× (not selective)"), (0.0, "")],
        width=5.0,
    )
    drops = plots.lines(
        [
            {
                "name": "skill drop",
                "x": x,
                **interval([k.skill_drop for k in ls]),
            },
            {
                "name": "non-skill drop",
                "x": x,
                **interval([k.nonskill_drop for k in ls]),
                "color": plots.RUN_COLORS[1],
            },
        ],
        "layer",
        "target-probability drop",
        "drops with 95% CI",
        hlines=[(0.0, "")],
        width=5.0,
    )
    rows = [
        {
            "layer": run.rnum("knockout", "layers", i, "layer"),
            "depth": run.depth_num(k.layer),
            "sel": run.rnum("knockout", "layers", i, "selectivity"),
            "skill": run.est("knockout", "layers", i, "skill_drop"),
            "nonskill": run.est("knockout", "layers", i, "nonskill_drop"),
            "norm": run.rnum("knockout", "layers", i, "direction_norm"),
            "best": k.layer == r.best_layer,
        }
        for i, k in enumerate(ls)
    ]
    return {
        "family": r.family,
        "strength": run.rnum("knockout", "strength"),
        "plots": [sel, drops],
        "rows": rows,
        "best_layer": run.rnum("knockout", "best_layer"),
        "best_sel": run.rnum("knockout", "best_selectivity"),
        "best_depth": run.depth_num(r.best_layer),
    }
