"""H008: adapter norm predicts functional impact."""

from __future__ import annotations

from atlas_core.spec import HypothesisSpec, StatDecl
from atlas_core.stat import INCONCLUSIVE, PARTIAL, REJECTED, SUPPORTED, WEAKENED, Verdict, bounds
from atlas_core.verdicts import need


def h008(
    small_r: float,
    large_r: float,
    *,
    high: float,
    low: float,
    drop_tolerance: float,
    lo=None,
    hi=None,
    small_rho: float | None = None,
    large_rho: float | None = None,
) -> Verdict:
    """Adapter norm vs ablation effect (Pearson r, as the study): rejected if the large model's r < ``low``;
    weakened if r drops by more than ``drop_tolerance`` between scales; supported if >= ``high`` at
    both; partially supported otherwise. Spearman's rho, where given, is reported with the evidence
    (it does not enter the rule: the study's verdict is about r)."""
    r_lo, r_hi = bounds(large_r, lo, hi)
    if r_hi < low:
        verdict = REJECTED
    elif r_lo < low:
        verdict = INCONCLUSIVE  # the large model's interval holds the rejection threshold
    elif small_r - large_r > drop_tolerance:
        verdict = WEAKENED
    elif small_r >= high and large_r >= high:
        verdict = SUPPORTED
    else:
        verdict = PARTIAL
    return Verdict(
        "H008",
        verdict,
        "Pearson r (adapter norm vs effect), large",
        large_r,
        lo,
        hi,
        f"on the large r's interval: rejected if wholly < {low:g}, inconclusive if it holds {low:g}; weakened if r drops > {drop_tolerance:g}; "
        f"supported if both >= {high:g}; else partially supported",
        {
            "small_r": small_r,
            "large_r": large_r,
            "drop": small_r - large_r,
            **{k: v for k, v in (("small_rho", small_rho), ("large_rho", large_rho)) if v is not None},
        },
    )


def rule(small, large, th) -> Verdict:
    s, l = need(small, "adapter.pearson", "small"), need(large, "adapter.pearson", "large")
    rho = {
        f"{role}_rho": st["adapter.spearman"].value
        for role, st in (("small", small), ("large", large))
        if "adapter.spearman" in st
    }
    return h008(
        s.value, l.value, high=th["high"], low=th["low"], drop_tolerance=th["drop_tolerance"], lo=l.lo, hi=l.hi, **rho
    )


SPEC = HypothesisSpec(
    id="H008",
    text="Adapter norm predicts functional impact",
    experiments=("adapter_ablation",),
    statistics=("adapter.pearson",),
    rule=rule,
    thresholds={"high": 0.7, "low": 0.3, "drop_tolerance": 0.2},
    evidence=("adapter.pearson",),
    decisive=StatDecl("H008", "correlation", -1.0, 1.0, 0.0),
    boundaries=lambda th: tuple(float(th[k]) for k in ("low", "high") if k in th),
)
