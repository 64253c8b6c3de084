"""The regression check (``--atlas-model CANDIDATE --atlas-baseline RUN_DIR``): a test taking a ``drift``
argument runs once per statistic of the baseline run, comparing it with the candidate's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from atlas_core.runs import StoredRun


@dataclass(frozen=True)
class DriftCheck:
    """One statistic of the baseline run to compare with the candidate's."""

    statistic: str
    candidate: str

    def __repr__(self) -> str:
        return self.statistic


def parametrize_drift(metafunc, base: StoredRun | None, candidate: str | None, known: dict) -> None:
    """``drift``: one parameter per statistic of the baseline run ``base`` (ranking statistics aside), each with
    its finding marker, to compare with ``candidate``'s; one skipped parameter without a baseline. ``known``: the
    claims-test markers."""
    if base is None:
        metafunc.parametrize(
            "drift",
            [
                pytest.param(
                    None,
                    id="no-baseline",
                    marks=pytest.mark.skip(
                        reason="regression check: pass --atlas-model CANDIDATE --atlas-baseline RUN_DIR"
                    ),
                )
            ],
        )
        return
    params = []
    for name, stat in base.stats.items():
        if stat.kind == "ranking":
            continue
        group = name.split(".")[0]
        marks = [getattr(pytest.mark, f"finding_{group}")] if f"finding_{group}" in known else []
        params.append(pytest.param(DriftCheck(name, candidate), id=name, marks=marks))
    metafunc.parametrize("drift", params)


def drift_row(check: DriftCheck, base: StoredRun, cand: dict[str, Any]):
    """The comparison row of one statistic of the baseline run ``base`` against the candidate's statistics."""
    from atlas_core.claims import ComparisonRow, compare_stats

    rows = compare_stats(
        {check.statistic: base.stats[check.statistic]},
        {k: v for k, v in cand.items() if k == check.statistic},
        model_a=f"{base.name} ({base.root})",
        model_b=check.candidate,
    )
    if not rows:  # a ranking statistic: compared through the top layer
        return ComparisonRow(
            check.statistic,
            check.statistic.split(".")[0],
            base.stats[check.statistic],
            cand.get(check.statistic),
            None,
            None,
            False,
            base.name,
            check.candidate,
        )
    return rows[0]
