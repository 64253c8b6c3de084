"""H004: skill knockout selectivity is preserved at scale."""

from __future__ import annotations

from atlas_core import AtlasError
from atlas_core.spec import HypothesisSpec, StatDecl
from atlas_core.stat import (
    INCONCLUSIVE,
    REJECTED,
    WEAKENED,
    Stat,
    Verdict,
    banded,
    bounds,
    ratio,
    ratio_stat,
)
from atlas_core.verdicts import need


def h004(
    small_selectivity: float,
    large_selectivity: float,
    *,
    min_ratio: float,
    reject_below: float,
    min_selectivity: float = 1.0,
    small_range=None,
    large_range=None,
    lo=None,
    hi=None,
) -> Verdict:
    """Selectivity preserved: the small model must be selective first (best selectivity >=
    ``min_selectivity``: the skill drops more than the rest), else rejected (nothing to preserve; the
    former rule called two anti-selective models "preserved"). Then supported if the large model is
    selective too and keeps >= ``min_ratio`` of the small one's selectivity; rejected if it is not
    selective or keeps < ``reject_below``; weakened in between. Each step reads its interval where measured
    (``*_range``: the selectivities', ``lo``/``hi``: the ratio's): a threshold inside one is inconclusive."""
    if reject_below > min_ratio:
        raise AtlasError(
            f"H004: reject_below ({reject_below}) must not exceed min_ratio ({min_ratio}) in the claims file"
        )
    ev = {"small": small_selectivity, "large": large_selectivity}
    rule = (
        f"on the intervals: rejected if small < {min_selectivity:g}x (not selective) or large < {min_selectivity:g}x or ratio < "
        f"{reject_below:g}; supported if ratio >= {min_ratio:g}; weakened if wholly between; else inconclusive"
    )
    name = "best knockout selectivity ratio large/small"
    s_lo, s_hi = bounds(small_selectivity, *(small_range or (None, None)))
    l_lo, l_hi = bounds(large_selectivity, *(large_range or (None, None)))
    if s_hi < min_selectivity:
        r = ratio(large_selectivity, small_selectivity) if small_selectivity > 0 else float("nan")
        return Verdict("H004", REJECTED, name, r, lo, hi, rule, ev)
    r = large_selectivity / small_selectivity if small_selectivity else float("nan")
    if l_hi < min_selectivity:
        return Verdict("H004", REJECTED, name, r, lo, hi, rule, ev)
    verdict = banded(r, lo, hi, support_at=min_ratio, reject_below=reject_below, middle=WEAKENED, scaling=False)
    if verdict != REJECTED and (s_lo < min_selectivity or l_lo < min_selectivity):
        verdict = INCONCLUSIVE  # a model's selectivity interval holds the "selective" threshold
    return Verdict("H004", verdict, name, r, lo, hi, rule, ev)


def rule(small, large, th) -> Verdict:
    s, l = need(small, "knockout.best_selectivity", "small"), need(large, "knockout.best_selectivity", "large")
    sel = {}
    for role, st in (("small", small), ("large", large)):  # skill drop / non-skill drop at the best layer
        skill, rest = st.get("knockout.skill_drop"), st.get("knockout.nonskill_drop")
        sel[role] = ratio_stat(skill, rest) if skill is not None and rest is not None else Stat(None)
    r = ratio_stat(Stat(l.value, sel["large"].lo, sel["large"].hi), Stat(s.value, sel["small"].lo, sel["small"].hi))
    rng = {k: None if v.lo is None else (v.lo, v.hi) for k, v in sel.items()}
    return h004(
        s.value,
        l.value,
        min_ratio=th["min_ratio"],
        reject_below=th["reject_below"],
        min_selectivity=th["min_selectivity"],
        small_range=rng["small"],
        large_range=rng["large"],
        lo=r.lo,
        hi=r.hi,
    )


SPEC = HypothesisSpec(
    id="H004",
    text="Skill knockout selectivity preserved at scale",
    experiments=("knockout",),
    statistics=("knockout.best_selectivity",),
    rule=rule,
    thresholds={"min_ratio": 0.5, "reject_below": 0.1, "min_selectivity": 1.0},
    evidence=("knockout.best_selectivity", "knockout.best_layer_depth"),
    decisive=StatDecl("H004", "ratio"),
    boundaries=lambda th: tuple(float(th[k]) for k in ("reject_below", "min_ratio") if k in th),
)
