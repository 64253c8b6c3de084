"""The study against the runs, for ``docs/REPLICATION.md``.

- :func:`checks` / :func:`differences`: where a run agrees with the study model of its architecture and
  depth, the headline figure of each table against the measured one, under the rule the document
  states (the study's figure inside the measured 95% interval, or within :data:`REL_TOL` without one; a
  layer within H001's depth tolerance; the transfer zone within H005's);
- :func:`verdicts`: H001-H008, the study's published status beside the pair's verdict by
  :func:`atlas_core.verdicts.decide`, and what each single run shows without a pair;
- :func:`known`: the figures the standing differences between the replication and the study quote.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any, Mapping

from atlas_core import AtlasError
from atlas_core.metrics import pearson
from atlas_core.report import cells
from atlas_core.report import sections as S
from atlas_core.report.cells import NONE, NOT_RUN, Table
from atlas_core.report.data import defined
from atlas_core.report.study_baselines import Baseline, Doc
from atlas_core.report.data import fmt
from atlas_core.report.study import ROLES, Study, best_exit
from atlas_core.spec import hypotheses
from atlas_core.verdicts import Stat, decide, final_fraction, relative_depth

REL_TOL = 0.25  # a figure without an interval agrees when within 25% of the study's
OUTLIER_GAP = 0.3  # |Spearman rho - Pearson r| above which a run's strongest adapter layer is reported


@dataclass(frozen=True)
class Check:
    """One study figure against the measured one: ``agrees`` under the rule stated in the document."""

    table: str
    what: str
    study: str
    measured: str
    agrees: bool


def _within(study: float, s: Stat | None) -> bool | None:
    """The study's figure inside the measured interval, or within :data:`REL_TOL` without one."""
    if s is None or s.value is None:
        return None
    if s.lo is not None and s.hi is not None:
        return s.lo <= study <= s.hi
    return abs(s.value - study) <= REL_TOL * abs(study)


def _depth_check(
    b: Baseline, study: Study, role: str, table: str, what: str, layer: int, name: str, tol: float
) -> Check | None:
    s = b.stats.get(name)
    if s is None or s.value is None:
        return None
    d = abs(relative_depth(s.value, b.n_layers) - relative_depth(layer, study.n_layers(role)))
    return Check(table, what, study.layer(layer, role), b.layer(int(s.value)), d <= tol)


def _value_check(
    b: Baseline, table: str, what: str, study: float | None, name: str, kind: str = "auto"
) -> Check | None:
    ok = None if study is None else _within(study, b.stats.get(name))
    if ok is None:
        return None
    s = b.stats[name]
    label = f" ({s.label})" if s.label else ""
    return Check(table, what, fmt(study, kind), cells.est(s, kind) + label, ok)


def checks(b: Baseline, study: Study) -> list[Check]:
    """The headline figure of each table for the run's study counterpart (none without one)."""
    role = b.role
    if role is None:
        return []
    th, fig = study.thresholds, study[role]
    hub = fig["layer_ablation"]["top"][0]
    out = [
        _depth_check(
            b, study, role, "Layer ablation", "top layer", hub["layer"], "hub.top_layer", th["H001"]["tolerance"]
        ),
        _value_check(b, "Layer ablation", "top layer KL", hub.get("kl"), "hub.top_layer_kl"),
        _value_check(b, "MLP ablation", "max MLP KL", fig["mlp_ablation"]["top"][0]["kl"], "mlp.max_kl"),
        _value_check(b, "Head ablation", "strongest head KL", fig["head_ablation"]["strongest"]["kl"], "heads.max_kl"),
        _value_check(
            b,
            "Steering",
            "boost at the study's layer",
            fig["steering"]["best_boost"],
            "steering.study_layer_best_boost",
        ),
        _value_check(
            b, "Skill knockout", "best selectivity", fig["best_selectivity"], "knockout.best_selectivity", "x"
        ),
        _lora_check(b, fig.get("lora", {}).get("kl")),
        _fraction_check(b, study, role, th["H005"]["tolerance"]),
        _value_check(b, "Adapter ablation", "Pearson r", fig["adapter_pearson"], "adapter.pearson"),
        _value_check(
            b, "Layer skipping", "best top-5 overlap", fig["best_top5_overlap"], "efficiency.best_top5_overlap", "pct"
        ),
    ]
    if "early_exit" in fig:
        best = best_exit(fig["early_exit"]["exits"])["argmax_match"]
        out.append(_value_check(b, "Early exit", "best argmax match", best, "efficiency.best_exit_argmax", "pct"))
    return [c for c in out if c is not None]


def _lora_check(b: Baseline, kl: Mapping[str, float] | None) -> Check | None:
    if not kl or not b.has("lora_training"):
        return None
    fams = {f: e.value for f, e in b.result("lora_training").kl_per_family.items() if defined(e.value)}
    if not fams:
        return None
    want, got = max(kl, key=kl.get), max(fams, key=fams.get)
    return Check(
        "LoRA training", "family shifted most", f"{want} {fmt(kl[want])}", f"{got} {fmt(fams[got])}", want == got
    )


def _fraction_check(b: Baseline, study: Study, role: str, tol: float) -> Check | None:
    s = b.stats.get("transfer.zone_final_fraction")
    if s is None or s.value is None:
        return None
    want = final_fraction(study[role]["transfer_zone"], study.n_layers(role))
    return Check(
        "Cross-model transfer",
        "zone final fraction of depth",
        fmt(want, "pct"),
        cells.est(s, "pct"),
        abs(s.value - want) <= tol,
    )


def differences(doc: Doc) -> list[dict]:
    """Per run in column order: its label, the study model it is checked against (``None`` without one)
    and its checks."""
    return [
        {"label": b.label, "vs": doc.study.name(b.role) if b.role else None, "checks": checks(b, doc.study)}
        for b in doc.baselines
    ]


# --------------------------------------------------------------------------------------------------
# hypotheses


def _evidence(hid: str, ev: Mapping[str, Any]) -> str:
    def kind(k: str) -> str:
        if hid == "H004" and k in ROLES:
            return "x"
        return "pct" if hid == "H007" or "depth" in k or "fraction" in k else "auto"

    return ", ".join(f"{k} {fmt(v, kind(k))}" for k, v in ev.items() if v is not None)


def verdicts(doc: Doc) -> dict:
    """H001-H008: the study's published status beside the pair's verdict, and single-model readings."""
    st = doc.study
    rows = [[hid, text, st.paper["status"][hid], *_verdict(doc, hid)] for hid, text, *_ in S.hypothesis_table()]
    singles = [b for b in doc.baselines if doc.pair is None or b not in doc.pair]
    single = Table(
        ["", "hypothesis"] + [b.label for b in singles],
        [[hid, text] + [_single(doc, b, hid) for b in singles] for hid, text, *_ in S.hypothesis_table()],
    )
    return {
        "need": [f"{st.name(r)} ({st[r]['architecture']}, {st.n_layers(r)} layers)" for r in ROLES],
        "table": Table(["", "hypothesis", "study", "measured verdict", "decisive statistic", "evidence"], rows),
        "singles": single if singles else None,
    }


def _verdict(doc: Doc, hid: str) -> tuple[str, str, str]:
    if doc.pair is None:
        return "needs a pair", NONE, NONE
    small, large = doc.pair
    try:
        v = decide(hid, small.stats, large.stats, doc.study.thresholds.get(hid, {}))
    except AtlasError as exc:
        return NOT_RUN, NONE, str(exc)
    decl = hypotheses()[hid].decisive  # its declared unit sets the format
    value = cells.est(v, "auto" if decl is None else decl.fmt)
    return f"**{v.verdict.upper()}**", f"{v.statistic}: {value}", f"{_evidence(hid, v.evidence)}; rule: {v.rule}"


def _single(doc: Doc, b: Baseline, hid: str) -> str:
    parts = []
    for name in hypotheses()[hid].shown:
        s = b.stats.get(name)
        if s is not None and s.tie and s.kind == "index":
            parts.append(f"{name.split('.', 1)[1]} none ({s.label})")
        elif s is not None and s.value is not None:
            kind = "auto" if s.kind in ("index", "ranking") else S.stat_kind(name)
            text = s.label if s.kind == "index" and s.label else cells.est(s, kind)
            parts.append(f"{name.split('.', 1)[1]} {text}")
    if not parts:
        return NOT_RUN
    return f"needs a pair: {'; '.join(parts)}"


# --------------------------------------------------------------------------------------------------
# the standing differences


def pair_stat(doc: Doc, role: str, name: str, kind: str = "auto") -> str:
    """A statistic of the pair's ``role`` run, as the decision rules quote it (``—`` without a pair)."""
    if doc.pair is None:
        return NONE
    s = doc.pair[ROLES.index(role)].stats.get(name)
    return NONE if s is None or s.value is None else fmt(s.value, kind)


def known(doc: Doc) -> dict:
    """The figures the standing differences quote (from the runs and the study tables)."""
    st = doc.study
    runs = "; ".join(
        f"{b.label}: {b.run.model.get('dtype', NONE)} on {b.run.model.get('device', NONE)}, "
        f"{b.prompts_per_family()} prompts per family"
        for b in doc.baselines
    )
    trained = [b for b in doc.baselines if b.has("lora_training")]
    lora_runs = "; ".join(
        f"{b.label}: peak {fmt(r.learning_rate)}, {r.steps} steps, final loss {fmt(r.final_loss)}"
        for b in trained
        for r in [b.result("lora_training")]
    )
    norms = "; ".join(
        f"{b.label} {cells.value_range(b.result('adapter_ablation').norm)}"
        for b in trained
        if b.has("adapter_ablation")
    )
    return {
        "alone": sorted({b.run.name for b in doc.baselines if b.role is None}),
        "runs": runs,
        "skip_kl": cells.value_range(c["kl"] for c in st["large"]["skipping"].values()),
        "lora": {"runs": lora_runs, "norms": norms} if trained else None,
        "outliers": _adapter_outliers(doc),
    }


def _adapter_outliers(doc: Doc) -> list[dict]:
    """Runs whose Pearson r and Spearman rho part ways: the strongest layer, how far it stands out, and r
    without it."""
    out = []
    for b in doc.baselines:
        r, rho = b.stats.get("adapter.pearson"), b.stats.get("adapter.spearman")
        if r is None or rho is None or r.value is None or rho.value is None or abs(rho.value - r.value) <= OUTLIER_GAP:
            continue
        res = b.result("adapter_ablation")
        kl = [e.value for e in res.kl]
        j = max(range(len(kl)), key=kl.__getitem__)
        e, mid = res.kl[j], statistics.median(kl)
        rest = [i for i in range(len(kl)) if i != j]
        out.append(
            {
                "label": b.label,
                "r": r.value,
                "rho": rho.value,
                "layer": b.layer(res.layers[j]),
                "kl": cells.est(e),
                "ratio": kl[j] / mid,
                "median": mid,
                "n": len(kl),
                "lo": e.lo if defined(e.lo) and e.lo <= 10 * mid else None,
                "without": pearson([res.norm[i] for i in rest], [kl[i] for i in rest]),
            }
        )
    return out
