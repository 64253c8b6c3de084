"""H003: steering leverage scales with capacity."""

from __future__ import annotations

from atlas_core import AtlasError

from atlas_core.spec import HypothesisSpec, StatDecl
from atlas_core.stat import REJECTED, WEAKENED, Stat, Verdict, banded, ratio_stat
from atlas_core.verdicts import need


def h003(
    small_boost: float,
    large_boost: float,
    *,
    min_ratio: float,
    reject_below: float,
    min_boost: float = 0.01,
    lo=None,
    hi=None,
) -> Verdict:
    """Leverage ratio large / max(small, ``min_boost``): supported if >= ``min_ratio``, rejected if
    < ``reject_below``, weakened in between; rejected when neither model reaches ``min_boost``.

    A small-scale boost below ``min_boost`` (default one point of target probability, a threshold the
    claims file sets) means the small model has no steering leverage to scale from. It counts as
    ``min_boost``, so the ratio stays finite and says how far the large model's leverage rises above
    none (the former rule divided by it and called any large boost infinitely scaled)."""
    if reject_below > min_ratio:
        raise AtlasError(
            f"H003: reject_below ({reject_below}) must not exceed min_ratio ({min_ratio}) in the claims file"
        )
    den = max(small_boost, min_boost)
    r = large_boost / den
    if small_boost < min_boost and large_boost < min_boost:
        verdict = REJECTED  # no leverage at either scale: nothing scaled
    else:
        verdict = banded(r, lo, hi, support_at=min_ratio, reject_below=reject_below, middle=WEAKENED, scaling=True)
    return Verdict(
        "H003",
        verdict,
        f"best steering boost ratio large/max(small, {min_boost:g})",
        r,
        lo,
        hi,
        f"on the interval: supported if >= {min_ratio:g}"
        + (" and above 1" if min_ratio <= 1 else "")
        + f", rejected if < {reject_below:g} or "
        f"both boosts < {min_boost:g}, weakened if wholly between, else inconclusive",
        {"small": small_boost, "large": large_boost},
    )


def rule(small, large, th) -> Verdict:
    name = "steering." + str(th.get("boost", "best_boost"))  # best_boost, or study_layer_best_boost
    s, l = need(small, name, "small"), need(large, name, "large")
    floor = th["min_boost"]
    den = Stat(
        max(s.value, floor), None if s.lo is None else max(s.lo, floor), None if s.hi is None else max(s.hi, floor)
    )
    r = ratio_stat(l, den)
    return h003(
        s.value, l.value, min_ratio=th["min_ratio"], reject_below=th["reject_below"], min_boost=floor, lo=r.lo, hi=r.hi
    )


SPEC = HypothesisSpec(
    id="H003",
    text="Steering leverage scales with capacity",
    experiments=("steering",),
    statistics=(),
    rule=rule,
    optional=("boost",),
    thresholds={"min_ratio": 1.0, "reject_below": 0.5, "min_boost": 0.01, "boost": "best_boost"},
    evidence=("steering.best_boost", "steering.study_layer_best_boost"),
    decisive=StatDecl("H003", "ratio"),
    scaling=True,
    boundaries=lambda th: tuple(float(th[k]) for k in ("reject_below", "min_ratio") if k in th),
)
