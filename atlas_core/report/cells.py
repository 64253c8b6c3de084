"""How ``docs/REPLICATION.md`` prints a cell: a layer with its depth, an estimate with its interval, a
list of layers, a range, and the :class:`Table` its template draws. All numbers go through
:func:`~atlas_core.report.data.fmt` (three significant digits), as in the HTML reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

from atlas_core.metrics import Estimate
from atlas_core.report.data import defined, fmt
from atlas_core.verdicts import Stat, Verdict, relative_depth

NOT_RUN = "not run"
NONE = "—"


@dataclass
class Table:
    """A Markdown table as the template draws it: a header and rows of cells (strings)."""

    head: list[str]
    rows: list[list[str]] = field(default_factory=list)


def layer(index: int | None, n_layers: int) -> str:
    """``L9 (39.1%)``: a layer with its relative depth, ``layer / (n_layers - 1)``."""
    if index is None:
        return NONE
    return f"L{index} ({fmt(relative_depth(index, n_layers), 'pct')})"


def est(e: Mapping | Estimate | Stat | Verdict | None, kind: str = "auto") -> str:
    """``value [lo, hi]`` of an estimate: a typed ``Estimate``, a ``Stat``, a ``Verdict``'s decisive statistic,
    or a study table's dict (the value alone without an interval)."""
    if isinstance(e, Mapping):
        value, lo, hi = e.get("value"), e.get("lo"), e.get("hi")
    elif e is not None:
        value, lo, hi = e.value, e.lo, e.hi
    if e is None or not defined(value):
        return NONE
    text = fmt(value, kind)
    if defined(lo) and defined(hi):
        text += f" [{fmt(lo, kind)}, {fmt(hi, kind)}]"
    return text


def layers(indices: Iterable[int]) -> str:
    """``L4–L8`` for a contiguous block, else ``L4, L5, L9``."""
    ls = sorted(indices)
    if len(ls) > 2 and ls == list(range(ls[0], ls[-1] + 1)):
        return f"L{ls[0]}–L{ls[-1]}"
    return ", ".join(f"L{x}" for x in ls) or NONE


def value_range(values: Iterable[float | None]) -> str:
    """``0.04–11``: the smallest and the largest of the values given."""
    vals = [float(v) for v in values if v is not None and defined(v)]
    return f"{fmt(min(vals))}–{fmt(max(vals))}" if vals else NONE
