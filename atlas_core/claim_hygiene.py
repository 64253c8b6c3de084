"""Claim hygiene: refuse claims that cannot fail, before any run is read.

A claim tests nothing when it accepts every outcome its statistic could plausibly take. Three kinds are
refused, each naming the claim and what to do instead:

- *true by construction*: a statistic the experiment fixes whatever the model (:data:`CONSTRUCTED`);
- *spanning a decision threshold*: a hypothesis claim whose accepted range holds a boundary of its
  rule's verdicts (:func:`boundaries`), so it passes on both sides of the decision; or a hypothesis the
  claims file's profile cannot measure (H002 on sampled head layers);
- *spanning the plausible range*: a finding claim that accepts the whole range of its statistic
  (:data:`RANGES`), or that claims an effect while admitting none (a value claim whose accepted range
  holds the statistic's null, e.g. a KL of 0, while its expected value is not that null; an
  ``at_least`` claim whose threshold lies below the null). ``at_most`` claims assert smallness, so
  holding the null is their point.

``atlas_core.claims.load_claims`` and ``write_claims`` call :func:`refusal` on every claim.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Mapping

from atlas_core.tasks import FAMILIES

INF = math.inf

# statistic pattern -> why it is the same for every model
CONSTRUCTED: dict[str, str] = {
    "transfer.final_recovery": "patching the last layer's residual recovers 1 by construction (only the final norm "
                               "and LM head follow, and LoRA does not touch them)",
    "transfer.family_final_recovery.*": "patching the last layer's residual recovers 1 by construction in every family",
    "transfer.top_final_fraction": "the top 3 transfer layers are the last 3 of any model whose recovery rises with "
                                   "depth (it ends at 1 by construction); claim transfer.zone_final_fraction",
    "efficiency.exit.skip0.*": "an exit after the last layer skips nothing: it matches the full model by construction",
}


@dataclass(frozen=True)
class Range:
    """The plausible values of a statistic and its null (the value meaning "no effect"; None: none)."""

    lo: float
    hi: float
    null: float | None


# first match wins (fnmatch patterns on the statistic name)
RANGES: tuple[tuple[str, Range], ...] = (
    ("*_depth", Range(0.0, 1.0, None)),
    ("*fraction*", Range(0.0, 1.0, None)),
    ("heads.layer_coverage", Range(0.0, 1.0, None)),
    ("*top5_overlap", Range(0.0, 1.0, None)),
    ("*argmax*", Range(0.0, 1.0, None)),
    ("clean.accuracy*", Range(0.0, 1.0, None)),
    ("steering.*boost", Range(-1.0, 1.0, 0.0)),
    ("knockout.*_drop", Range(-1.0, 1.0, 0.0)),
    ("knockout.best_selectivity", Range(-INF, INF, 1.0)),  # 1: the skill drops as much as the rest
    ("adapter.*", Range(-1.0, 1.0, 0.0)),
    ("mlp.share_of_top_layer", Range(0.0, INF, 0.0)),
    ("lora.final_loss", Range(0.0, INF, None)),
    ("*kl*", Range(0.0, INF, 0.0)),
    ("transfer.*", Range(-INF, 1.0, 0.0)),
)
# the decisive statistic of each hypothesis rule (atlas_core.verdicts.decide)
HYPOTHESIS_RANGES: dict[str, Range] = {
    "H001": Range(0.0, 1.0, None), "H002": Range(0.0, INF, None), "H003": Range(-INF, INF, None),
    "H004": Range(-INF, INF, None), "H005": Range(0.0, 1.0, None), "H006": Range(0.0, INF, None),
    "H007": Range(-1.0, 1.0, None), "H008": Range(-1.0, 1.0, 0.0),
}


def boundaries(hid: str, th: Mapping) -> tuple[float, ...]:
    """The values of hypothesis ``hid``'s decisive statistic where its verdict changes."""
    g = lambda *keys: tuple(float(th[k]) for k in keys if k in th)  # noqa: E731
    if hid == "H002":
        return (min(1.0, float(th["min_ratio"])), float(th["min_ratio"])) if "min_ratio" in th else ()
    return {"H001": g("tolerance"), "H003": g("reject_below", "min_ratio"), "H004": g("reject_below", "min_ratio"),
            "H005": g("tolerance"), "H006": g("reject_below", "min_ratio"), "H007": g("min_gain"),
            "H008": g("low", "high")}.get(hid, ())


def plausible(statistic: str) -> Range | None:
    head = statistic.split(".")[0]
    if head in HYPOTHESIS_RANGES:
        return HYPOTHESIS_RANGES[head]
    return next((r for pattern, r in RANGES if fnmatchcase(statistic, pattern)), None)


def constructed(statistic: str) -> str | None:
    return next((why for pattern, why in CONSTRUCTED.items() if fnmatchcase(statistic, pattern)), None)


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
    hid = claim.hypothesis
    if hid == "H002" and head_layers_sampled:
        return ("H002 is not measurable at this profile: its head ablation samples layers, and the strongest head may "
                "sit in a skipped one (Coder-1.5B's is in L1); claim H002 at the full profile")
    if claim.kind == "rank" and claim.statistic == "lora.ranking" and claim.max_rank >= len(FAMILIES):
        return f"max_rank {claim.max_rank} admits every one of the {len(FAMILIES)} families; claim a smaller rank"
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
            return (f"{span}, which holds the {hid} decision threshold {inside[0]:g}: it passes whichever side of the "
                    "threshold the statistic falls; tighten the tolerance or drop the claim")
    r = plausible(claim.statistic)
    if r is None:
        return None
    if lo <= r.lo and hi >= r.hi:
        return f"{span}, the whole plausible range [{r.lo:g}, {r.hi:g}] of {claim.statistic}; it cannot fail"
    if r.null is not None:
        if claim.kind == "value" and lo <= r.null <= hi and claim.expected != r.null:
            return (f"{span}, which holds {r.null:g} (no effect) though it expects {claim.expected:.4g}: it cannot tell "
                    "the effect from none; tighten the tolerance or drop the claim")
        if claim.kind == "at_least" and claim.threshold < r.null:  # ``at_most`` claims smallness: the null is its point
            return (f"{span}, which holds {r.null:g} (no effect) and less: it claims no effect; raise the threshold "
                    "above the null or drop the claim")
    return None
