"""H001: the universal hub persists at the same relative depth."""

from __future__ import annotations

from dataclasses import replace

from atlas_core.spec import HypothesisSpec
from atlas_core.stat import REJECTED, SUPPORTED, Verdict
from atlas_core.verdicts import need


def h001(small_depth: float | None, large_depth: float | None, *, tolerance: float) -> Verdict:
    """Supported if the top layer's relative depth differs by at most ``tolerance``, else rejected; rejected
    too when a model has no hub (depth None: every layer's ablation gives the same KL)."""
    diff = None if small_depth is None or large_depth is None else abs(large_depth - small_depth)
    verdict = SUPPORTED if diff is not None and diff <= tolerance else REJECTED
    return Verdict("H001", verdict, "|hub relative depth large - small|", diff, None, None,
                   f"supported if <= {tolerance:g}, else rejected (also when a model has no hub: all layers tie)",
                   {"small_depth": small_depth, "large_depth": large_depth})


def rule(small, large, th) -> Verdict:
    s, l = need(small, "hub.top_layer_depth", "small"), need(large, "hub.top_layer_depth", "large")
    v = h001(s.value, l.value, tolerance=th["tolerance"])
    return replace(v, evidence={**v.evidence, "small_layer": need(small, "hub.top_layer", "small").value,
                                "large_layer": need(large, "hub.top_layer", "large").value})


SPEC = HypothesisSpec(
    id="H001", text="Universal hub persists at same relative depth", experiments=("layer_ablation",),
    statistics=("hub.top_layer_depth", "hub.top_layer"), rule=rule, thresholds={"tolerance": 0.1},
    evidence=("hub.top_layer", "hub.top_layer_depth", "hub.top_layer_kl"),
)
