"""H004: skill knockout selectivity is preserved at scale."""

from __future__ import annotations

from atlas_core import AtlasError
from atlas_core.spec import HypothesisSpec
from atlas_core.stat import REJECTED, SUPPORTED, WEAKENED, Verdict, ratio
from atlas_core.verdicts import need


def h004(small_selectivity: float, large_selectivity: float, *, min_ratio: float, reject_below: float,
         min_selectivity: float = 1.0) -> Verdict:
    """Selectivity preserved: the small model must be selective first (best selectivity >=
    ``min_selectivity``: the skill drops more than the rest), else rejected (nothing to preserve; the
    former rule called two anti-selective models "preserved"). Then supported if the large model is
    selective too and keeps >= ``min_ratio`` of the small one's selectivity; rejected if it is not
    selective or keeps < ``reject_below``; weakened in between."""
    if reject_below > min_ratio:
        raise AtlasError(f"H004: reject_below ({reject_below}) must not exceed min_ratio ({min_ratio}) in the claims file")
    ev = {"small": small_selectivity, "large": large_selectivity}
    rule = (f"rejected if small < {min_selectivity:g}x (not selective) or large < {min_selectivity:g}x or ratio < "
            f"{reject_below:g}; supported if ratio >= {min_ratio:g}; else weakened")
    if small_selectivity < min_selectivity:
        r = ratio(large_selectivity, small_selectivity) if small_selectivity > 0 else float("nan")
        return Verdict("H004", REJECTED, "best knockout selectivity ratio large/small", r, None, None, rule, ev)
    r = large_selectivity / small_selectivity
    if large_selectivity < min_selectivity or r < reject_below:
        verdict = REJECTED
    else:
        verdict = SUPPORTED if r >= min_ratio else WEAKENED
    return Verdict("H004", verdict, "best knockout selectivity ratio large/small", r, None, None, rule, ev)


def rule(small, large, th) -> Verdict:
    s, l = need(small, "knockout.best_selectivity", "small"), need(large, "knockout.best_selectivity", "large")
    return h004(s.value, l.value, min_ratio=th["min_ratio"], reject_below=th["reject_below"],
                min_selectivity=th["min_selectivity"])


SPEC = HypothesisSpec(
    id="H004", text="Skill knockout selectivity preserved at scale", experiments=("knockout",),
    statistics=("knockout.best_selectivity",), rule=rule,
    thresholds={"min_ratio": 0.5, "reject_below": 0.1, "min_selectivity": 1.0},
    evidence=("knockout.best_selectivity", "knockout.best_layer_depth"),
)
