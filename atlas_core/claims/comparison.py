"""Comparing every finding statistic of two runs (regression across model versions): ``atlas compare``
and the plugin's ``--atlas-baseline`` drift checks.

The first run is the baseline, the second the candidate. Evidence the baseline holds and the candidate
lacks (an experiment, a statistic) is *missing*, never "within tolerance": a half-finished candidate must
not pass a regression gate. ``atlas compare`` exits 0 (every statistic within tolerance), 1 (one drifted),
2 (bad input) or 3 (the candidate lacks evidence the baseline has; drift is listed too)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from atlas_core import AtlasError
from atlas_core.claims.evaluation import tolerance
from atlas_core.runs import StoredRun, load_run
from atlas_core.spec import groups, statistic_experiments
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
    def missing(self) -> bool:
        """The baseline measured it and the candidate did not."""
        return self.a is not None and self.b is None

    @property
    def finding(self) -> str | None:
        spec = groups().get(self.group)
        return self.group if spec is not None and spec.headline else None

    def message(self) -> str:
        a = self.a.text() if self.a else "absent"
        b = self.b.text() if self.b else "absent"
        state = "drifted" if self.drifted else "within tolerance"
        tol = (
            ""
            if self.tolerance is None
            else (
                " (layer/head index: must match)"
                if self.a and self.a.kind == "index"
                else f" (|delta| {abs(self.delta or 0):.4g}, tolerance {self.tolerance:.4g})"
            )
        )
        return f"{self.statistic} {state}: baseline {self.model_a} {a} vs candidate {self.model_b} {b}{tol}"


def compare_stats(
    a: Mapping[str, Stat],
    b: Mapping[str, Stat],
    *,
    model_a: str = "A",
    model_b: str = "B",
    k: float = 2.0,
    floor: float = 1e-3,
    rel: float = 0.05,
) -> list[ComparisonRow]:
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
            rows.append(
                ComparisonRow(
                    name,
                    group,
                    sa,
                    sb,
                    None,
                    None,
                    False,
                    model_a,
                    model_b,
                    "MISSING in candidate" if sb is None else "only in candidate",
                )
            )
            continue
        va, vb = sa.value, sb.value
        if va is None or vb is None or not (math.isfinite(va) and math.isfinite(vb)):
            same = (va is None and vb is None) or (
                va is not None and vb is not None and (va == vb or (math.isnan(va) and math.isnan(vb)))
            )
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
    return compare_folders(run_a, run_b, **kw).rows


@dataclass
class RunComparison:
    """Two runs compared: the rows, and the experiments of the baseline that the candidate lacks."""

    baseline: StoredRun
    candidate: StoredRun
    rows: list[ComparisonRow]
    selected: list[str] | None  # the experiments compared (None: every one the baseline holds)
    missing_experiments: list[str]

    @property
    def missing(self) -> list[str]:
        return [r.statistic for r in self.rows if r.missing]

    @property
    def drifted(self) -> list[str]:
        return [r.statistic for r in self.rows if r.drifted]

    def missing_message(self) -> str:
        """What the candidate lacks and the two fixes; empty when it lacks nothing."""
        if not (self.missing_experiments or self.missing):
            return ""
        parts = []
        if self.missing_experiments:
            parts.append(f"experiment(s) {', '.join(self.missing_experiments)}")
        if self.missing:
            parts.append(
                f"{len(self.missing)} statistic(s) ({', '.join(self.missing[:8])}"
                f"{', ...' if len(self.missing) > 8 else ''})"
            )
        need = ",".join(
            dict.fromkeys(self.missing_experiments + [e for s in self.missing for e in statistic_experiments(s)])
        )
        both = [e for e in self.baseline.experiments if self.candidate.has(e)]
        narrow = f", or compare only what both hold: --experiments {','.join(both)}" if both else ""
        return (
            f"missing evidence: the candidate {self.candidate.root} lacks {' and '.join(parts)} that the "
            f"baseline {self.baseline.root} has; compute them (atlas run --experiments {need} --out "
            f"{self.candidate.root}){narrow}"
        )


def compare_folders(
    baseline: str | Path, candidate: str | Path, experiments: Sequence[str] | None = None, **kw
) -> RunComparison:
    """Compare the candidate run with the baseline run: every statistic the baseline holds, or, with
    ``experiments``, only the statistics computed from those experiments (which the baseline must hold)."""
    base = load_run(baseline)
    cand = StoredRun(candidate)
    if experiments is not None:
        lacking = [e for e in experiments if not base.has(e)]
        if lacking:
            raise AtlasError(
                f"--experiments {','.join(experiments)}: the baseline {base.root} holds no "
                f"{', '.join(lacking)}; choose among {', '.join(base.experiments)}"
            )
    wanted = list(experiments) if experiments is not None else base.experiments
    missing_exps = [e for e in wanted if not cand.has(e)]
    cand_stats = cand.stats if cand.experiments else {}
    rows = compare_stats(base.stats, cand_stats, model_a=base.name, model_b=cand.name, **kw)
    if experiments is not None:
        rows = [r for r in rows if set(statistic_experiments(r.statistic)) <= set(experiments)]
    return RunComparison(base, cand, rows, list(experiments) if experiments is not None else None, missing_exps)


def format_comparison(rows: Sequence[ComparisonRow], comparison: RunComparison | None = None) -> str:
    """A text table: statistic, baseline (A), candidate (B), delta, tolerance, status; then a summary line
    (and, with ``comparison``, which folder is which and what the candidate lacks)."""
    head = ("statistic", "A (baseline)", "B (candidate)", "delta", "tolerance", "status")
    table = [head]
    for r in rows:
        status = "DRIFT" if r.drifted else ("MISSING" if r.missing else (r.note or "ok"))
        table.append(
            (
                r.statistic,
                r.a.text() if r.a else "-",
                r.b.text() if r.b else "-",
                "-" if r.delta is None else f"{r.delta:+.4g}",
                "-" if r.tolerance is None else ("exact" if r.a and r.a.kind == "index" else f"{r.tolerance:.4g}"),
                status,
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    out = []
    if comparison is not None:
        out.append(
            f"baseline (A): {comparison.baseline.name} ({comparison.baseline.root})    "
            f"candidate (B): {comparison.candidate.name} ({comparison.candidate.root})"
        )
    elif rows:
        out.append(f"baseline (A): {rows[0].model_a}    candidate (B): {rows[0].model_b}")
    for i, row in enumerate(table):
        out.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    drifted = [r.statistic for r in rows if r.drifted]
    missing = sum(r.missing for r in rows)
    out.append(
        f"{len(drifted)} of {len(rows)} statistics drifted"
        + (f": {', '.join(drifted)}" if drifted else "")
        + (f"; {missing} MISSING in the candidate" if missing else "")
    )
    if comparison is not None and comparison.missing_message():
        out.append(comparison.missing_message())
    return "\n".join(out)
