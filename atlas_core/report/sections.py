"""The sections of one run's atlas: each builder turns a stored result into what the template shows
(tables of :class:`~atlas_core.report.data.Num` and inline SVG plots), or ``None`` when the run does not
hold that experiment (the page then says "not run")."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
from matplotlib import colormaps

from atlas_core.metrics import is_tie
from atlas_core.report import plots
from atlas_core.report.data import Est, Run, derived
from atlas_core.spec import declaration, experiments, hypotheses, resolve


def sections() -> tuple[tuple[str, str | None, str, str], ...]:
    """(section id, experiment key, title, what it shows) of a run's page: the model card, one section
    per experiment (from its spec, in run order), the hypotheses."""
    exps = experiments().values()
    hids = list(hypotheses())
    span = f"{hids[0]}–{hids[-1]}" if hids else "the hypotheses"
    return (
        ("model", None, "Model card", "the model, its weights, the run's profile, versions and wall times"),
        *((e.name, e.name, e.title, e.about) for e in exps),
        ("hypotheses", None, "Hypotheses", f"{span}: the evidence, and the verdict where two models are compared"),
    )


def hypothesis_table() -> tuple[tuple[str, str, str, str], ...]:
    """(id, wording, the source study's published status (its data file), marker) of every hypothesis."""
    from atlas_core.report.study import load_study

    status = load_study().paper.get("status", {})
    return tuple((h.id, h.text, status.get(h.id, "—"), h.marker) for h in hypotheses().values())


def macro(sid: str) -> str:
    """The template macro that draws section ``sid`` (``_macros.html``)."""
    spec = experiments().get(sid)
    return "model" if sid == "model" else (spec.macro if spec and spec.section else "generic")


def builder(key: str) -> Callable[[Run], dict | None]:
    """The section builder an experiment's spec names (the generic statistics section without one)."""
    spec = experiments()[key]
    return resolve(spec.section) if spec.section else (lambda run: generic(run, key))


TOP_K = 5
UNFIT_ROWS = 10  # LoRA pairs above the target loss listed (worst first)


def L(layer: Any) -> str:
    return f"L{layer}"


def _depth_cmap(n: int) -> list[str]:
    cmap = colormaps["viridis"]
    return [_hex(cmap(0.9 * i / max(n - 1, 1))) for i in range(n)]


def _hex(rgba) -> str:
    return "#" + "".join(f"{int(round(c * 255)):02x}" for c in rgba[:3])


# --------------------------------------------------------------------------------------------------
def model_card(run: Run) -> dict:
    m = run.model
    man = run.manifest
    src = (
        ("manifest", ("model",))
        if man.get("model")
        else next(
            ((k, ("provenance", "model")) for k, d in run.docs.items() if d.get("provenance", {}).get("model")), None
        )
    )
    facts = []
    for k in (
        "architecture",
        "n_layers",
        "n_heads",
        "n_kv_heads",
        "head_dim",
        "d_model",
        "vocab_size",
        "dtype",
        "device",
        "source",
        "load_seconds",
    ):
        if k not in m:
            continue
        numeric = isinstance(m[k], (int, float)) and not isinstance(m[k], bool)
        facts.append((k, run.num(src[0], *src[1], k) if numeric and src else m[k]))
    walls, total = [], 0.0
    for key, info in (man.get("experiments") or {}).items():
        walls.append((key, run.num("manifest", "experiments", key, "wall_seconds"), info.get("finished", "")))
        total += float(info.get("wall_seconds") or 0.0)
    if not walls:  # no manifest: fall back on each record's provenance
        for key, doc in run.docs.items():
            if "wall_seconds" in doc.get("provenance", {}):
                walls.append((key, run.num(key, "provenance", "wall_seconds"), doc["provenance"].get("finished", "")))
                total += float(doc["provenance"]["wall_seconds"] or 0.0)
    work = []
    for key, doc in run.docs.items():
        w = doc.get("provenance", {}).get("work")
        if not w:
            continue
        base = (key, "provenance", "work")
        work.append(
            {
                "key": key,
                "gflop": derived(round(w["flop"] / 1e9, 3), "provenance.work.flop / 1e9", run=run.label),
                "rate": run.num(*base, "gflops_wall"),
                "forward_rate": run.num(*base, "gflops_forward"),
                "peak": run.num(*base, "peak_gflops") if "peak_gflops" in w else None,
                "fraction": run.num(*base, "peak_fraction_wall", kind="pct") if "peak_fraction_wall" in w else None,
                "padding": derived(
                    round(w["executed_flop"] / w["flop"], 3) if w["flop"] else None,
                    "executed_flop / flop",
                    run=run.label,
                ),
            }
        )
    profile = man.get("profile") or {}
    prof = [(k, ", ".join(map(str, v)) if isinstance(v, list) else v) for k, v in profile.items() if k != "name"]
    return {
        "name": run.name,
        "facts": facts,
        "sha": m.get("weights_sha256", "—"),
        "path": m.get("path"),
        "profile": run.profile or "—",
        "profile_items": prof,
        "versions": sorted((man.get("versions") or {}).items()),
        "walls": walls,
        "work": work,
        "total": derived(round(total, 3), "sum of the experiments' wall_seconds", run=run.label),
        "created": man.get("created", ""),
        "updated": man.get("updated", ""),
        "root": str(run.root),
        "families": list((man.get("families") or {}).keys()),
    }


def clean(run: Run) -> dict | None:
    if not run.has("clean"):
        return None
    r = run.result("clean")
    fams = [f["family"] for f in r["families"]]
    rows = [
        {
            "family": f["family"],
            "n": run.rnum("clean", "families", i, "n"),
            "acc": run.est("clean", "families", i, "top1_accuracy", kind="pct"),
            "prob": run.est("clean", "families", i, "target_prob"),
        }
        for i, f in enumerate(r["families"])
    ]
    acc = [f["top1_accuracy"] for f in r["families"]]
    prob = [f["target_prob"] for f in r["families"]]
    plot_acc = plots.bars(
        fams,
        [
            {
                "name": run.name,
                "values": [a["value"] for a in acc],
                "lo": [a["lo"] for a in acc],
                "hi": [a["hi"] for a in acc],
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
                "values": [a["value"] for a in prob],
                "lo": [a["lo"] for a in prob],
                "hi": [a["hi"] for a in prob],
                "color": plots.RUN_COLORS[2],
            }
        ],
        "target probability",
        "clean target-token probability (95% CI)",
        ylim=(0, 1.05),
    )
    prompts = [
        {
            "family": p["family"],
            "prompt": p["prompt"],
            "target": p["target"],
            "predicted": p["predicted"],
            "prob": run.rnum("clean", "prompts", i, "target_prob"),
            "correct": p["correct"],
        }
        for i, p in enumerate(r["prompts"])
    ]
    return {
        "rows": rows,
        "overall": run.est("clean", "overall_accuracy", kind="pct"),
        "plots": [plot_acc, plot_prob],
        "prompts": prompts,
    }


def _sweep_index(r: dict) -> int:
    keys = [f"{s['target']}/{s['mode']}" for s in r["sweeps"]]
    return keys.index(r.get("primary")) if r.get("primary") in keys else 0


def sweeps(run: Run, key: str) -> dict | None:
    """Layer or MLP ablation: heatmaps (layer x family) per target with the modes side by side on one
    colour scale, mean-KL-per-layer curves of every sweep, the top layers of the primary sweep."""
    if not run.has(key):
        return None
    r = run.result(key)
    fams = r["families"]
    p = _sweep_index(r)
    heat = []
    for target in dict.fromkeys(s["target"] for s in r["sweeps"]):
        idx = [i for i, s in enumerate(r["sweeps"]) if s["target"] == target]
        panels = [
            {
                "title": f"{target} / {r['sweeps'][i]['mode']}",
                "z": [r["sweeps"][i]["kl"][f] for f in fams],
                "x": [L(l) for l in r["sweeps"][i]["layers"]],
                "y": fams,
            }
            for i in idx
        ]
        heat.append(
            {
                "target": target,
                "modes": [r["sweeps"][i]["mode"] for i in idx],
                "svg": plots.heatmaps(panels, "layer", "family", "mean KL (nats)", panel_w=3.4),
            }
        )
    cols = _depth_cmap(len(r["sweeps"]))
    curves = plots.lines(
        [
            {
                "name": f"{s['target']}/{s['mode']}" + (" (primary)" if i == p else ""),
                "x": s["layers"],
                "y": s["family_mean_kl"],
                "lw": 2.4 if i == p else 1.1,
                "color": plots.RUN_COLORS[0] if i == p else cols[i],
                "style": "-" if s["target"] == r["sweeps"][p]["target"] else "--",
            }
            for i, s in enumerate(r["sweeps"])
        ],
        "layer",
        "mean KL across families (nats)",
        "mean KL per layer, every sweep",
        yscale="log" if key == "mlp_ablation" else "linear",
        legend_out=True,
        width=6.4,
    )
    summary = []
    for i, s in enumerate(r["sweeps"]):
        j = s["layers"].index(s["ranking"][0]) if s["ranking"] and s["ranking"][0] in s["layers"] else None
        finite = [v for v in s["family_mean_kl"] if v is not None]
        lo_j = int(np.argmin(finite)) if finite else None
        summary.append(
            {
                "sweep": f"{s['target']}/{s['mode']}",
                "primary": i == p,
                "top": run.rnum(key, "sweeps", i, "ranking", 0) if s["ranking"] else None,
                "depth": run.depth_num(s["ranking"][0]) if s["ranking"] else None,
                "top_kl": run.rnum(key, "sweeps", i, "family_mean_kl", j) if j is not None else None,
                "min_layer": run.rnum(key, "sweeps", i, "layers", lo_j) if lo_j is not None else None,
                "min_kl": run.rnum(key, "sweeps", i, "family_mean_kl", lo_j) if lo_j is not None else None,
                "tie": is_tie(s["family_mean_kl"]),
            }
        )
    s = r["sweeps"][p]
    top = []
    for rank, layer in enumerate(s["ranking"][:TOP_K]):
        j = s["layers"].index(layer)
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
        for j in range(len(s["layers"]))
    ]
    return {
        "primary": r.get("primary"),
        "families": fams,
        "heat": heat,
        "curves": curves,
        "summary": summary,
        "top": top,
        "full": full,
        "notes": r.get("notes", ""),
        "tie": summary[p]["tie"],
    }


def heads(run: Run) -> dict | None:
    if not run.has("head_ablation"):
        return None
    r = run.result("head_ablation")
    fams = r["families"]
    panels = [
        {"title": f, "z": r["kl"][f], "x": [str(h) for h in range(r["n_heads"])], "y": [L(l) for l in r["layers"]]}
        for f in fams
    ]
    ncols = min(4, len(fams)) or 1
    grid = plots.heatmaps(
        panels,
        "head",
        "layer",
        "mean KL (nats)",
        ncols=ncols,
        panel_w=2.5,
        panel_h=min(3.0, max(1.5, 0.1 * len(r["layers"]) + 1.0)),
        log=True,
    )
    top = [
        {
            "family": t["family"],
            "layer": run.rnum("head_ablation", "top", i, "layer"),
            "head": run.rnum("head_ablation", "top", i, "head"),
            "kl": run.rnum("head_ablation", "top", i, "kl"),
            "depth": run.depth_num(t["layer"]),
        }
        for i, t in enumerate(r["top"][:10])
    ]
    mh = r["max_head"]
    layer_kl = _max_layer_kl(run)
    gap = None
    if layer_kl is not None and layer_kl.value and mh.get("kl"):
        gap = derived(layer_kl.value / mh["kl"], "strongest layer KL / max_head.kl", kind="x", run=run.label)
    return {
        "grid": grid,
        "top": top,
        "mode": r["mode"],
        "layers": r["layers"],
        "n_heads": r["n_heads"],
        "max": {
            "family": mh["family"],
            "layer": run.rnum("head_ablation", "max_head", "layer"),
            "head": run.rnum("head_ablation", "max_head", "head"),
            "kl": run.rnum("head_ablation", "max_head", "kl"),
        },
        "max_layer_kl": layer_kl,
        "gap": gap,
        "screen": _screen(r),
    }


def _screen(r: dict) -> dict | None:
    """A screened head ablation's verification (``atlas run --screen atp``), or None for the exhaustive sweep."""
    sc = r.get("screen")
    if not sc:
        return None
    return {
        "method": sc["method"],
        "k": sc["k"],
        "verified": ", ".join(f"L{x}" for x in sorted(sc["verified"])),
        "n": len(sc["verified"]),
        "rounds": sc["rounds"],
        "margin": f"{sc['margin']:.3g}",
    }


def _max_layer_kl(run: Run):
    """The strongest whole-layer KL (the primary sweep of this run's layer ablation), or None."""
    if not run.has("layer_ablation"):
        return None
    r = run.result("layer_ablation")
    p = _sweep_index(r)
    fmk = r["sweeps"][p]["family_mean_kl"]
    vals = [v for v in fmk if v is not None]
    return run.rnum("layer_ablation", "sweeps", p, "family_mean_kl", fmk.index(max(vals))) if vals else None


def steering(run: Run) -> dict | None:
    if not run.has("steering"):
        return None
    r = run.result("steering")
    layers, strengths = r["layers"], r["strengths"]
    cols = _depth_cmap(len(layers))
    many = len(layers) > 10
    dose = plots.lines(
        [
            {
                "name": None if many and j not in (0, len(layers) - 1) else L(l),
                "x": strengths,
                "y": r["target_prob"][j],
                "color": cols[j],
                "lw": 2.2 if l == r["study_layer"] else 1.1,
            }
            for j, l in enumerate(layers)
        ],
        "steering strength",
        "target probability",
        f"dose-response per layer ({r['family']}; colour = depth)",
        hlines=[(r["baseline_prob"], "clean baseline")],
        legend_out=True,
        width=5.6,
    )
    kl = plots.lines(
        [
            {
                "name": None if many and j not in (0, len(layers) - 1) else L(l),
                "x": strengths,
                "y": r["kl"][j],
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
                "z": r["boost"],
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
    bi = layers.index(r["best_layer"]) if r["best_layer"] in layers else None
    per_layer = [
        {
            "layer": run.rnum("steering", "layers", j),
            "depth": run.depth_num(l),
            "norm": run.rnum("steering", "direction_norm", j),
            "best": run.rnum("steering", "boost", j, int(np.nanargmax(plots.arr(r["boost"][j])))),
            "at": strengths[int(np.nanargmax(plots.arr(r["boost"][j])))],
        }
        for j, l in enumerate(layers)
    ]
    prompts = [
        {
            "prompt": p["prompt"],
            "target": p["target"],
            "base": run.rnum("steering", "prompts", i, "baseline_prob"),
            "best": run.rnum("steering", "prompts", i, "best_prob"),
            "strength": run.rnum("steering", "prompts", i, "best_strength"),
            "layer": run.rnum("steering", "prompts", i, "best_layer"),
        }
        for i, p in enumerate(r.get("prompts") or [])
    ]
    return {
        "family": r["family"],
        "plots": [dose, kl],
        "boost": boost,
        "per_layer": per_layer,
        "prompts": prompts,
        "baseline": run.rnum("steering", "baseline_prob"),
        "best_layer": run.rnum("steering", "best_layer"),
        "best_depth": run.depth_num(r["best_layer"]),
        "best_strength": run.rnum("steering", "best_strength"),
        "best_boost": run.est("steering", "best_boost"),
        "study_layer": run.rnum("steering", "study_layer"),
        "study_boost": run.est("steering", "study_layer_best_boost"),
        "bi": bi,
    }


def knockout(run: Run) -> dict | None:
    if not run.has("knockout"):
        return None
    r = run.result("knockout")
    ls = r["layers"]
    x = [k["layer"] for k in ls]
    sel = plots.lines(
        [{"name": "selectivity", "x": x, "y": [k["selectivity"] for k in ls]}],
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
                "y": [k["skill_drop"]["value"] for k in ls],
                "lo": [k["skill_drop"]["lo"] for k in ls],
                "hi": [k["skill_drop"]["hi"] for k in ls],
            },
            {
                "name": "non-skill drop",
                "x": x,
                "y": [k["nonskill_drop"]["value"] for k in ls],
                "lo": [k["nonskill_drop"]["lo"] for k in ls],
                "hi": [k["nonskill_drop"]["hi"] for k in ls],
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
            "depth": run.depth_num(k["layer"]),
            "sel": run.rnum("knockout", "layers", i, "selectivity"),
            "skill": run.est("knockout", "layers", i, "skill_drop"),
            "nonskill": run.est("knockout", "layers", i, "nonskill_drop"),
            "norm": run.rnum("knockout", "layers", i, "direction_norm"),
            "best": k["layer"] == r["best_layer"],
        }
        for i, k in enumerate(ls)
    ]
    return {
        "family": r["family"],
        "strength": run.rnum("knockout", "strength"),
        "plots": [sel, drops],
        "rows": rows,
        "best_layer": run.rnum("knockout", "best_layer"),
        "best_sel": run.rnum("knockout", "best_selectivity"),
        "best_depth": run.depth_num(r["best_layer"]),
    }


def lora(run: Run) -> dict | None:
    if not run.has("lora_training"):
        return None
    r = run.result("lora_training")
    curve = r["loss_curve"]
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
        hlines=[(r["target_loss"], "target loss")],
        markers=False,
        width=5.0,
    )
    fams = list(r["kl_per_family"])
    order = sorted(fams, key=lambda f: -(r["kl_per_family"][f]["value"] or 0))
    klbar = plots.bars(
        order,
        [
            {
                "name": run.name,
                "values": [r["kl_per_family"][f]["value"] for f in order],
                "lo": [r["kl_per_family"][f]["lo"] for f in order],
                "hi": [r["kl_per_family"][f]["hi"] for f in order],
                "color": plots.RUN_COLORS[3],
            }
        ],
        "KL (nats)",
        "base → trained KL per family (95% CI)",
    )
    params = [
        ("rank", run.rnum("lora_training", "rank")),
        ("alpha", run.rnum("lora_training", "alpha")),
        ("targets", ", ".join(r["targets"])),
        ("batch size", run.rnum("lora_training", "batch_size")),
        ("learning rate", run.rnum("lora_training", "learning_rate")),
        ("steps", run.rnum("lora_training", "steps")),
        ("final loss", run.rnum("lora_training", "final_loss")),
        ("target loss", run.rnum("lora_training", "target_loss")),
        ("converged", "yes" if r["converged"] else "no"),
        ("train seconds", run.rnum("lora_training", "train_seconds")),
        ("seed", run.rnum("lora_training", "seed")),
        ("adapter", r["adapter_dir"]),
    ]
    rows = [{"family": f, "kl": run.est("lora_training", "kl_per_family", f)} for f in order]
    above = r.get("above_target")  # absent from records written before it was stored
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
        "converged": r["converged"],
        "unfit": unfit,
        "seeds": run.extra_seeds("lora_training"),
    }


def transfer(run: Run) -> dict | None:
    if not run.has("transfer"):
        return None
    r = run.result("transfer")
    layers, fams = r["layers"], r["families"]
    series = [
        {"name": f, "x": layers, "y": r["recovery"][f], "lw": 0.9, "color": c, "style": "-"}
        for f, c in zip(fams, _depth_cmap(len(fams)))
    ]
    series.append(
        {
            "name": "mean (95% CI)",
            "x": layers,
            "y": [e["value"] for e in r["mean_recovery"]],
            "lo": [e["lo"] for e in r["mean_recovery"]],
            "hi": [e["hi"] for e in r["mean_recovery"]],
            "lw": 2.4,
            "color": plots.RUN_COLORS[1],
        }
    )
    spans = [(min(r["zone"]) - 0.5, max(r["zone"]) + 0.5, f"zone (≥ {r['zone_threshold']:g})")] if r["zone"] else []
    plot = plots.lines(
        series,
        "layer patched",
        "KL recovery (1 = trained output restored)",
        "transfer recovery per layer",
        hlines=[(r["zone_threshold"], "")],
        vspans=spans,
        legend_out=True,
        width=6.4,
    )
    top = []
    for i, layer in enumerate(r["top_layers"][:TOP_K]):
        j = layers.index(layer)
        top.append(
            {
                "layer": run.rnum("transfer", "top_layers", i),
                "depth": run.depth_num(layer),
                "rec": run.est("transfer", "mean_recovery", j, kind="pct"),
            }
        )
    base = [{"family": f, "kl": run.rnum("transfer", "base_kl", f)} for f in fams if f in r["base_kl"]]
    zone = [run.rnum("transfer", "zone", i) for i in range(len(r["zone"]))]
    zd = run.depth_num(min(r["zone"])) if r["zone"] else None
    return {
        "plot": plot,
        "top": top,
        "base": base,
        "zone": zone,
        "zone_depth": zd,
        "threshold": run.rnum("transfer", "zone_threshold"),
        "seeds": run.extra_seeds("transfer"),
    }


def adapter(run: Run) -> dict | None:
    if not run.has("adapter_ablation"):
        return None
    r = run.result("adapter_ablation")
    layers = r["layers"]
    kl = [e["value"] for e in r["kl"]]
    top = set(r["top_layers"][:TOP_K])  # labelling every point piles the weak layers' labels on each other
    sc = plots.scatter(
        [{"name": run.name, "x": r["norm"], "y": kl, "labels": [L(l) if l in top else "" for l in layers]}],
        "adapter weight norm",
        "KL when disabled (nats)",
        f"norm vs effect (Pearson r = {r['pearson']:.3g})" if r["pearson"] is not None else "norm vs effect",
    )
    per = plots.lines(
        [
            {
                "name": "KL when disabled",
                "x": layers,
                "y": kl,
                "lo": [e["lo"] for e in r["kl"]],
                "hi": [e["hi"] for e in r["kl"]],
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
    ci = r.get("pearson_ci") or [None, None]
    return {
        "plots": [sc, per],
        "rows": rows,
        "pearson": run.rnum("adapter_ablation", "pearson"),
        "ci": [run.rnum("adapter_ablation", "pearson_ci", i) for i in range(len(ci))],
        "top": [run.rnum("adapter_ablation", "top_layers", i) for i in range(min(TOP_K, len(r["top_layers"])))],
        "seeds": run.extra_seeds("adapter_ablation"),
    }


def efficiency(run: Run) -> dict | None:
    if not run.has("efficiency"):
        return None
    r = run.result("efficiency")
    skips = [
        {
            "name": c["name"],
            "layers": ", ".join(L(x) for x in c["layers"]),
            "kl": run.est("efficiency", "skip_configs", i, "mean_kl"),
            "top5": run.est("efficiency", "skip_configs", i, "top5_overlap", kind="pct"),
            "argmax": run.est("efficiency", "skip_configs", i, "argmax_match", kind="pct"),
        }
        for i, c in enumerate(r["skip_configs"])
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
        for i, e in enumerate(r["exits"])
    ]
    n = len(r["single_skip_kl"])
    single = plots.lines(
        [{"name": "skip one layer", "x": list(range(n)), "y": r["single_skip_kl"]}],
        "layer skipped",
        "KL (nats)",
        "skipping a single layer",
        width=5.0,
    )
    ex = r["exits"]
    exit_plot = (
        plots.lines(
            [
                {
                    "name": "mean KL",
                    "x": [e["layer"] for e in ex],
                    "y": [e["mean_kl"]["value"] for e in ex],
                    "lo": [e["mean_kl"]["lo"] for e in ex],
                    "hi": [e["mean_kl"]["hi"] for e in ex],
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
        "notes": r.get("notes", ""),
    }


# --------------------------------------------------------------------------------------------------
# finding statistics and hypotheses: computed by atlas_core.verdicts (the same numbers claims read)

EXTRA_STATS = ("clean.accuracy", "lora.final_loss")


def statistics(run: Run) -> dict:
    """The run's finding statistics (name -> verdicts.Stat), ``{}`` when the run does not say its depth."""
    return {} if run.n_layers is None else run.stats


def stat_kind(name: str) -> str:
    """The number format of statistic ``name``, from its declared unit (``StatDecl.fmt``)."""
    d = declaration(name)
    return "auto" if d is None else d.fmt


def stat_view(run: Run, name: str, stat) -> dict:
    """One statistic as Nums (derived: recomputable with ``verdicts.model_statistics``)."""
    kind = "auto" if stat.kind == "index" else stat_kind(name)
    how = f"atlas_core.verdicts.model_statistics: {name}"
    value = int(stat.value) if stat.kind in ("index", "ranking") and stat.value is not None else stat.value
    v = derived(value, how, kind=kind, run=run.label)
    est = None
    if stat.lo is not None and stat.hi is not None:
        est = Est(
            v,
            derived(stat.lo, how + " (lo)", kind=kind, run=run.label),
            derived(stat.hi, how + " (hi)", kind=kind, run=run.label),
            stat.n,
        )
    return {"name": name, "value": v, "est": est, "label": stat.label or "", "kind": stat.kind}


def hypothesis_rows(run: Run) -> list[dict]:
    stats = statistics(run)
    rows = []
    for hid, text, study, marker in hypothesis_table():
        shown = hypotheses()[hid].shown
        ev = [stat_view(run, n, stats[n]) for n in shown if n in stats and stats[n].value is not None]
        rows.append({"id": hid, "text": text, "study": study, "marker": marker, "evidence": ev})
    return rows


def layer_sweeps(run: Run) -> dict | None:
    return sweeps(run, "layer_ablation")


def mlp_sweeps(run: Run) -> dict | None:
    return sweeps(run, "mlp_ablation")


def generic(run: Run, key: str) -> dict | None:
    """The section of an experiment that names no builder: its statistics, and a plot of each series."""
    if not run.has(key):
        return None
    spec = experiments()[key]
    stats = {n: st for n, st in statistics(run).items() if spec.group and n.startswith(spec.group + ".")}
    figs = []
    for name, st in stats.items():
        ser = st.series
        if ser and ser.get("x") and any(v is not None for v in ser.get("y", [])):
            figs.append(
                plots.lines(
                    [{"name": name, "x": ser["x"], "y": ser["y"], "color": plots.RUN_COLORS[0]}],
                    ser["xlabel"],
                    ser["ylabel"],
                    name,
                )
            )
    rows = [stat_view(run, n, st) for n, st in stats.items() if st.value is not None]
    return {"stats": rows, "plots": figs, "notes": run.result(key).get("notes", "")}
