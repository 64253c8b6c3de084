"""The page of several runs side by side (:mod:`atlas_core.report.compare` draws its figures): a table of each
section's finding statistics with the difference (highlighted where the two bootstrap intervals do not overlap),
the hypothesis verdicts for a pair, the model cards as one table, and the page rendered with each run's own
section below."""

from __future__ import annotations

import math

from jinja2 import Environment

from atlas_core.report import sections as S
from atlas_core.report.data import Est, ReportedRun, derived
from atlas_core.spec import default_thresholds, experiments, hypotheses
from atlas_core.verdicts import decide
from atlas_core.report.compare import overlay, run_color


def delta_rows(sid: str, runs: list[ReportedRun], stats: list[dict]) -> list[dict]:
    """The section's finding statistics for every run; for a pair, B − A and B / A, flagged where both
    have intervals that do not overlap."""
    spec = experiments().get(sid)
    if spec is None or not spec.group:
        return []
    prefix = spec.group + "."
    names = list(dict.fromkeys(n for st in stats for n in st if n.startswith(prefix) and not n.endswith(".ranking")))
    rows = []
    for name in names:
        cells = [
            S.stat_view(run, name, st[name]) if name in st and st[name].value is not None else None
            for run, st in zip(runs, stats)
        ]
        row = {
            "name": name,
            "cells": cells,
            "delta": None,
            "ratio": None,
            "beyond": False,
            "detail": name.count(".") >= 2,
        }
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


def model_size(run: ReportedRun) -> float:
    """What orders runs by model size: layers x d_model^2."""
    m = run.model
    return float(m.get("n_layers") or 0) * float(m.get("d_model") or 0) ** 2


def verdict_rows(runs: list[ReportedRun], stats: list[dict]) -> tuple[list[dict], dict]:
    """H001–H008 for a pair with ``atlas_core.verdicts.decide`` and its default thresholds; the smaller
    model (layers x d_model^2) is the "small" side."""
    rows = []
    info = {"available": len(runs) == 2, "small": None, "large": None, "thresholds": {}}
    if info["available"]:
        si, li = (0, 1) if model_size(runs[0]) <= model_size(runs[1]) else (1, 0)
        info.update(small=runs[si], large=runs[li], thresholds=default_thresholds())
    for hid, text, study, _marker in S.hypothesis_table():
        shown = hypotheses()[hid].shown
        row = {
            "id": hid,
            "text": text,
            "study": study,
            "verdict": None,
            "rule": "",
            "statistic": "",
            "value": None,
            "error": "",
            "evidence": [
                [S.stat_view(run, n, st[n]) for n in shown if n in st and st[n].value is not None]
                for run, st in zip(runs, stats)
            ],
        }
        if info["available"]:
            try:
                d = decide(hid, stats[si], stats[li], info["thresholds"].get(hid, {}))
            except Exception as exc:  # a missing experiment: say which, keep the page
                row["error"] = str(exc)
            else:
                row.update(verdict=d.verdict, rule=d.rule, statistic=d.statistic)
                how = f"atlas_core.verdicts.decide({hid}): {d.statistic}"
                val = derived(d.value, how)
                row["value"] = (
                    Est(val, derived(d.lo, how + " (lo)"), derived(d.hi, how + " (hi)"))
                    if d.lo is not None and d.hi is not None
                    else val
                )
        rows.append(row)
    return rows, info


def card_rows(runs: list[ReportedRun], cards: list[dict]) -> list[dict]:
    """The model cards as one table (property x run), rows whose values differ flagged."""
    rows: list[dict] = []

    def add(group: str, label: str, values: list, mono: bool = False):
        texts = {getattr(v, "text", None) or str(v) for v in values if v is not None}
        rows.append(
            {
                "group": group,
                "label": label,
                "cells": values,
                "mono": mono,
                "differs": len(texts) > 1 or (len(texts) == 1 and any(v is None for v in values)),
            }
        )

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


def render(env: Environment, common: dict, runs: list[ReportedRun], replication: bool = False) -> str:
    stats = [S.statistics(run) for run in runs]
    cards = [S.model_card(run) for run in runs]
    toc = []
    for sid, key, title, what in S.sections():
        if sid in ("model", "hypotheses"):
            toc.append({"id": sid, "title": title, "what": what, "present": True})
            continue
        per_run = [S.builder(sid)(run) for run in runs]
        toc.append(
            {
                "id": sid,
                "key": key,
                "title": title,
                "what": what,
                "present": any(d is not None for d in per_run),
                "macro": S.macro(sid),
                "per_run": per_run,
                "overlay": overlay(sid, runs),
                "deltas": delta_rows(sid, runs, stats),
            }
        )
    hyp, hinfo = verdict_rows(runs, stats)
    ctx = dict(
        common,
        runs=runs,
        cards=cards,
        card_rows=card_rows(runs, cards),
        toc=toc,
        hyp=hyp,
        hinfo=hinfo,
        pair=len(runs) == 2,
        replication=replication,
        colors=[run_color(i) for i in range(len(runs))],
    )
    return env.get_template("compare.html").render(**ctx)
