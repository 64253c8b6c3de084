"""What the study layer computes with: a named measurement (``Stat``), a decision rule's outcome
(``Verdict``), and the small pure helpers that statistics and rules share (relative depth, ratios with
their intervals, plot series). No model, no files, no registry: experiments' statistics and hypotheses'
rules both import this module, so it changes rarely (it is part of every experiment's code fingerprint).

Relative depth is ``layer / (n_layers - 1)`` (first layer 0, last layer 1). The "final fraction" a set
of layers occupies is ``(n_layers - min(layers)) / n_layers``: the study's "final ~10%" is the last 3 of
28 layers (10.7%) and the last 3 of 24 (12.5%).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

SUPPORTED = "supported"
PARTIAL = "partially supported"
WEAKENED = "weakened"
REJECTED = "rejected"
INCONCLUSIVE = "inconclusive"  # the statistic's interval straddles a decision threshold
VERDICTS = (SUPPORTED, PARTIAL, WEAKENED, REJECTED, INCONCLUSIVE)


def bounds(value, lo=None, hi=None) -> tuple[float, float]:
    """The interval a rule decides on: ``(lo, hi)`` where measured, else the point twice (the study's
    published figures have no intervals: their points decide)."""
    v = float("nan") if value is None else float(value)
    if lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
        return v, v
    return min(float(lo), v), max(float(hi), v)


def banded(value, lo, hi, *, support_at: float, reject_below: float, middle: str, scaling: bool) -> str:
    """A verdict from an interval against two thresholds: supported when the whole interval clears
    ``support_at``; rejected when it lies wholly below ``reject_below``; ``middle`` when it lies wholly
    between; else inconclusive. ``scaling``: support (and a supporting ``middle``) also needs the interval
    above 1, a change, and a ratio of at most 1 is "not stronger" (rejected) wherever ``reject_below`` >= 1 or
    the middle verdict is itself a partial support. Points (no interval) never give inconclusive."""
    lo_, hi_ = bounds(value, lo, hi)
    if math.isnan(lo_):
        return REJECTED
    supports_middle = middle == PARTIAL
    if lo_ >= support_at and (not scaling or lo_ > 1):
        return SUPPORTED
    if hi_ < reject_below or (scaling and (reject_below >= 1 or supports_middle) and hi_ <= 1):
        return REJECTED  # below the rejection side, or (scaling) no stronger where nothing short of support is left
    below_support = hi_ < support_at or (scaling and hi_ <= 1)
    if lo_ >= reject_below and below_support and (not (scaling and supports_middle) or lo_ > 1):
        return middle
    return INCONCLUSIVE


@dataclass(frozen=True)
class Stat:
    """One named measurement. ``kind``: ``estimate`` (bootstrap interval lo..hi over prompts),
    ``value`` (a float without interval), ``index`` (a layer or head number: compared exactly) or
    ``ranking`` (``value`` is the top item, ``ranking`` the full order, strongest first)."""

    value: float | None
    lo: float | None = None
    hi: float | None = None
    n: int | None = None
    kind: str = "value"
    ranking: tuple[int, ...] | None = None
    label: str | None = None  # what the number refers to, e.g. "L26" or "arithmetic L0 H3"
    series: dict | None = field(default=None, compare=False)
    tie: bool = False  # every candidate scored the same: there is no top item (``value`` is None)

    @property
    def half_width(self) -> float | None:
        if self.lo is None or self.hi is None:
            return None
        return (self.hi - self.lo) / 2

    def text(self, fmt: str = ".4g") -> str:
        """``value [lo, hi]`` (or the value alone when there is no interval)."""
        if self.value is None:
            return f"none ({self.label})" if self.tie else "n/a"
        v = f"{self.value:{fmt}}"
        if self.lo is not None and self.hi is not None:
            v += f" [{self.lo:{fmt}}, {self.hi:{fmt}}]"
        return v + (f" ({self.label})" if self.label else "")


@dataclass(frozen=True)
class Verdict:
    """A decision rule's outcome: the verdict, the decisive statistic and the evidence behind it."""

    hypothesis: str
    verdict: str
    statistic: str  # name of the decisive number, e.g. "boost ratio large/small"
    value: float
    lo: float | None
    hi: float | None
    rule: str  # the rule with its thresholds, for messages
    evidence: dict[str, float | None] = field(default_factory=dict)


def relative_depth(layer: float, n_layers: int) -> float:
    """``layer / (n_layers - 1)``: 0 for the first layer, 1 for the last."""
    if n_layers < 2:
        return 0.0
    return float(layer) / (n_layers - 1)


def final_fraction(layers, n_layers: int) -> float:
    """The fraction of the model's layers from the shallowest of ``layers`` to the end."""
    layers = list(layers)
    if not layers or n_layers < 1:
        return float("nan")
    return (n_layers - min(layers)) / n_layers


def finite(x) -> float | None:
    """``x`` as a float, ``None`` for a missing or undefined (NaN) number."""
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else x


def estimate_stat(e, **kw) -> Stat:
    """A :class:`~atlas_core.metrics.Estimate` (or ``None``) as an ``estimate`` Stat."""
    if e is None:
        return Stat(None, kind="estimate", **kw)
    return Stat(finite(e.value), finite(e.lo), finite(e.hi), e.n, kind="estimate", **kw)


def ratio(a: float | None, b: float | None) -> float:
    """a / b, with b == 0 giving +-inf (or nan for 0/0) instead of an exception."""
    if a is None or b is None:
        return float("nan")
    if b == 0:
        return float("nan") if a == 0 else math.copysign(math.inf, a)
    return a / b


def ratio_stat(num: Stat, den: Stat, **kw) -> Stat:
    """num / den, with a conservative interval (lo_num/hi_den, hi_num/lo_den) when both intervals
    exist and are positive."""
    value = ratio(num.value, den.value)
    lo = hi = None
    if None not in (num.lo, num.hi, den.lo, den.hi) and num.lo > 0 and den.lo > 0:
        lo, hi = num.lo / den.hi, num.hi / den.lo
    return Stat(value, lo, hi, kind="estimate" if lo is not None else "value", **kw)


def series(x, y, xlabel: str, ylabel: str) -> dict:
    """A small plot series carried by a Stat (reports draw it)."""
    return {"x": [finite(v) for v in x], "y": [finite(v) for v in y], "xlabel": xlabel, "ylabel": ylabel}
