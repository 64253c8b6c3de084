"""H007: mid-layer redundancy emerges at scale."""

from __future__ import annotations

from atlas_core.experiments.efficiency import MID_BAND
from atlas_core.spec import HypothesisSpec, StatDecl
from atlas_core.stat import INCONCLUSIVE, PARTIAL, REJECTED, SUPPORTED, Verdict, bounds
from atlas_core.verdicts import need


def h007(
    small_best_overlap: float,
    large_best_overlap: float,
    *,
    threshold: float,
    min_gain: float,
    lo=None,
    hi=None,
    large_range=None,
) -> Verdict:
    """Redundancy *emerges at scale*: the best top-5 overlap among skip configurations must rise by
    >= ``min_gain`` from the small model to the large one, else rejected (the former rule read the
    large model alone: 91% on Coder-1.5B beside 90.2% on Coder-0.5B is no emergence). When it rises:
    supported if the large model's overlap is above ``threshold``, partially supported if not (the
    study: 0% -> 10%). On intervals (``lo``/``hi``: the gain's, ``large_range``: the large overlap's): a
    threshold inside one is inconclusive. The overlaps are those of mid-layer skip configurations
    (``efficiency.MID_BAND``)."""
    gain = large_best_overlap - small_best_overlap
    g_lo, g_hi = bounds(gain, lo, hi)
    o_lo, o_hi = bounds(large_best_overlap, *(large_range or (None, None)))
    if g_hi < min_gain:
        verdict = REJECTED
    elif g_lo < min_gain or max(g_lo, 0.0) <= 0.0:
        verdict = INCONCLUSIVE
    else:
        verdict = SUPPORTED if o_lo > threshold else (PARTIAL if o_hi <= threshold else INCONCLUSIVE)
    return Verdict(
        "H007",
        verdict,
        f"gain in best top-5 overlap among mid-layer skip configs (every skipped layer "
        f"at relative depth {MID_BAND[0]:g}-{MID_BAND[1]:g}), large - small",
        gain,
        lo,
        hi,
        f"on the interval: rejected if gain < {min_gain:g}; supported if the gain clears {min_gain:g} and the "
        f"large overlap > {threshold:g}, partially if it is <= {threshold:g}, else inconclusive",
        {"small": small_best_overlap, "large": large_best_overlap},
    )


def rule(small, large, th) -> Verdict:
    s = need(small, "efficiency.best_mid_top5_overlap", "small")
    l = need(large, "efficiency.best_mid_top5_overlap", "large")
    lo = hi = None
    if None not in (s.lo, s.hi, l.lo, l.hi):  # conservative: the gain's extremes over both intervals
        lo, hi = l.lo - s.hi, l.hi - s.lo
    return h007(
        s.value,
        l.value,
        threshold=th["threshold"],
        min_gain=th["min_gain"],
        lo=lo,
        hi=hi,
        large_range=None if l.lo is None else (l.lo, l.hi),
    )


SPEC = HypothesisSpec(
    id="H007",
    text="Mid-layer redundancy emerges at scale",
    experiments=("efficiency",),
    statistics=("efficiency.best_mid_top5_overlap",),
    rule=rule,
    thresholds={"threshold": 0.5, "min_gain": 0.05},
    evidence=("efficiency.best_mid_top5_overlap", "efficiency.best_top5_overlap", "efficiency.best_exit_argmax"),
    decisive=StatDecl("H007", "fraction", -1.0, 1.0, None),
    scaling=True,
    boundaries=lambda th: (float(th["min_gain"]),),
)
