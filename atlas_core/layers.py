"""Per-layer (and per-head) profiles: the statistic that carries a whole profile, and the relabelling of
layers the claims audit feeds claims (a result as if its layers had been reordered).

A profile statistic is a ``ranking`` :class:`~atlas_core.stat.Stat`: ``value`` is the top item,
``ranking`` every item strongest first, and ``series`` the profile itself (``x``: the items, ``y``: the
values, ``lo``/``hi``: their bootstrap intervals where measured, ``axis``, ``n_layers``, and for heads
``n_heads``). Location, top-k and profile claims read it (:mod:`atlas_core.claims.evaluation`).
"""

from __future__ import annotations

import math
from typing import Sequence

from atlas_core.stat import Stat, finite


def profile_stat(
    items: Sequence[int],
    values: Sequence[float],
    n_layers: int,
    *,
    axis: str = "layer",
    lo: Sequence[float] | None = None,
    hi: Sequence[float] | None = None,
    direction: int = 1,
    ylabel: str = "",
    n_heads: int | None = None,
    n: int | None = None,
) -> Stat:
    """A per-layer (or per-head) profile as a ranking Stat; items whose value is undefined rank last."""
    items, ys = [int(i) for i in items], [finite(v) for v in values]
    key = lambda k: (ys[k] is None, -direction * (ys[k] or 0.0), items[k])  # noqa: E731
    order = sorted(range(len(items)), key=key)
    ranking = tuple(items[k] for k in order)
    top = ranking[0] if ranking and ys[order[0]] is not None else None
    series = {"x": items, "y": ys, "xlabel": axis, "ylabel": ylabel, "axis": axis, "n_layers": int(n_layers)}
    if lo is not None and hi is not None:
        series["lo"], series["hi"] = [finite(v) for v in lo], [finite(v) for v in hi]
        if n is not None:  # the prompts each interval is over (a claim's tolerance trusts an interval over many)
            series["n"] = int(n)
    if n_heads is not None:
        series["n_heads"] = int(n_heads)
    return Stat(
        None if top is None else float(top),
        kind="ranking",
        ranking=ranking,
        label=item_name(top, series) if top is not None else "none",
        series=series,
    )


def value_at(
    items: Sequence[int],
    values: Sequence[float],
    item: int,
    n_layers: int,
    *,
    anchored: bool = True,
    n_heads: int | None = None,
    label: str | None = None,
    ylabel: str = "",
) -> Stat:
    """The value of a per-layer (per-head) profile at one item, carrying the profile and, when ``anchored``, the
    item (``series["at"]``): a claim of it names the item and reads the profile there (a statistic declared
    ``StatDecl.at``). Not anchored where no item stands out (a tie): its claims are of the value alone."""
    items, ys = [int(i) for i in items], [finite(v) for v in values]
    axis = "head" if n_heads else "layer"
    series = {"x": items, "y": ys, "xlabel": axis, "ylabel": ylabel, "axis": axis, "n_layers": int(n_layers)}
    if n_heads:
        series["n_heads"] = int(n_heads)
    if anchored:
        series["at"] = int(item)
    return Stat(
        ys[items.index(int(item))], label=label if label is not None else item_name(item, series), series=series
    )


def item_name(item, series: dict | None) -> str:
    """``L9``, or ``L0 H6`` for a head of a per-head profile."""
    if item is None:
        return "none"
    item = int(item)
    nh = (series or {}).get("n_heads")
    return f"L{item // nh} H{item % nh}" if nh else f"L{item}"


def item_layer(item, series: dict | None) -> int:
    nh = (series or {}).get("n_heads")
    return int(item) // nh if nh else int(item)


def inverse(order: Sequence[int]) -> dict[int, int]:
    """old layer -> new layer, for ``order`` (new layer i measured what old layer ``order[i]`` did)."""
    return {int(old): new for new, old in enumerate(order)}


def relabel(layers: Sequence[int], order: Sequence[int], *arrays: Sequence) -> tuple[list[int], list[list]]:
    """``layers`` renamed by ``order`` and sorted, with every array aligned to them reordered alike."""
    inv = inverse(order)
    new = [inv[int(layer)] for layer in layers]
    idx = sorted(range(len(new)), key=lambda k: new[k])
    return [new[k] for k in idx], [[a[k] for k in idx] for a in arrays]


def finite_or_zero(x) -> float:
    x = finite(x)
    return 0.0 if x is None or math.isinf(x) else x
