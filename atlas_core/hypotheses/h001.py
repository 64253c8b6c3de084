"""H001: the universal hub persists at the same relative depth."""

from __future__ import annotations

from dataclasses import replace

from atlas_core.spec import HypothesisSpec, StatDecl
from atlas_core.stat import INCONCLUSIVE, REJECTED, SUPPORTED, Verdict
from atlas_core.verdicts import need


def h001(
    small_depth: float | None, large_depth: float | None, *, tolerance: float, small_range=None, large_range=None
) -> Verdict:
    """Supported if the top layer's relative depth differs by at most ``tolerance`` over the whole interval
    of the difference, rejected if by more over all of it, else inconclusive; rejected too when a model has
    no hub (depth None: every layer's ablation gives the same KL). ``*_range``: the depths of the layers
    whose KL interval reaches the top layer's (the layers that could be the top), default the point."""
    if small_depth is None or large_depth is None:
        diff = lo = hi = None
        verdict = REJECTED
    else:
        diff = abs(large_depth - small_depth)
        (sl, sh), (ll, lh) = small_range or (small_depth, small_depth), large_range or (large_depth, large_depth)
        lo, hi = max(0.0, ll - sh, sl - lh), max(lh - sl, sh - ll)
        verdict = SUPPORTED if hi <= tolerance else (REJECTED if lo > tolerance else INCONCLUSIVE)
    return Verdict(
        "H001",
        verdict,
        "|hub relative depth large - small|",
        diff,
        lo,
        hi,
        f"on the interval: supported if <= {tolerance:g}, rejected if > {tolerance:g}, else inconclusive "
        "(rejected when a model has no hub: all layers tie)",
        {"small_depth": small_depth, "large_depth": large_depth},
    )


def rule(small, large, th) -> Verdict:
    s, l = need(small, "hub.top_layer_depth", "small"), need(large, "hub.top_layer_depth", "large")
    v = h001(
        s.value,
        l.value,
        tolerance=th["tolerance"],
        small_range=None if s.lo is None else (s.lo, s.hi),
        large_range=None if l.lo is None else (l.lo, l.hi),
    )
    return replace(
        v,
        evidence={
            **v.evidence,
            "small_layer": need(small, "hub.top_layer", "small").value,
            "large_layer": need(large, "hub.top_layer", "large").value,
        },
    )


SPEC = HypothesisSpec(
    id="H001",
    text="Universal hub persists at same relative depth",
    experiments=("layer_ablation",),
    statistics=("hub.top_layer_depth", "hub.top_layer"),
    rule=rule,
    thresholds={"tolerance": 0.1},
    evidence=("hub.top_layer", "hub.top_layer_depth", "hub.top_layer_kl"),
    decisive=StatDecl("H001", "fraction", 0.0, 1.0, None, direction=-1),
    boundaries=lambda th: (float(th["tolerance"]),),
)
