"""The decision rules and finding statistics (atlas_core.verdicts), without any model.

- With the study's own numbers and the thresholds of its claims file, the rules give the study's
  eight verdicts (so the thresholds in the file are consistent with what the study concluded).
- Each rule's boundaries and its monotonicity in the decisive statistic (property-based).
- ``model_statistics`` on results built from the schema dataclasses reads the right fields.
"""

from __future__ import annotations

import math
import tomllib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atlas_core import AtlasError
from atlas_core.claims import CLAIMS_DIR, load_claims
from atlas_core.experiments.adapter_ablation import AdapterAblationResult
from atlas_core.experiments.efficiency import EfficiencyResult, SkipConfig
from atlas_core.experiments.head_ablation import HeadAblationResult, HeadScore
from atlas_core.experiments.knockout import KnockoutLayer, KnockoutResult
from atlas_core.experiments.layer_ablation import LayerAblationResult, LayerSweep
from atlas_core.experiments.mlp_ablation import MLPAblationResult
from atlas_core.experiments.steering import SteeringResult
from atlas_core.experiments.transfer import TransferResult
from atlas_core.metrics import Estimate
from atlas_core.results import unstructure
from atlas_core.hypotheses.h001 import h001
from atlas_core.hypotheses.h002 import h002
from atlas_core.hypotheses.h003 import h003
from atlas_core.hypotheses.h004 import h004
from atlas_core.hypotheses.h005 import h005
from atlas_core.hypotheses.h006 import h006
from atlas_core.hypotheses.h007 import h007
from atlas_core.hypotheses.h008 import h008
from atlas_core.verdicts import (
    PARTIAL,
    REJECTED,
    SUPPORTED,
    VERDICTS,
    WEAKENED,
    Stat,
    decide,
    final_fraction,
    model_statistics,
    relative_depth,
)

STUDY = CLAIMS_DIR / "study-qwen2.5-1.5b.toml"
ORDER = {REJECTED: 0, WEAKENED: 1, PARTIAL: 2, SUPPORTED: 3}


def _study_stats(s: dict) -> dict[str, Stat]:
    """The study's published numbers as the statistics the rules read."""
    n = s["n_layers"]
    return {
        "hub.top_layer": Stat(float(s["hub_layer"]), kind="index"),
        "hub.top_layer_depth": Stat(relative_depth(s["hub_layer"], n)),
        "heads.max_kl": Stat(s["max_head_kl"]),
        "steering.best_boost": Stat(s["best_boost"]),
        "steering.study_layer_best_boost": Stat(s["best_boost"]),
        "knockout.best_selectivity": Stat(s["best_selectivity"]),
        "transfer.zone_final_fraction": Stat(final_fraction(s["transfer_zone"], n)),
        "mlp.max_kl": Stat(s["max_mlp_kl"]),
        "efficiency.best_top5_overlap": Stat(s["best_top5_overlap"]),
        # the study's best configuration is mid-layer (skip_mid_5: layers 4-8 of 28; at 0.5B all gave 0%)
        "efficiency.best_mid_top5_overlap": Stat(s["best_top5_overlap"]),
        "adapter.pearson": Stat(s["adapter_pearson"]),
    }


@pytest.mark.parametrize("hid", [f"H00{i}" for i in range(1, 9)])
def test_study_numbers_give_study_verdicts(hid):
    data = tomllib.loads(STUDY.read_text())
    cf = load_claims(STUDY)
    small, large = _study_stats(data["study"]["small"]), _study_stats(data["study"]["large"])
    expected = next(c.expected_verdict for c in cf.claims if c.statistic == hid and c.kind == "verdict")
    v = decide(hid, small, large, cf.thresholds[hid])
    assert v.verdict == expected, f"{hid}: {v.verdict} from the study's numbers, the study says {expected} ({v.rule})"
    for c in cf.claims:  # the file's statistic claims agree with the study's own numbers
        if c.statistic == hid and c.kind == "value":
            assert abs(v.value - c.expected) <= c.tolerance, f"{c.id}: {v.value} vs {c.expected}"
        elif c.statistic == hid and c.kind == "at_least":
            assert v.value >= c.threshold
        elif c.statistic == hid and c.kind == "at_most":
            assert v.value <= c.threshold


def test_depth_helpers():
    assert relative_depth(0, 28) == 0.0 and relative_depth(27, 28) == 1.0
    assert final_fraction([27, 26, 25], 28) == pytest.approx(3 / 28)
    assert final_fraction([23, 22, 21], 24) == pytest.approx(0.125)


def test_rule_boundaries():
    assert h001(0.5, 0.6, tolerance=0.1).verdict == SUPPORTED
    assert h001(0.5, 0.61, tolerance=0.1).verdict == REJECTED
    assert h002(0.1, 0.2, min_ratio=2.0).verdict == SUPPORTED
    assert h002(0.1, 0.15, min_ratio=2.0).verdict == PARTIAL
    assert h002(0.1, 0.05, min_ratio=2.0).verdict == REJECTED
    h3 = dict(min_ratio=1.0, reject_below=0.5, min_boost=0.01)
    assert h003(0.2, 0.2, **h3).verdict == WEAKENED  # no change between the scales is no scaling
    assert h003(0.2, 0.21, **h3).verdict == SUPPORTED
    assert h003(0.2, 0.15, **h3).verdict == WEAKENED
    assert h003(0.2, 0.05, **h3).verdict == REJECTED
    h4 = dict(min_ratio=0.5, reject_below=0.1, min_selectivity=1.0)
    assert h004(4.0, 3.0, **h4).verdict == SUPPORTED
    assert h004(4.0, 1.5, **h4).verdict == WEAKENED  # keeps 37.5%: selective, but less so
    assert h004(4.0, 0.9, **h4).verdict == REJECTED  # the large model is not selective
    assert h004(4.0, 0.3, **h4).verdict == REJECTED
    h5 = dict(max_fraction=0.5, tolerance=0.1)
    assert h005(0.125, 0.214, **h5).verdict == SUPPORTED  # the study's zones
    assert h005(0.375, 0.25, **h5).verdict == REJECTED  # the Coder pair's zones
    assert h005(0.0, 0.05, **h5).verdict == REJECTED  # no zone at the small scale
    assert h005(0.6, 0.6, **h5).verdict == REJECTED  # a zone over most of the model is no zone
    assert h006(2.0, 1.0, min_ratio=1.0, reject_below=1.0).verdict == REJECTED
    assert h006(2.0, 2.5, min_ratio=1.0, reject_below=1.0).verdict == SUPPORTED
    h7 = dict(threshold=0.5, min_gain=0.05)
    assert h007(0.0, 0.10, **h7).verdict == PARTIAL  # the study: 0% -> 10%
    assert h007(0.2, 0.9, **h7).verdict == SUPPORTED
    assert h007(0.902, 0.910, **h7).verdict == REJECTED  # the Coder pair: 90.2% -> 91%, no emergence
    assert h007(0.9, 0.5, **h7).verdict == REJECTED
    assert h008(0.9, 0.85, high=0.7, low=0.3, drop_tolerance=0.2).verdict == SUPPORTED
    assert h008(0.9, 0.6, high=0.7, low=0.3, drop_tolerance=0.2).verdict == WEAKENED
    assert h008(0.6, 0.5, high=0.7, low=0.3, drop_tolerance=0.2).verdict == PARTIAL
    assert h008(0.9, 0.2, high=0.7, low=0.3, drop_tolerance=0.2).verdict == REJECTED
    # Spearman's rho is evidence beside r, never the rule: r decides, as in the study
    v = h008(0.86, -0.05, high=0.7, low=0.3, drop_tolerance=0.2, small_rho=0.82, large_rho=0.8)
    assert v.verdict == REJECTED and v.evidence["large_rho"] == 0.8 and v.evidence["small_rho"] == 0.82
    assert "large_rho" not in h008(0.9, 0.85, high=0.7, low=0.3, drop_tolerance=0.2).evidence


def test_h003_has_no_infinite_ratio():
    """A small-scale boost of 0 (Coder-0.5B at L2) is no leverage: it counts as min_boost, so the ratio is
    finite and grows with the large model's boost; no leverage at either scale is rejected."""
    h3 = dict(min_ratio=1.0, reject_below=0.5, min_boost=0.01)
    v = h003(0.0, 0.142, **h3)
    assert math.isfinite(v.value) and v.value == pytest.approx(14.2) and v.verdict == SUPPORTED
    assert h003(0.0, 0.004, **h3).verdict == REJECTED  # neither resolves a boost
    assert h003(0.0, 0.008, **h3).verdict == REJECTED
    assert h003(0.213, 0.003, **h3).verdict == REJECTED  # the study


def test_h004_needs_a_selective_small_model():
    """Two anti-selective models (the Coder pair at ci: 0.30x and 0.26x) preserve nothing: rejected,
    where the former ratio rule said supported (0.26 / 0.30 = 0.84 >= 0.5)."""
    h4 = dict(min_ratio=0.5, reject_below=0.1, min_selectivity=1.0)
    v = h004(0.3049, 0.2574, **h4)
    assert v.verdict == REJECTED and v.value == pytest.approx(0.2574 / 0.3049) and "not selective" in v.rule
    assert h004(-1.0, 2.0, **h4).verdict == REJECTED  # selectivity appearing at scale is not preserved selectivity
    assert h004(11654.0, 0.24, **h4).verdict == REJECTED  # the study


def test_h002_is_not_measurable_on_sampled_head_layers():
    small = {"heads.max_kl": Stat(0.9), "heads.layer_coverage": Stat(3 / 24, label="3 of 24 layers")}
    large = {"heads.max_kl": Stat(0.3), "heads.layer_coverage": Stat(1.0, label="28 of 28 layers")}
    with pytest.raises(AtlasError, match="H002 is not measurable here: the small model's head ablation swept 3 of 24"):
        decide("H002", small, large, {"min_ratio": 2.0})
    full = {**small, "heads.layer_coverage": Stat(1.0)}
    assert decide("H002", full, large, {"min_ratio": 2.0}).verdict == REJECTED


def test_bad_thresholds_are_clear_errors():
    with pytest.raises(AtlasError, match="reject_below"):
        h003(0.2, 0.1, min_ratio=0.5, reject_below=1.0)
    with pytest.raises(AtlasError, match=r"thresholds.H003.*reject_below"):
        decide("H003", {"steering.best_boost": Stat(0.1)}, {"steering.best_boost": Stat(0.1)}, {"min_ratio": 1.0})
    with pytest.raises(AtlasError, match="heads.max_kl of the large model is missing"):
        decide("H002", {"heads.max_kl": Stat(0.1)}, {}, {"min_ratio": 2.0})
    with pytest.raises(AtlasError, match="unknown hypothesis"):
        decide("H009", {}, {}, {})


ratios = st.floats(0.001, 1000, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(small=ratios, a=ratios, b=ratios, lo=st.floats(0.01, 1.0), span=st.floats(0.0, 5.0))
def test_ratio_rules_monotone_in_the_large_model(small, a, b, lo, span):
    """More of the statistic at the large scale never gives a worse verdict (H002, H003, H004, H006)."""
    a, b = sorted((a, b))
    hi = lo + span
    for fn, kw in (
        (h003, dict(min_ratio=hi, reject_below=lo)),
        (h004, dict(min_ratio=hi, reject_below=lo)),
        (h006, dict(min_ratio=hi, reject_below=lo)),
        (h002, dict(min_ratio=hi)),
    ):
        va, vb = fn(small, a, **kw), fn(small, b, **kw)
        assert va.verdict in VERDICTS and vb.verdict in VERDICTS
        assert ORDER[va.verdict] <= ORDER[vb.verdict], (fn.__name__, small, a, b, kw)


@settings(max_examples=200, deadline=None)
@given(small=st.floats(-1, 1), large=st.floats(-1, 1))
def test_h008_total(small, large):
    v = h008(small, large, high=0.7, low=0.3, drop_tolerance=0.2)
    assert v.verdict in VERDICTS
    assert (v.verdict == REJECTED) == (large < 0.3)


def _est(v, half=0.1):
    return Estimate(v, v - half, v + half, 8)


def _sweep(target, values, families=("arithmetic", "copying")):
    layers = list(range(len(values)))
    ranking = sorted(layers, key=lambda i: -values[i])
    return LayerSweep(
        target=target,
        mode="zero",
        layers=layers,
        kl={f: list(values) for f in families},
        mean_kl=[_est(v) for v in values],
        family_mean_kl=list(values),
        argmax_match=[0.5] * len(values),
        ranking=ranking,
    )


def test_model_statistics_read_the_schema_fields():
    n = 6
    results = {
        "layer_ablation": LayerAblationResult(
            n, ["arithmetic", "copying"], [_sweep("delta", [9, 1, 1, 1, 1, 1]), _sweep("resid", [5, 6, 7, 12, 8, 9])]
        ),
        "mlp_ablation": MLPAblationResult(n, ["arithmetic", "copying"], [_sweep("mlp", [3, 1, 1, 1, 1, 2])]),
        "head_ablation": HeadAblationResult(
            n,
            2,
            [0, 5],
            ["arithmetic"],
            "zero",
            {"arithmetic": [[0.1, 0.7], [0.2, 0.3]]},
            HeadScore("arithmetic", 0, 1, 0.7),
            [],
        ),
        "steering": SteeringResult(
            "factual_recall",
            [0, 3],
            [-1.0, 1.0],
            [1.0, 2.0],
            0.1,
            [[0.1, 0.2], [0.1, 0.4]],
            [[0.0, 0.1], [0.0, 0.3]],
            [[0, 0], [0, 0]],
            best_layer=3,
            best_strength=1.0,
            best_boost=_est(0.3, 0.05),
            study_layer=0,
            study_layer_best_boost=_est(0.1, 0.05),
        ),
        "knockout": KnockoutResult(
            "factual_recall",
            -4.0,
            [KnockoutLayer(2, 1.0, _est(0.2), _est(0.1), 2.0), KnockoutLayer(4, 1.0, _est(0.1), _est(0.2), 0.5)],
            best_layer=2,
            best_selectivity=2.0,
        ),
        "transfer": TransferResult(
            list(range(n)),
            ["arithmetic"],
            {"arithmetic": [0, 0.2, 0.5, 0.9, 0.97, 1.0]},
            [_est(v, 0.01) for v in [0, 0.2, 0.5, 0.9, 0.97, 1.0]],
            {"arithmetic": 1.0},
            top_layers=[5, 4, 3, 2, 1, 0],
            zone=[4, 5],
            zone_threshold=0.95,
        ),
        "adapter_ablation": AdapterAblationResult(
            [0, 1, 2], [_est(1), _est(2), _est(3)], [1, 2, 3], 1.0, [0.9, 1.0], [2, 1, 0]
        ),
        "efficiency": EfficiencyResult(
            [
                SkipConfig("a", [1], _est(1), _est(0.0, 0), _est(0)),
                SkipConfig("b", [2, 3], _est(2), _est(0.2, 0.05), _est(0)),
            ],
            [],
            [0.1] * n,
        ),
    }
    s = model_statistics({k: unstructure(v) for k, v in results.items()}, n)
    assert s["hub.top_layer"].value == 3 and s["hub.ranking"].ranking[:2] == (3, 5)  # the primary sweep (resid)
    assert s["hub.top_layer_kl"].text() == "12 [11.9, 12.1] (L3)"
    assert s["hub.top_layer_depth"].value == pytest.approx(0.6)
    assert s["mlp.max_kl"].value == 3 and s["mlp.max_layer"].value == 0
    assert s["mlp.share_of_top_layer"].value == pytest.approx(0.25)
    assert s["heads.layer_coverage"].value == pytest.approx(2 / 6)  # layers 0 and 5 of 6 swept
    assert s["heads.max_kl"].value == 0.7 and s["heads.layer_head_gap"].value == pytest.approx(12 / 0.7)
    assert s["heads.family_max_kl.arithmetic"].label == "L0 H1"
    assert s["steering.best_boost"].value == 0.3 and s["steering.best_boost"].series["y"] == [0.0, 0.3]
    assert s["steering.study_layer_best_boost"].value == 0.1
    assert s["knockout.best_selectivity"].value == 2.0 and s["knockout.skill_drop"].value == 0.2
    assert s["transfer.final_recovery"].value == 1.0
    assert s["transfer.top_final_fraction"].value == pytest.approx(3 / 6)
    assert s["transfer.zone_final_fraction"].value == pytest.approx(2 / 6)
    assert s["adapter.pearson"].lo == 0.9
    rho = s["adapter.spearman"]  # norms 1, 2, 3 against KLs 1, 2, 3: the same order
    assert (rho.value, rho.kind, rho.n) == (pytest.approx(1.0), "estimate", 3) and rho.lo <= rho.value <= rho.hi
    assert s["efficiency.best_top5_overlap"].value == 0.2 and s["efficiency.best_top5_overlap"].label == "b"
    assert not math.isnan(s["hub.family_kl.copying"].value)


def test_a_tied_layer_ablation_has_no_hub():
    """Zeroing the whole residual of a bias-free model gives every layer the same KL: no top layer, no
    rank order, H001 rejected (a model without a hub cannot keep it at the same depth), and claims and
    comparisons say "tie" rather than reading L0 from a ranking broken by layer order."""
    from atlas_core.claims import compare_stats, evaluate, parse_claim

    n = 6
    tied = {
        "layer_ablation": unstructure(LayerAblationResult(n, ["arithmetic", "copying"], [_sweep("resid", [10.6] * n)]))
    }
    ranked = {
        "layer_ablation": unstructure(
            LayerAblationResult(n, ["arithmetic", "copying"], [_sweep("resid", [5, 6, 7, 12, 8, 9])])
        )
    }
    t, r = model_statistics(tied, n), model_statistics(ranked, n)
    for name in ("hub.top_layer", "hub.top_layer_depth", "hub.ranking"):
        assert t[name].value is None and t[name].tie and t[name].label == "all 6 layers tie", name
    assert t["hub.ranking"].ranking == ()
    assert t["hub.top_layer_kl"].value == pytest.approx(10.6) and not t["hub.top_layer_kl"].tie
    assert t["hub.top_layer"].text() == "none (all 6 layers tie)"
    assert not r["hub.top_layer"].tie and r["hub.top_layer"].value == 3

    for small, large in ((t, r), (r, t), (t, t)):
        v = decide("H001", small, large, {"tolerance": 1.0})  # any depth difference would pass
        assert v.verdict == REJECTED and v.value is None and "no hub" in v.rule

    rank = parse_claim(
        {"id": "r", "statistic": "hub.ranking", "model": "m", "kind": "rank", "layer": 0, "max_rank": 3},
        {"source": "measured"},
    )
    ev = evaluate(rank, [t], ["m"])
    assert not ev.passed and "layer 0 not ranked: all 6 layers tie" in ev.message
    depth = parse_claim(
        {
            "id": "d",
            "statistic": "hub.top_layer_depth",
            "model": "m",
            "kind": "value",
            "expected": 0.0,
            "tolerance": 0.1,
        },
        {"source": "measured"},
    )
    ev = evaluate(depth, [t], ["m"])
    assert not ev.passed and "measured none: all 6 layers tie" in ev.message

    rows = {row.statistic: row for row in compare_stats(r, t)}
    assert rows["hub.top_layer"].drifted and rows["hub.top_layer"].note == "tie"
    assert not {row.statistic: row for row in compare_stats(t, t)}["hub.top_layer"].drifted


@settings(max_examples=200, deadline=None)
@given(small=st.floats(0, 1), a=st.floats(0, 1), b=st.floats(0, 1))
def test_h007_compares_the_scales(small, a, b):
    """More overlap at the large scale never gives a worse verdict; without a gain of min_gain over the
    small model it is rejected, however high the large model's overlap."""
    a, b = sorted((a, b))
    va, vb = (h007(small, x, threshold=0.5, min_gain=0.05) for x in (a, b))
    assert ORDER[va.verdict] <= ORDER[vb.verdict]
    assert (va.verdict == REJECTED) == (a - small < 0.05)


@settings(max_examples=200, deadline=None)
@given(small=st.floats(0, 1), large=st.floats(0, 1))
def test_h005_symmetric_in_the_scales(small, large):
    kw = dict(max_fraction=0.5, tolerance=0.1)
    assert h005(small, large, **kw).verdict == h005(large, small, **kw).verdict
    assert (h005(small, large, **kw).verdict == SUPPORTED) == (
        abs(small - large) <= 0.1 and 0 < small <= 0.5 and 0 < large <= 0.5
    )
