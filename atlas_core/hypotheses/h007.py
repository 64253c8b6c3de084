"""H007: mid-layer redundancy emerges at scale."""

from __future__ import annotations

from atlas_core.spec import HypothesisSpec
from atlas_core.stat import PARTIAL, REJECTED, SUPPORTED, Verdict
from atlas_core.verdicts import need


def h007(small_best_overlap: float, large_best_overlap: float, *, threshold: float, min_gain: float,
         lo=None, hi=None) -> Verdict:
    """Redundancy *emerges at scale*: the best top-5 overlap among skip configurations must rise by
    >= ``min_gain`` from the small model to the large one, else rejected (the former rule read the
    large model alone: 91% on Coder-1.5B beside 90.2% on Coder-0.5B is no emergence). When it rises:
    supported if the large model's overlap is above ``threshold``, partially supported if not (the
    study: 0% -> 10%)."""
    gain = large_best_overlap - small_best_overlap
    verdict = REJECTED if gain < min_gain else (SUPPORTED if large_best_overlap > threshold else PARTIAL)
    return Verdict("H007", verdict, "gain in best top-5 overlap among skip configs, large - small", gain, lo, hi,
                   f"rejected if gain < {min_gain:g}; supported if the large overlap > {threshold:g}, else partially",
                   {"small": small_best_overlap, "large": large_best_overlap})


def rule(small, large, th) -> Verdict:
    s = need(small, "efficiency.best_top5_overlap", "small")
    l = need(large, "efficiency.best_top5_overlap", "large")
    lo = hi = None
    if None not in (s.lo, s.hi, l.lo, l.hi):  # conservative: the gain's extremes over both intervals
        lo, hi = l.lo - s.hi, l.hi - s.lo
    return h007(s.value, l.value, threshold=th["threshold"], min_gain=th["min_gain"], lo=lo, hi=hi)


SPEC = HypothesisSpec(
    id="H007", text="Mid-layer redundancy emerges at scale", experiments=("efficiency",),
    statistics=("efficiency.best_top5_overlap",), rule=rule, thresholds={"threshold": 0.5, "min_gain": 0.05},
    evidence=("efficiency.best_top5_overlap", "efficiency.best_exit_argmax"),
)
