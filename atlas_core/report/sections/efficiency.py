"""The efficiency section: layer skipping and early exit."""

from __future__ import annotations

from atlas_core.report import plots
from atlas_core.report.data import ReportedRun
from atlas_core.report.sections.common import L, interval


def efficiency(run: ReportedRun) -> dict | None:
    if not run.has("efficiency"):
        return None
    r = run.typed("efficiency")
    skips = [
        {
            "name": c.name,
            "layers": ", ".join(L(x) for x in c.layers),
            "kl": run.est("efficiency", "skip_configs", i, "mean_kl"),
            "top5": run.est("efficiency", "skip_configs", i, "top5_overlap", kind="pct"),
            "argmax": run.est("efficiency", "skip_configs", i, "argmax_match", kind="pct"),
        }
        for i, c in enumerate(r.skip_configs)
    ]
    exits = [
        {
            "layer": run.rnum("efficiency", "exits", i, "layer"),
            "skipped": run.rnum("efficiency", "exits", i, "layers_skipped"),
            "kl": run.est("efficiency", "exits", i, "mean_kl"),
            "argmax": run.est("efficiency", "exits", i, "argmax_match", kind="pct"),
            "top5": run.est("efficiency", "exits", i, "top5_overlap", kind="pct"),
            "seconds": run.rnum("efficiency", "exits", i, "seconds"),
            "speedup": run.rnum("efficiency", "exits", i, "speedup", kind="x"),
        }
        for i, e in enumerate(r.exits)
    ]
    n = len(r.single_skip_kl)
    single = plots.lines(
        [{"name": "skip one layer", "x": list(range(n)), "y": r.single_skip_kl}],
        "layer skipped",
        "KL (nats)",
        "skipping a single layer",
        width=5.0,
    )
    ex = r.exits
    exit_plot = (
        plots.lines(
            [
                {
                    "name": "mean KL",
                    "x": [e.layer for e in ex],
                    **interval([e.mean_kl for e in ex]),
                }
            ],
            "exit layer",
            "KL vs full depth (nats)",
            "early exit",
            width=5.0,
        )
        if ex
        else None
    )
    return {
        "skips": skips,
        "exits": exits,
        "plots": [p for p in (single, exit_plot) if p is not None],
        "notes": r.notes,
    }
