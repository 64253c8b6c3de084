"""Several runs side by side: per-layer curves overlaid on relative depth (layer / (n_layers - 1)), a
table of each section's finding statistics with the difference (highlighted where the two bootstrap
intervals do not overlap), the hypothesis verdicts for a pair, and each run's own section below."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from jinja2 import Environment

from atlas_core.report import plots
from atlas_core.report import sections as S
from atlas_core.report.data import Est, Run, derived
from atlas_core.spec import default_thresholds, experiments, hypotheses, resolve

DEPTH = "relative depth (layer / (n_layers − 1))"
XLIM = (-0.03, 1.03)


def _depths(run: Run, layers) -> list[float | None]:
    return [run.depth(layer) for layer in layers]


def _name(run: Run) -> str:
    return f"{run.label.upper()}: {run.name}"


def _color(i: int) -> str:
    return plots.RUN_COLORS[i % len(plots.RUN_COLORS)]


def _primary(r: dict) -> dict:
    return r["sweeps"][S._sweep_index(r)]


def overlay(sid: str, runs: list[Run]) -> list[dict]:
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


def generic_overlay(sid: str, have: list[tuple[int, Run]]) -> list:
    """One figure per statistic series of the experiment, every run's on it."""
    group = experiments()[sid].group
    per_run = [(i, run, {n: st for n, st in S.statistics(run).items() if st.series and n.startswith(f"{group}.")})
               for i, run in have]
    out = []
    for name in dict.fromkeys(n for _, _, st in per_run for n in st):
        series = [{"name": _name(run), "x": st[name].series["x"], "y": st[name].series["y"], "color": _color(i)}
                  for i, run, st in per_run if name in st]
        ser = next(st[name].series for _, _, st in per_run if name in st)
        out.append(plots.lines(series, ser["xlabel"], ser["ylabel"], name))
    return out


def clean_overlay(sid: str, have: list[tuple[int, Run]]) -> list:
    out = []
    fams = _families(f["family"] for _, run in have for f in run.result("clean")["families"])
    series = []
    for i, run in have:
        by = {f["family"]: f["top1_accuracy"] for f in run.result("clean")["families"]}
        series.append({"name": _name(run), "color": _color(i), "values": [by.get(f, {}).get("value") for f in fams],
                       "lo": [by.get(f, {}).get("lo") for f in fams], "hi": [by.get(f, {}).get("hi") for f in fams]})
    out.append(plots.bars(fams, series, "top-1 accuracy", "clean top-1 accuracy per family (95% CI)", ylim=(0, 1.05)))
    probs = []
    for i, run in have:
        by = {f["family"]: f["target_prob"] for f in run.result("clean")["families"]}
        probs.append({"name": _name(run), "color": _color(i), "values": [by.get(f, {}).get("value") for f in fams],
                      "lo": [by.get(f, {}).get("lo") for f in fams], "hi": [by.get(f, {}).get("hi") for f in fams]})
    out.append(plots.bars(fams, probs, "target probability", "clean target-token probability (95% CI)", ylim=(0, 1.05)))
    return out


def sweeps_overlay(sid: str, have: list[tuple[int, Run]]) -> list:
    out = []
    for target in dict.fromkeys(s["target"] for _, run in have for s in run.result(sid)["sweeps"]):
        modes = list(dict.fromkeys(s["mode"] for _, run in have for s in run.result(sid)["sweeps"]
                                   if s["target"] == target))
        panels = []
        for i, run in have:
            r = run.result(sid)
            by = {s["mode"]: s for s in r["sweeps"] if s["target"] == target}
            for mode in modes:
                s = by.get(mode)
                panels.append({"title": f"{run.label.upper()} · {target} / {mode}",
                               "z": [s["kl"][f] for f in r["families"]] if s else None,
                               "x": [f"L{l}" for l in s["layers"]] if s else [""], "y": r["families"] if s else [""]})
        # a row per run, a column per mode; with one mode the runs sit side by side instead
        out.append(plots.heatmaps(panels, "layer (axis spans each model's depth)", "family", "mean KL (nats)",
                                  ncols=len(modes) if len(modes) > 1 else len(have), panel_w=3.6))
    series = []
    for i, run in have:
        s = _primary(run.result(sid))
        series.append({"name": f"{_name(run)} ({s['target']}/{s['mode']})", "x": _depths(run, s["layers"]),
                       "y": s["family_mean_kl"], "color": _color(i)})
    out.append(plots.lines(series, DEPTH, "mean KL across families (nats)", "primary sweep on relative depth",
                           xlim=XLIM, yscale="log" if sid == "mlp_ablation" else "linear", width=6.0))
    modes = []
    for i, run in have:
        for s in run.result(sid)["sweeps"]:
            if s["target"] == _primary(run.result(sid))["target"]:
                modes.append({"name": f"{run.label.upper()} {s['mode']}", "x": _depths(run, s["layers"]),
                              "y": s["family_mean_kl"], "color": _color(i),
                              "style": {"zero": "-", "mean": "--", "resample": ":"}.get(s["mode"], "-."), "lw": 1.1})
    out.append(plots.lines(modes, DEPTH, "mean KL across families (nats)", "every mode (line style = mode)",
                           xlim=XLIM, legend_out=True, markers=False, width=6.0,
                           yscale="log" if sid == "mlp_ablation" else "linear"))
    return out


def heads_overlay(sid: str, have: list[tuple[int, Run]]) -> list:
    out = []
    fams = _families(f for _, run in have for f in run.result(sid)["families"])
    panels = []
    for i, run in have:
        r = run.result(sid)
        for f in fams:
            panels.append({"title": f"{run.label.upper()} · {f}", "z": r["kl"].get(f),
                           "x": [str(h) for h in range(r["n_heads"])], "y": [f"L{l}" for l in r["layers"]]})
    out.append(plots.heatmaps(panels, "head", "layer", "mean KL (nats)", ncols=min(len(fams), 8), panel_w=1.7,
                              log=True))
    series = []
    for i, run in have:
        r = run.result(sid)
        grids = [np.asarray(plots.matrix(g)) for g in r["kl"].values()]
        per_layer = np.nanmax(np.stack(grids), axis=(0, 2)) if grids else []
        series.append({"name": _name(run), "x": _depths(run, r["layers"]), "y": list(per_layer), "color": _color(i)})
    out.append(plots.lines(series, DEPTH, "strongest head KL (nats)", "strongest head per layer (any family)",
                           xlim=XLIM, yscale="log"))
    return out


def steering_overlay(sid: str, have: list[tuple[int, Run]]) -> list:
    out = []
    series = []
    for i, run in have:
        r = run.result(sid)
        series.append({"name": _name(run), "x": _depths(run, r["layers"]),
                       "y": [float(np.nanmax(plots.arr(b))) for b in r["boost"]], "color": _color(i)})
    out.append(plots.lines(series, DEPTH, "best boost over strengths", "steering: best target-prob boost per layer",
                           xlim=XLIM, hlines=[(0.0, "")]))
    return out


def knockout_overlay(sid: str, have: list[tuple[int, Run]]) -> list:
    out = []
    series = [{"name": _name(run), "x": _depths(run, [k["layer"] for k in run.result(sid)["layers"]]),
               "y": [k["selectivity"] for k in run.result(sid)["layers"]], "color": _color(i)} for i, run in have]
    out.append(plots.lines(series, DEPTH, "selectivity", "knockout selectivity per layer", xlim=XLIM,
                           yscale="symlog", hlines=[(1.0, "1×"), (0.0, "")]))
    return out


def lora_overlay(sid: str, have: list[tuple[int, Run]]) -> list:
    out = []
    series = [{"name": _name(run), "x": list(range(1, len(run.result(sid)["loss_curve"]) + 1)),
               "y": run.result(sid)["loss_curve"], "color": _color(i)} for i, run in have]
    out.append(plots.lines(series, "step", "loss", "LoRA loss curves", yscale="log", markers=False))
    fams = _families(f for _, run in have for f in run.result(sid)["kl_per_family"])
    bars = [{"name": _name(run), "color": _color(i),
             "values": [run.result(sid)["kl_per_family"].get(f, {}).get("value") for f in fams],
             "lo": [run.result(sid)["kl_per_family"].get(f, {}).get("lo") for f in fams],
             "hi": [run.result(sid)["kl_per_family"].get(f, {}).get("hi") for f in fams]} for i, run in have]
    out.append(plots.bars(fams, bars, "KL (nats)", "base → trained KL per family (95% CI)"))
    return out


def transfer_overlay(sid: str, have: list[tuple[int, Run]]) -> list:
    out = []
    series = []
    for i, run in have:
        r = run.result(sid)
        series.append({"name": _name(run), "x": _depths(run, r["layers"]), "y": [e["value"] for e in r["mean_recovery"]],
                       "lo": [e["lo"] for e in r["mean_recovery"]], "hi": [e["hi"] for e in r["mean_recovery"]],
                       "color": _color(i)})
    out.append(plots.lines(series, DEPTH, "mean KL recovery", "transfer recovery per layer (95% CI)", xlim=XLIM))
    return out


def adapter_overlay(sid: str, have: list[tuple[int, Run]]) -> list:
    out = []
    series, groups = [], []
    for i, run in have:
        r = run.result(sid)
        series.append({"name": _name(run), "x": _depths(run, r["layers"]), "y": [e["value"] for e in r["kl"]],
                       "lo": [e["lo"] for e in r["kl"]], "hi": [e["hi"] for e in r["kl"]], "color": _color(i)})
        groups.append({"name": f"{_name(run)} (r = {_r(r['pearson'])})", "x": r["norm"],
                       "y": [e["value"] for e in r["kl"]], "color": _color(i)})
    out.append(plots.lines(series, DEPTH, "KL when disabled (nats)", "adapter ablation per layer", xlim=XLIM))
    out.append(plots.scatter(groups, "adapter weight norm", "KL when disabled (nats)", "norm vs effect"))
    return out


def efficiency_overlay(sid: str, have: list[tuple[int, Run]]) -> list:
    out = []
    series, exits = [], []
    for i, run in have:
        r = run.result(sid)
        series.append({"name": _name(run), "x": _depths(run, range(len(r["single_skip_kl"]))),
                       "y": r["single_skip_kl"], "color": _color(i)})
        exits.append({"name": _name(run), "x": _depths(run, [e["layer"] for e in r["exits"]]),
                      "y": [e["argmax_match"]["value"] for e in r["exits"]], "color": _color(i)})
    out.append(plots.lines(series, DEPTH, "KL (nats)", "skipping a single layer", xlim=XLIM))
    out.append(plots.lines(exits, DEPTH, "argmax match", "early exit: argmax match", xlim=XLIM))
    return out


def _families(names) -> list[str]:
    """Unique family names in the canonical order of ``atlas_core.tasks.FAMILIES``."""
    from atlas_core.tasks import FAMILIES

    names = list(dict.fromkeys(names))
    return sorted(names, key=lambda f: (FAMILIES.index(f) if f in FAMILIES else len(FAMILIES), f))


def _r(v: Any) -> str:
    return "n/a" if v is None else f"{v:.3g}"


def delta_rows(sid: str, runs: list[Run], stats: list[dict]) -> list[dict]:
    """The section's finding statistics for every run; for a pair, B − A and B / A, flagged where both
    have intervals that do not overlap."""
    spec = experiments().get(sid)
    if spec is None or not spec.group:
        return []
    prefix = spec.group + "."
    names = list(dict.fromkeys(n for st in stats for n in st if n.startswith(prefix) and not n.endswith(".ranking")))
    rows = []
    for name in names:
        cells = [S.stat_view(run, name, st[name]) if name in st and st[name].value is not None else None
                 for run, st in zip(runs, stats)]
        row = {"name": name, "cells": cells, "delta": None, "ratio": None, "beyond": False,
               "detail": name.count(".") >= 2}
        if len(runs) == 2 and cells[0] is not None and cells[1] is not None:
            a, b = float(cells[0]["value"]), float(cells[1]["value"])
            kind = cells[0]["value"].kind if cells[0]["kind"] != "index" else "auto"
            row["delta"] = derived(b - a, f"B − A of {name}", kind="auto" if kind == "x" else kind)
            if cells[0]["kind"] != "index" and a != 0 and math.isfinite(a) and math.isfinite(b):
                row["ratio"] = derived(b / a, f"B / A of {name}", kind="x")
            ea, eb = cells[0]["est"], cells[1]["est"]
            row["beyond"] = bool(isinstance(ea, Est) and isinstance(eb, Est) and ea.disjoint(eb))
        rows.append(row)
    return rows


def _size(run: Run) -> float:
    m = run.model
    return float(m.get("n_layers") or 0) * float(m.get("d_model") or 0) ** 2


def verdict_rows(runs: list[Run], stats: list[dict]) -> tuple[list[dict], dict]:
    """H001–H008 for a pair with ``atlas_core.verdicts.decide`` and its default thresholds; the smaller
    model (layers x d_model^2) is the "small" side."""
    v = S.verdicts_module()
    rows = []
    info = {"available": v is not None and len(runs) == 2, "small": None, "large": None, "thresholds": {}}
    if info["available"]:
        si, li = (0, 1) if _size(runs[0]) <= _size(runs[1]) else (1, 0)
        info.update(small=runs[si], large=runs[li], thresholds=default_thresholds())
    for hid, text, study, marker in S.hypothesis_table():
        shown = hypotheses()[hid].shown
        row = {"id": hid, "text": text, "study": study, "verdict": None, "rule": "", "statistic": "", "value": None,
               "error": "", "evidence": [[S.stat_view(run, n, st[n]) for n in shown if n in st and st[n].value is not None]
                                         for run, st in zip(runs, stats)]}
        if info["available"]:
            try:
                d = v.decide(hid, stats[si], stats[li], info["thresholds"].get(hid, {}))
            except Exception as exc:  # a missing experiment: say which, keep the page
                row["error"] = str(exc)
            else:
                row.update(verdict=d.verdict, rule=d.rule, statistic=d.statistic)
                how = f"atlas_core.verdicts.decide({hid}): {d.statistic}"
                val = derived(d.value, how)
                row["value"] = Est(val, derived(d.lo, how + " (lo)"), derived(d.hi, how + " (hi)")) \
                    if d.lo is not None and d.hi is not None else val
        rows.append(row)
    return rows, info


def card_rows(runs: list[Run], cards: list[dict]) -> list[dict]:
    """The model cards as one table (property x run), rows whose values differ flagged."""
    rows: list[dict] = []

    def add(group: str, label: str, values: list, mono: bool = False):
        texts = {getattr(v, "text", None) or str(v) for v in values if v is not None}
        rows.append({"group": group, "label": label, "cells": values, "mono": mono,
                     "differs": len(texts) > 1 or (len(texts) == 1 and any(v is None for v in values))})

    facts = [dict(c["facts"]) for c in cards]
    for k in dict.fromkeys(k for f in facts for k in f):
        add("model", k, [f.get(k) for f in facts])
    add("model", "weights sha256", [c["sha"] for c in cards], mono=True)
    add("run", "profile", [c["profile"] for c in cards])
    add("run", "families", [", ".join(c["families"]) or "—" for c in cards])
    add("run", "run folder", [c["root"] for c in cards], mono=True)
    add("run", "created", [c["created"] or "—" for c in cards])
    walls = [{key: secs for key, secs, _ in c["walls"]} for c in cards]
    for k in dict.fromkeys(k for w in walls for k in w):
        add("wall seconds", k, [w.get(k) for w in walls])
    add("wall seconds", "total", [c["total"] for c in cards])
    profs = [dict(c["profile_items"]) for c in cards]
    for k in dict.fromkeys(k for p in profs for k in p):
        add("profile", k, [p.get(k) for p in profs])
    vers = [dict(c["versions"]) for c in cards]
    for k in dict.fromkeys(k for v in vers for k in v):
        add("versions", k, [v.get(k) for v in vers], mono=True)
    return rows


def render(env: Environment, common: dict, runs: list[Run], replication: bool = False) -> str:
    stats = [S.statistics(run) for run in runs]
    cards = [S.model_card(run) for run in runs]
    toc = []
    for sid, key, title, what in S.sections():
        if sid in ("model", "hypotheses"):
            toc.append({"id": sid, "title": title, "what": what, "present": True})
            continue
        per_run = [S.builder(sid)(run) for run in runs]
        toc.append({"id": sid, "key": key, "title": title, "what": what, "present": any(d is not None for d in per_run),
                    "macro": S.macro(sid),
                    "per_run": per_run, "overlay": overlay(sid, runs), "deltas": delta_rows(sid, runs, stats)})
    hyp, hinfo = verdict_rows(runs, stats)
    ctx = dict(common, runs=runs, cards=cards, card_rows=card_rows(runs, cards), toc=toc, hyp=hyp, hinfo=hinfo, pair=len(runs) == 2,
               replication=replication, colors=[_color(i) for i in range(len(runs))])
    return env.get_template("compare.html").render(**ctx)
