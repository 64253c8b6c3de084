"""H005: the cross-model transfer zone is defined by relative depth."""

from __future__ import annotations

from atlas_core.spec import HypothesisSpec
from atlas_core.stat import REJECTED, SUPPORTED, Verdict
from atlas_core.verdicts import need


def h005(small_fraction: float, large_fraction: float, *, max_fraction: float, tolerance: float) -> Verdict:
    """The transfer zone (layers recovering >= the zone threshold) starts at the same relative depth:
    supported if the final fractions of depth the two zones occupy differ by <= ``tolerance`` (H001's
    notion of "same relative depth") and both zones are localised (non-empty, <= ``max_fraction`` of
    depth); rejected otherwise. The former rule read the top three layers, which are the last three of
    any model whose recovery rises with depth (and the last layer recovers 1 by construction)."""
    diff = abs(large_fraction - small_fraction)
    local = all(0 < f <= max_fraction for f in (small_fraction, large_fraction))
    verdict = SUPPORTED if local and diff <= tolerance else REJECTED
    return Verdict("H005", verdict, "|transfer-zone final fraction of depth large - small|", diff, None, None,
                   f"supported if <= {tolerance:g} and both zones non-empty and <= {max_fraction:g} of depth, "
                   "else rejected", {"small_fraction": small_fraction, "large_fraction": large_fraction})


def rule(small, large, th) -> Verdict:
    name = "transfer.zone_final_fraction"  # the layers recovering >= the zone threshold
    sf, lf = need(small, name, "small"), need(large, name, "large")
    return h005(sf.value, lf.value, max_fraction=th["max_fraction"], tolerance=th["tolerance"])


SPEC = HypothesisSpec(
    id="H005", text="Cross-model transfer zone defined by relative depth", experiments=("transfer",),
    statistics=("transfer.zone_final_fraction",), rule=rule, thresholds={"max_fraction": 0.5, "tolerance": 0.1},
    evidence=("transfer.top_final_fraction", "transfer.zone_final_fraction", "transfer.final_recovery"),
)
