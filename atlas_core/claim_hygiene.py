"""Claim hygiene: refuse claims that cannot fail, before any run is read.

A claim tests nothing when it accepts every outcome its statistic could plausibly take. Three kinds are
refused, each naming the claim and what to do instead:

- *true by construction*: a statistic its experiment declares fixed whatever the model (``StatDecl.constructed``),
  or the location, top-k or profile of a profile whose order it declares fixed (``StatDecl.order_constructed``);
- *spanning a decision threshold*: a hypothesis claim whose accepted range holds a boundary of its
  rule's verdicts (:func:`boundaries`), so it passes on both sides of the decision; or a hypothesis the
  claims file's profile cannot measure (H002 on sampled head layers);
- *spanning the plausible range*: a finding claim that accepts the whole range of its statistic
  (its declaration's ``lo``..``hi``), or that claims an effect while admitting none (a value claim whose accepted range
  holds the statistic's null, e.g. a KL of 0, while its expected value is not that null; an
  ``at_least`` claim whose threshold lies below the null). ``at_most`` claims assert smallness, so
  holding the null is their point.

``atlas_core.claims.load_claims`` and ``write_claims`` call :func:`refusal` on every claim.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

from atlas_core.layers import item_layer
from atlas_core.stat import INCONCLUSIVE
from atlas_core.spec import declaration, hypotheses
from atlas_core.tasks import FAMILIES

INF = math.inf


@dataclass(frozen=True)
class Range:
    """The plausible values of a statistic and its null (the value meaning "no effect"; None: none)."""

    lo: float
    hi: float
    null: float | None


def boundaries(hid: str, th: Mapping) -> tuple[float, ...]:
    """The values of hypothesis ``hid``'s decisive statistic where its verdict changes (its spec's
    ``boundaries``)."""
    spec = hypotheses().get(hid)
    return tuple(spec.boundaries(th)) if spec is not None and spec.boundaries is not None else ()


def plausible(statistic: str) -> Range | None:
    """The declared plausible range and null of ``statistic`` (:class:`atlas_core.spec.StatDecl`)."""
    d = declaration(statistic)
    return None if d is None else Range(d.lo, d.hi, d.null)


def constructed(statistic: str) -> str | None:
    d = declaration(statistic)
    return None if d is None else d.constructed


def _accepted(claim) -> tuple[float, float] | None:
    if claim.kind == "value":
        return claim.expected - claim.tolerance, claim.expected + claim.tolerance
    if claim.kind == "at_least":
        return claim.threshold, INF
    if claim.kind == "at_most":
        return -INF, claim.threshold
    return None


def refusal(claim, thresholds: Mapping[str, Mapping] | None = None, head_layers_sampled: bool = False) -> str | None:
    """Why ``claim`` (an ``atlas_core.claims.Claim``) cannot fail, or None when it can.

    ``thresholds``: the claims file's ``[thresholds]``; ``head_layers_sampled``: its profile ablates the
    heads of sampled layers only (H002 is then not measurable)."""
    why = constructed(claim.statistic)
    if why:
        return f"{claim.statistic} is true by construction ({why}); drop the claim"
    d = declaration(claim.statistic)
    if d is not None and d.order_constructed and claim.kind in ("location", "top_k", "profile"):
        return (
            f"the order of {claim.statistic} is fixed by construction ({d.order_constructed}); claim its "
            "per-layer values instead"
        )
    hid = claim.hypothesis
    if hid == "H002" and head_layers_sampled:
        return (
            "H002 is not measurable at this profile: its head ablation samples layers, and the strongest head may "
            "sit in a skipped one (Coder-1.5B's is in L1); claim H002 at the full profile"
        )
    if claim.kind == "rank" and claim.statistic == "lora.ranking" and claim.max_rank >= len(FAMILIES):
        return f"max_rank {claim.max_rank} admits every one of the {len(FAMILIES)} families; claim a smaller rank"
    if claim.kind == "verdict" and claim.expected_verdict == INCONCLUSIVE:
        return (
            "it expects the verdict inconclusive, which any evidence too noisy to decide also gives: a claim "
            "states a finding; measure more prompts or drop the claim"
        )
    where = _location_refusal(claim)
    if where:
        return where
    acc = _accepted(claim)
    if acc is None:
        return None
    lo, hi = acc
    span = f"accepts [{lo:.4g}, {hi:.4g}]"
    if hid:
        th = (thresholds or {}).get(hid, {})
        # a one-sided claim may end on a boundary (``at_most 0.1`` is a verdict's side); a value claim may not
        inside = [b for b in boundaries(hid, th) if (lo <= b <= hi if claim.kind == "value" else lo < b < hi)]
        if inside:
            return (
                f"{span}, which holds the {hid} decision threshold {inside[0]:g}: it passes whichever side of the "
                "threshold the statistic falls; tighten the tolerance or drop the claim"
            )
    r = plausible(claim.statistic)
    if r is None:
        return None
    if lo <= r.lo and hi >= r.hi:
        return f"{span}, the whole plausible range [{r.lo:g}, {r.hi:g}] of {claim.statistic}; it cannot fail"
    if r.null is not None:
        if claim.kind == "value" and lo <= r.null <= hi and claim.expected != r.null:
            return (
                f"{span}, which holds {r.null:g} (no effect) though it expects {claim.expected:.4g}: it cannot tell "
                "the effect from none; tighten the tolerance or drop the claim"
            )
        if claim.kind == "at_least" and claim.threshold < r.null:  # ``at_most`` claims smallness: the null is its point
            return (
                f"{span}, which holds {r.null:g} (no effect) and less: it claims no effect; raise the threshold "
                "above the null or drop the claim"
            )
    return None


def _location_refusal(claim) -> str | None:
    """Location, top-k and profile claims that admit every profile."""
    n = claim.n_items
    if claim.kind == "location" and claim.layer is not None and n is not None:
        # the distance is in layers, from the claimed item's layer: L21 +- 21 of 28 reaches both ends, as +- 27 does
        heads = {"n_heads": claim.n_heads}
        layers, at = item_layer(n, heads), item_layer(claim.layer, heads)
        if claim.within >= max(at, layers - 1 - at) and (claim.within > 0 or not claim.n_heads):
            return f"within ± {claim.within} layers of L{at} admits every layer of {layers}; claim a smaller distance"
    if claim.kind == "location" and claim.depth is not None and claim.tolerance >= 0.5:
        return (
            f"a depth of {claim.depth:.3g} ± {claim.tolerance:.3g} admits most of the model; claim a smaller tolerance"
        )
    if claim.kind == "top_k" and n is not None and len(claim.layers) >= n:
        return f"its top-{len(claim.layers)} set holds all {n} items; claim fewer"
    if claim.kind == "top_k" and claim.min_common < 1:
        return "min_common < 1 admits any top-k set; claim at least one shared item"
    if claim.kind == "profile" and claim.min_rho <= 0.0:
        return (
            f"min_rho {claim.min_rho:g} admits an unrelated or inverted profile (rank correlation <= 0); "
            "claim a positive bound"
        )
    return None
