"""H006: MLP dominance scales with parameters."""

from __future__ import annotations

import math

from atlas_core.spec import HypothesisSpec, StatDecl
from atlas_core.stat import WEAKENED, Verdict, ratio_stat
from atlas_core.verdicts import need, ratio_rule


def h006(
    small_mlp_kl: float, large_mlp_kl: float, *, min_ratio: float, reject_below: float, lo=None, hi=None
) -> Verdict:
    """Supported if the max MLP-ablation KL grows with the model (ratio >= ``min_ratio``); rejected if
    the ratio is < ``reject_below`` (weaker at scale); weakened in between."""
    return ratio_rule(
        "H006",
        "max MLP KL",
        small_mlp_kl,
        large_mlp_kl,
        min_ratio=min_ratio,
        reject_below=reject_below,
        middle=WEAKENED,
        lo=lo,
        hi=hi,
    )


def rule(small, large, th) -> Verdict:
    s, l = need(small, "mlp.max_kl", "small"), need(large, "mlp.max_kl", "large")
    r = ratio_stat(l, s)
    return h006(s.value, l.value, min_ratio=th["min_ratio"], reject_below=th["reject_below"], lo=r.lo, hi=r.hi)


SPEC = HypothesisSpec(
    id="H006",
    text="MLP dominance scales with parameters",
    experiments=("mlp_ablation",),
    statistics=("mlp.max_kl",),
    rule=rule,
    thresholds={"min_ratio": 1.0, "reject_below": 1.0},
    evidence=("mlp.max_kl", "mlp.max_layer", "mlp.share_of_top_layer"),
    decisive=StatDecl("H006", "ratio", 0.0, math.inf, None),
    scaling=True,
    boundaries=lambda th: tuple(float(th[k]) for k in ("reject_below", "min_ratio") if k in th),
)
