"""Comparing every finding statistic of two runs (regression across model versions): ``atlas compare``
and the plugin's ``--atlas-baseline`` drift checks."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from atlas_core.claims.evaluation import tolerance
from atlas_core.runs import load_run
from atlas_core.spec import groups
from atlas_core.verdicts import Stat


@dataclass
class ComparisonRow:
    """One finding statistic of two runs; ``drifted`` when they differ by more than ``tolerance``."""

    statistic: str
    group: str
    a: Stat | None
    b: Stat | None
    delta: float | None
    tolerance: float | None
    drifted: bool
    model_a: str = ""
    model_b: str = ""
    note: str = ""

    @property
    def finding(self) -> str | None:
        spec = groups().get(self.group)
        return self.group if spec is not None and spec.headline else None

    def message(self) -> str:
        a = self.a.text() if self.a else "absent"
        b = self.b.text() if self.b else "absent"
        state = "drifted" if self.drifted else "within tolerance"
        tol = "" if self.tolerance is None else (" (layer/head index: must match)" if self.a and self.a.kind == "index"
                                                 else f" (|delta| {abs(self.delta or 0):.4g}, tolerance {self.tolerance:.4g})")
        return f"{self.statistic} {state}: baseline {self.model_a} {a} vs candidate {self.model_b} {b}{tol}"


def compare_stats(a: Mapping[str, Stat], b: Mapping[str, Stat], *, model_a: str = "A", model_b: str = "B",
                  k: float = 2.0, floor: float = 1e-3, rel: float = 0.05) -> list[ComparisonRow]:
    """Every statistic of either side. Layer/head indices must match exactly; a value drifts when
    ``|a - b| > max(k * sqrt(ha^2 + hb^2), floor, rel * max(|a|, |b|))`` (h: interval half-widths)."""
    rows = []
    order = {g: i for i, g in enumerate(groups())}
    names = sorted(set(a) | set(b), key=lambda n: (order.get(n.split(".")[0], 99), n))
    for name in names:
        sa, sb = a.get(name), b.get(name)
        if (sa or sb).kind == "ranking":
            continue  # the top layer is compared as an index; the full order is too strict to compare
        group = name.split(".")[0]
        if sa is None or sb is None:
            rows.append(ComparisonRow(name, group, sa, sb, None, None, False, model_a, model_b,
                                      "only in " + ("A" if sb is None else "B")))
            continue
        va, vb = sa.value, sb.value
        if va is None or vb is None or not (math.isfinite(va) and math.isfinite(vb)):
            same = (va is None and vb is None) or (va is not None and vb is not None and
                                                   (va == vb or (math.isnan(va) and math.isnan(vb))))
            note = "tie" if sa.tie or sb.tie else "not finite"
            rows.append(ComparisonRow(name, group, sa, sb, None, None, not same, model_a, model_b, note))
            continue
        delta = vb - va
        if sa.kind == "index":
            tol = 0.0
        else:
            hw = math.sqrt((sa.half_width or 0.0) ** 2 + (sb.half_width or 0.0) ** 2)
            tol = tolerance(hw, max(abs(va), abs(vb)), k=k, floor=floor, rel=rel)
        rows.append(ComparisonRow(name, group, sa, sb, delta, tol, abs(delta) > tol, model_a, model_b))
    return rows


def compare_runs(run_a: str | Path, run_b: str | Path, **kw) -> list[ComparisonRow]:
    """Compare every finding statistic of two stored runs (A: the baseline, B: the candidate)."""
    ra, rb = load_run(run_a), load_run(run_b)
    return compare_stats(ra.stats, rb.stats, model_a=ra.name, model_b=rb.name, **kw)


def format_comparison(rows: Sequence[ComparisonRow]) -> str:
    """A text table: statistic, A, B, delta, tolerance, status; then a one-line summary."""
    head = ("statistic", "A", "B", "delta", "tolerance", "status")
    table = [head]
    for r in rows:
        status = "DRIFT" if r.drifted else (r.note or "ok")
        table.append((r.statistic, r.a.text() if r.a else "-", r.b.text() if r.b else "-",
                      "-" if r.delta is None else f"{r.delta:+.4g}",
                      "-" if r.tolerance is None else ("exact" if r.a and r.a.kind == "index" else f"{r.tolerance:.4g}"),
                      status))
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    out = []
    if rows:
        out.append(f"A: {rows[0].model_a}    B: {rows[0].model_b}")
    for i, row in enumerate(table):
        out.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    drifted = [r.statistic for r in rows if r.drifted]
    out.append(f"{len(drifted)} of {len(rows)} statistics drifted" + (f": {', '.join(drifted)}" if drifted else ""))
    return "\n".join(out)
