"""The sections of the LoRA experiments: training, cross-model transfer, adapter ablation."""

from __future__ import annotations

import numpy as np

from atlas_core.report import plots
from atlas_core.report.data import ReportedRun, defined
from atlas_core.report.sections.common import L, TOP_K, UNFIT_ROWS, depth_cmap, interval


def lora(run: ReportedRun) -> dict | None:
    if not run.has("lora_training"):
        return None
    r = run.typed("lora_training")
    curve = r.loss_curve
    steps = list(range(1, len(curve) + 1))
    series = [{"name": "training loss (per step)", "x": steps, "y": curve, "lw": 0.8, "color": "#9ab8d8"}]
    k = max(1, len(curve) // 15)
    if k > 1:  # batch size 1 makes the per-step loss jumpy; a running geometric mean shows the trend
        logs = np.log(np.clip(plots.arr(curve), 1e-12, None))
        smooth = np.exp(np.convolve(logs, np.ones(k) / k, mode="valid"))
        series.append(
            {
                "name": f"running geometric mean ({k} steps)",
                "x": steps[k - 1 :],
                "y": list(smooth),
                "lw": 2.0,
                "color": plots.RUN_COLORS[0],
            }
        )
    loss = plots.lines(
        series,
        "step",
        "loss",
        "LoRA loss curve",
        yscale="log",
        hlines=[(r.target_loss, "target loss")],
        markers=False,
        width=5.0,
    )
    fams = list(r.kl_per_family)
    order = sorted(fams, key=lambda f: -(r.kl_per_family[f].value if defined(r.kl_per_family[f].value) else 0))
    klbar = plots.bars(
        order,
        [
            {
                "name": run.name,
                **interval([r.kl_per_family[f] for f in order], "values"),
                "color": plots.RUN_COLORS[3],
            }
        ],
        "KL (nats)",
        "base → trained KL per family (95% CI)",
    )
    params = [
        ("rank", run.rnum("lora_training", "rank")),
        ("alpha", run.rnum("lora_training", "alpha")),
        ("targets", ", ".join(r.targets)),
        ("batch size", run.rnum("lora_training", "batch_size")),
        ("learning rate", run.rnum("lora_training", "learning_rate")),
        ("steps", run.rnum("lora_training", "steps")),
        ("final loss", run.rnum("lora_training", "final_loss")),
        ("target loss", run.rnum("lora_training", "target_loss")),
        ("converged", "yes" if r.converged else "no"),
        ("train seconds", run.rnum("lora_training", "train_seconds")),
        ("seed", run.rnum("lora_training", "seed")),
        ("adapter", r.adapter_dir),
    ]
    rows = [{"family": f, "kl": run.est("lora_training", "kl_per_family", f)} for f in order]
    above = r.above_target
    unfit = (
        None
        if above is None
        else {
            "n": len(above),
            "rows": [
                {
                    "family": a["family"],
                    "prompt": a["prompt"],
                    "target": a["target"],
                    "loss": run.rnum("lora_training", "above_target", j, "loss"),
                }
                for j, a in enumerate(above[:UNFIT_ROWS])
            ],
        }
    )
    return {
        "plots": [loss, klbar],
        "params": params,
        "rows": rows,
        "converged": r.converged,
        "unfit": unfit,
        "seeds": run.extra_seeds("lora_training"),
    }


def transfer(run: ReportedRun) -> dict | None:
    if not run.has("transfer"):
        return None
    r = run.typed("transfer")
    layers, fams = r.layers, r.families
    series = [
        {"name": f, "x": layers, "y": r.recovery[f], "lw": 0.9, "color": c, "style": "-"}
        for f, c in zip(fams, depth_cmap(len(fams)))
    ]
    series.append(
        {
            "name": "mean (95% CI)",
            "x": layers,
            **interval(r.mean_recovery),
            "lw": 2.4,
            "color": plots.RUN_COLORS[1],
        }
    )
    spans = [(min(r.zone) - 0.5, max(r.zone) + 0.5, f"zone (≥ {r.zone_threshold:g})")] if r.zone else []
    plot = plots.lines(
        series,
        "layer patched",
        "KL recovery (1 = trained output restored)",
        "transfer recovery per layer",
        hlines=[(r.zone_threshold, "")],
        vspans=spans,
        legend_out=True,
        width=6.4,
    )
    top = []
    for i, layer in enumerate(r.top_layers[:TOP_K]):
        j = layers.index(layer)
        top.append(
            {
                "layer": run.rnum("transfer", "top_layers", i),
                "depth": run.depth_num(layer),
                "rec": run.est("transfer", "mean_recovery", j, kind="pct"),
            }
        )
    base = [{"family": f, "kl": run.rnum("transfer", "base_kl", f)} for f in fams if f in r.base_kl]
    zone = [run.rnum("transfer", "zone", i) for i in range(len(r.zone))]
    zd = run.depth_num(min(r.zone)) if r.zone else None
    return {
        "plot": plot,
        "top": top,
        "base": base,
        "zone": zone,
        "zone_depth": zd,
        "threshold": run.rnum("transfer", "zone_threshold"),
        "seeds": run.extra_seeds("transfer"),
    }


def adapter(run: ReportedRun) -> dict | None:
    if not run.has("adapter_ablation"):
        return None
    r = run.typed("adapter_ablation")
    layers = r.layers
    kl = [e.value for e in r.kl]
    top = set(r.top_layers[:TOP_K])  # labelling every point piles the weak layers' labels on each other
    sc = plots.scatter(
        [{"name": run.name, "x": r.norm, "y": kl, "labels": [L(l) if l in top else "" for l in layers]}],
        "adapter weight norm",
        "KL when disabled (nats)",
        f"norm vs effect (Pearson r = {r.pearson:.3g})" if defined(r.pearson) else "norm vs effect",
    )
    per = plots.lines(
        [
            {
                "name": "KL when disabled",
                "x": layers,
                "y": kl,
                "lo": [e.lo for e in r.kl],
                "hi": [e.hi for e in r.kl],
            }
        ],
        "layer",
        "KL (nats)",
        "adapter ablation per layer",
        width=5.0,
    )
    rows = [
        {
            "layer": run.rnum("adapter_ablation", "layers", j),
            "depth": run.depth_num(l),
            "kl": run.est("adapter_ablation", "kl", j),
            "norm": run.rnum("adapter_ablation", "norm", j),
            "top": l in top,
        }
        for j, l in enumerate(layers)
    ]
    ci = r.pearson_ci or [None, None]
    return {
        "plots": [sc, per],
        "rows": rows,
        "pearson": run.rnum("adapter_ablation", "pearson"),
        "ci": [run.rnum("adapter_ablation", "pearson_ci", i) for i in range(len(ci))],
        "top": [run.rnum("adapter_ablation", "top_layers", i) for i in range(min(TOP_K, len(r.top_layers)))],
        "seeds": run.extra_seeds("adapter_ablation"),
    }
