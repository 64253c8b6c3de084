"""H002: specialist attention heads emerge at scale."""

from __future__ import annotations

import math
from dataclasses import replace

from atlas_core import AtlasError

from atlas_core.spec import HypothesisSpec, StatDecl
from atlas_core.stat import PARTIAL, Verdict, ratio_stat
from atlas_core.verdicts import need, ratio_rule


def h002(small_max_head_kl: float, large_max_head_kl: float, *, min_ratio: float, lo=None, hi=None) -> Verdict:
    """Supported if the strongest head is at least ``min_ratio`` times stronger at the large scale;
    partially supported if stronger but below that; rejected if not stronger, each on the ratio's interval
    (from the strongest heads' bootstrap intervals; inconclusive where it straddles a boundary; the points decide
    where a record keeps none). Measurable only where the
    head ablation swept every layer (``rule`` refuses otherwise): a max over sampled layers is a lower
    bound, and the ci profile's three layers skip L1, where Coder-1.5B's strongest head is."""
    return ratio_rule(
        "H002",
        "max head KL",
        small_max_head_kl,
        large_max_head_kl,
        min_ratio=min_ratio,
        reject_below=min(1.0, min_ratio),
        middle=PARTIAL,
        lo=lo,
        hi=hi,
    )


def rule(small, large, th) -> Verdict:
    for role, st in (("small", small), ("large", large)):
        cov = st.get("heads.layer_coverage")
        if cov is not None and cov.value is not None and cov.value < 1:
            raise AtlasError(
                f"H002 is not measurable here: the {role} model's head ablation swept {cov.label} "
                "(the strongest head may sit in a skipped layer); run head_ablation at the full "
                "profile, which sweeps every layer"
            )
    s, l = need(small, "heads.max_kl", "small"), need(large, "heads.max_kl", "large")
    r = ratio_stat(l, s)  # the interval: (lo_large / hi_small, hi_large / lo_small), where both carry one
    v = h002(s.value, l.value, min_ratio=th["min_ratio"], lo=r.lo, hi=r.hi)
    if r.lo is None:  # records of schema 2 (baselines made before 2026-12) keep no per-prompt head KL
        missing = [role for role, st in (("small", s), ("large", l)) if st.lo is None]
        who = "both models' records keep" if len(missing) == 2 else f"the {missing[0]} model's record keeps"
        v = replace(
            v,
            rule=v.rule + f"; no interval: {who} no per-prompt head KL (head_ablation records older than "
            "schema 3), so the points decide",
        )
    return v


SPEC = HypothesisSpec(
    id="H002",
    text="Specialist attention heads emerge at scale",
    experiments=("head_ablation",),
    statistics=("heads.max_kl",),
    rule=rule,
    thresholds={"min_ratio": 2.0},
    evidence=("heads.max_kl", "heads.max_layer_depth", "heads.layer_head_gap"),
    decisive=StatDecl("H002", "ratio", 0.0, math.inf, None),
    scaling=True,
    boundaries=lambda th: (min(1.0, float(th["min_ratio"])), float(th["min_ratio"])),
)
