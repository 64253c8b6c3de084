"""H005: the cross-model transfer zone is defined by relative depth."""

from __future__ import annotations

from atlas_core.spec import HypothesisSpec, StatDecl
from atlas_core.stat import INCONCLUSIVE, REJECTED, SUPPORTED, Verdict, bounds
from atlas_core.verdicts import need


def h005(
    small_fraction: float,
    large_fraction: float,
    *,
    max_fraction: float,
    tolerance: float,
    small_range=None,
    large_range=None,
) -> Verdict:
    """The transfer zone (layers recovering >= the zone threshold) starts at the same relative depth:
    supported if the final fractions of depth the two zones occupy differ by <= ``tolerance`` (H001's
    notion of "same relative depth") and both zones are localised (non-empty, <= ``max_fraction`` of
    depth); rejected otherwise. The former rule read the top three layers, which are the last three of
    any model whose recovery rises with depth (and the last layer recovers 1 by construction). On intervals
    (``*_range``: the zone of the layers certainly in it, and of those possibly in it): a threshold inside
    one is inconclusive."""
    diff = abs(large_fraction - small_fraction)
    (sl, sh), (ll, lh) = (
        bounds(small_fraction, *(small_range or (None, None))),
        bounds(large_fraction, *(large_range or (None, None))),
    )
    lo, hi = max(0.0, ll - sh, sl - lh), max(lh - sl, sh - ll)
    if hi <= tolerance and all(0 < a and b <= max_fraction for a, b in ((sl, sh), (ll, lh))):
        verdict = SUPPORTED
    elif lo > tolerance or any(b == 0 or a > max_fraction for a, b in ((sl, sh), (ll, lh))):
        verdict = REJECTED
    else:
        verdict = INCONCLUSIVE
    return Verdict(
        "H005",
        verdict,
        "|transfer-zone final fraction of depth large - small|",
        diff,
        None if small_range is None and large_range is None else lo,
        None if small_range is None and large_range is None else hi,
        f"on the interval: supported if <= {tolerance:g} and both zones non-empty and <= {max_fraction:g} "
        "of depth, rejected if not, else inconclusive",
        {"small_fraction": small_fraction, "large_fraction": large_fraction},
    )


def rule(small, large, th) -> Verdict:
    name = "transfer.zone_final_fraction"  # the layers recovering >= the zone threshold
    sf, lf = need(small, name, "small"), need(large, name, "large")
    return h005(
        sf.value,
        lf.value,
        max_fraction=th["max_fraction"],
        tolerance=th["tolerance"],
        small_range=None if sf.lo is None else (sf.lo, sf.hi),
        large_range=None if lf.lo is None else (lf.lo, lf.hi),
    )


SPEC = HypothesisSpec(
    id="H005",
    text="Cross-model transfer zone defined by relative depth",
    experiments=("transfer",),
    statistics=("transfer.zone_final_fraction",),
    rule=rule,
    thresholds={"max_fraction": 0.5, "tolerance": 0.1},
    evidence=("transfer.top_final_fraction", "transfer.zone_final_fraction", "transfer.final_recovery"),
    decisive=StatDecl("H005", "fraction", 0.0, 1.0, None, direction=-1),
    boundaries=lambda th: (float(th["tolerance"]),),
)
