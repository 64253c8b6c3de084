"""The grid every table of ``docs/REPLICATION.md`` (:mod:`atlas_core.report.replication`) is drawn on: one row
per label, the study's columns, then one column per baseline run (``not run`` where it lacks the experiment).
Shared by the section modules, so it sits apart from them."""

from __future__ import annotations

from typing import Any, Callable, Sequence

from atlas_core.report.study_baselines import Baseline
from atlas_core.report.cells import NONE, NOT_RUN, Table
from atlas_core.report.study import Study


def _cells(b: Baseline, key: str, fn: Callable[[Baseline], list[str]], n: int) -> list[str]:
    """A run's column of ``n`` cells: ``not run`` when it lacks experiment ``key``."""
    if not b.has(key):
        return [NOT_RUN] + [""] * (n - 1)
    column = fn(b)
    return column[:n] + [NONE] * (n - len(column))


def grid(
    labels: Sequence[str],
    study: Sequence[tuple[str, Sequence[str]]],
    baselines: Sequence[Baseline],
    key: str,
    fn: Callable[[Baseline], list[str]],
    corner: str = "",
) -> Table:
    """One row per label, the study's columns, then one column per run."""
    n = len(labels)
    cols = [list(column)[:n] + [NONE] * (n - len(column)) for _, column in study]
    cols += [_cells(b, key, fn, n) for b in baselines]
    head = [corner] + [h for h, _ in study] + [b.label for b in baselines]
    return Table(head, [[labels[i]] + [c[i] for c in cols] for i in range(n)])


def study_cols(study: Study, table: str, fn: Callable[[Any, str], list[str]]) -> list[tuple[str, list[str]]]:
    """The study's columns of a table (large model first), for the roles the study gives it for."""
    return [
        (f"study {study.name(role)}", fn(study[role][table], role))
        for role in ("large", "small")
        if table in study[role]
    ]
