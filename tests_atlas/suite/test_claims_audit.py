"""Claims that tell models apart: the audit of every shipped claims file with committed evidence, verdicts that
read their intervals, and statistics that declare what they are.

Stored results only (the committed full-profile baselines), no model weights."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import pytest

from atlas_core.claim_hygiene import refusal
from atlas_core.claims import CLAIMS_DIR, evaluate, load_claims, parse_claim
from atlas_core.claims.audit import audit, baseline_runs, find_evidence
from atlas_core.claims.bounds import where_claims
from atlas_core.report.sections import stat_kind
from atlas_core.runs import load_run
from atlas_core.spec import ExperimentSpec, StatDecl, declaration, hypotheses, register, unregister
from atlas_core.stat import INCONCLUSIVE, PARTIAL, SUPPORTED, Stat
from atlas_core.verdicts import decide, model_statistics, ratio_rule
from atlas_core.layers import profile_stat, relabel

FULL = CLAIMS_DIR / "coder-pair-full.toml"
SCALING = ("H002", "H003", "H006", "H007")


@functools.lru_cache(maxsize=None)
def _stats(model: str) -> dict:
    return load_run(next(p for p in baseline_runs("full") if p.name.startswith(model))).stats


@pytest.fixture(scope="module")
def full_audit():
    return audit(FULL, baseline_runs())


def _with_evidence():
    """Every shipped claims file whose claimed models have committed baselines at its profile."""
    out = []
    for path in sorted(CLAIMS_DIR.glob("*.toml")):
        cf = load_claims(path)
        pool = find_evidence(cf, baseline_runs())
        if cf.models and all(any(m == n for n in pool) for m in cf.models):
            out.append(path)
    return out


def test_every_shipped_file_with_evidence_passes_its_audit(full_audit):
    """Each claims file with committed evidence holds on it, and every claim that is not a declared invariant
    fails under some wrong input (the models swapped, Gemma-3-270M substituted, the same model twice, the
    layers reversed or shuffled with 5 seeds)."""
    files = _with_evidence()
    assert FULL in files  # the ci file's runs are recomputed in the pair tier; the study file has no runs
    for path in files:
        a = full_audit if path == FULL else audit(path, baseline_runs())
        print(a.table())
        assert not a.wrong_on_right, [r.claim.id for r in a.wrong_on_right]
        assert a.ok, a.table()


def test_full_file_meets_the_aims(full_audit):
    """coder-pair-full.toml: at least its former 87 claims, invariants at most 10% (each with its reason), no
    verdict claim expects inconclusive, no scaling hypothesis passes as supported on the same model twice, and
    every model x experiment with per-layer arrays has a claim that fails under the reversal and each shuffle."""
    a = full_audit
    assert len(a.rows) >= 87
    assert len(a.invariants) <= 0.1 * len(a.rows) and all(r.claim.invariant.strip() for r in a.invariants)
    assert not [r for r in a.rows if r.claim.kind == "verdict" and r.claim.expected_verdict == INCONCLUSIVE]
    for r in a.rows:
        if r.claim.kind == "verdict" and r.claim.hypothesis in SCALING:
            assert not r.outcomes["same model twice (small)"] and not r.outcomes["same model twice (large)"], r.claim.id
    groups: dict[tuple, list] = {}
    for r in a.rows:
        if r.finding and r.claim.statistic.split(".")[0] != "lora":  # LoRA training has no per-layer arrays
            groups.setdefault((r.claim.models[0], r.claim.statistic.split(".")[0]), []).append(r)
    reorders = ["reversed"] + [f"shuffled seed {s}" for s in range(5)]
    for g, rows in groups.items():
        for label in reorders:
            assert any(not r.outcomes[label] for r in rows), (g, label)
    # the swap: 60 of 152 finding claims (39%) passed before per-layer claims and interval tolerances, 64 of 283
    # (23%) before values read at an item named it; now at most 15% of the claims on absolute quantities (those in
    # relative depth may hold on a model of another depth, and must fail a reordering instead)
    passed, fed = a.claims_passing("swapped", True, absolute=True)
    assert fed >= 250 and passed / fed <= 0.15, (passed, fed)
    assert not a.order_blind, [r.claim.id for r in a.order_blind]


def test_value_claims_survive_a_rerun_at_another_thread_count():
    """No false alarm: every value claim of the full file allows at least 3 golden tolerances of its experiment
    (each about 3x the deviation fixtures/golden/thread_deviation.py measured between CPUs and thread counts),
    so a rerun of the same prompts cannot fail it; the rule that sets them says so."""
    from atlas_core.claims.bounds import RERUN_MARGIN, _golden_rel, value_tolerance

    cf = load_claims(FULL)
    values = [c for c in cf.claims if c.kind == "value" and not c.hypothesis]
    floor = [RERUN_MARGIN * _golden_rel(c.statistic) * abs(c.expected) * (1 - 1e-5) for c in values]  # 6 digits kept
    assert values and all(c.tolerance >= f for c, f in zip(values, floor))
    # an interval narrower than that is widened to it: 18.35 [18.349, 18.351] over 96 prompts -> +- 3 * 3e-4 * 18.35
    tight = Stat(18.35, 18.349, 18.351, 96, kind="estimate")
    assert value_tolerance(tight, 2.0, 0.01, 0.1, "hub.top_layer_kl") == pytest.approx(RERUN_MARGIN * 3e-4 * 18.35)
    # over few prompts, or with no interval, the loose rule: 10% of the value
    assert value_tolerance(
        Stat(18.35, 17.0, 19.7, 12, kind="estimate"), 2.0, 0.01, 0.1, "hub.top_layer_kl"
    ) == pytest.approx(2.7)
    assert value_tolerance(Stat(18.35), 2.0, 0.01, 0.1, "hub.top_layer_kl") == pytest.approx(1.835)


def test_a_profile_over_absolute_layers_fails_on_a_model_of_another_depth():
    """A profile claim names the number of layers it was measured over: the same shape read off a deeper model
    (the first 24 of 28 layers agreeing exactly) fails, naming both depths."""
    from atlas_core.layers import profile_stat

    ys = [0.05, 0.1, 0.9, 0.3, 0.2, 0.15, 0.1, 0.05]
    own = {"toy": profile_stat(list(range(8)), ys, 8)}
    meta = {"models": ["m"]}
    c = parse_claim(
        {
            "id": "p",
            "model": "m",
            "statistic": "hub.ranking",
            "kind": "profile",
            "items": list(range(8)),
            "profile": ys,
            "min_rho": 0.9,
            "n_items": 8,
        },
        meta,
    )
    deeper = profile_stat(list(range(10)), ys + [0.01, 0.02], 10)
    assert evaluate(c, [{"hub.ranking": own["toy"]}], ["m"]).passed
    ev = evaluate(c, [{"hub.ranking": deeper}], ["m"])
    assert not ev.passed and "has 10 layers, the expected one 8" in ev.message, ev.message


def test_a_top_layer_or_top_k_on_absolute_layers_fails_on_a_model_of_another_depth_but_relative_depth_may_pass():
    """The top layer (L2 of 8) and the top-3 set read off a deeper model whose top is still L2 fail, naming both
    depths; the claim on the top's relative depth reads the deeper model's own depth and is judged on it."""
    from atlas_core.layers import profile_stat

    ys = [0.05, 0.1, 0.9, 0.3, 0.2, 0.15, 0.1, 0.05]
    meta = {"models": ["m"]}
    own, deeper = profile_stat(list(range(8)), ys, 8), profile_stat(list(range(10)), ys + [0.01, 0.02], 10)
    loc = parse_claim(
        {
            "id": "l",
            "model": "m",
            "statistic": "hub.ranking",
            "kind": "location",
            "layer": 2,
            "within": 0,
            "n_items": 8,
        },
        meta,
    )
    top = parse_claim(
        {
            "id": "t",
            "model": "m",
            "statistic": "hub.ranking",
            "kind": "top_k",
            "layers": [2, 3, 4],
            "min_common": 3,
            "n_items": 8,
        },
        meta,
    )
    depth = parse_claim(
        {
            "id": "d",
            "model": "m",
            "statistic": "hub.ranking",
            "kind": "location",
            "depth": 2 / 7,
            "tolerance": 0.05,
            "n_items": 8,
        },
        meta,
    )
    for c in (loc, top, depth):
        assert evaluate(c, [{"hub.ranking": own}], ["m"]).passed, c.id
    for c in (loc, top):
        ev = evaluate(c, [{"hub.ranking": deeper}], ["m"])
        assert not ev.passed and "has 10 layers, the expected one 8" in ev.message, ev.message
    ev = evaluate(depth, [{"hub.ranking": deeper}], ["m"])
    assert "relative depth 0.222 of 10 layers" in ev.message and not ev.passed, ev.message  # 2/9 vs 2/7: moved


def test_the_audit_fails_on_a_claim_that_passes_every_wrong_input(tmp_path):
    """Without its declared reason, the knockout's collateral-drop claim (the same on every model) fails the
    audit, named; a location claim beside it fails under the wrong inputs and passes the audit."""
    import tomllib

    from atlas_core.claims.writing import _v

    data = tomllib.loads(FULL.read_text())
    keep = [
        c
        for c in data["claim"]
        if c["id"]
        in ("qwen2.5-coder-0.5b-instruct:knockout.nonskill_drop", "qwen2.5-coder-0.5b-instruct:hub.ranking.top")
    ]
    lines = ["[meta]"] + [f"{k} = {_v(v)}" for k, v in data["meta"].items() if k != "provenance"]
    for c in keep:
        lines += ["[[claim]]"] + [f"{k} = {_v(v)}" for k, v in c.items() if k != "invariant"]
    path = tmp_path / "blind.toml"
    path.write_text("\n".join(lines) + "\n")
    a = audit(path, baseline_runs(), seeds=(0,))
    assert [r.claim.id for r in a.blind] == ["qwen2.5-coder-0.5b-instruct:knockout.nonskill_drop"] and not a.ok
    assert "FAIL: 1 claim(s) pass under every wrong input" in a.table()
    print(a.table())


@pytest.mark.parametrize("hid", SCALING)
def test_scaling_hypotheses_are_never_supported_on_the_same_model_twice(hid):
    """Support means a change between the scales: each Coder model as both small and large is neither supported
    nor partially supported, with or without intervals (the points alone: a ratio of exactly 1, a gain of 0)."""
    th = load_claims(FULL).thresholds[hid]
    for m in ("qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct"):
        stats = _stats(m)
        v = decide(hid, stats, stats, th)
        assert v.verdict not in (SUPPORTED, PARTIAL), (hid, m, v)
        points = {k: Stat(s.value, kind=s.kind, ranking=s.ranking, label=s.label, tie=s.tie) for k, s in stats.items()}
        assert decide(hid, points, points, th).verdict not in (SUPPORTED, PARTIAL), (hid, m)
    assert hypotheses()[hid].scaling


def test_a_ratio_whose_interval_straddles_the_threshold_is_inconclusive():
    """The same point decides alone, but its interval across the support threshold leaves the verdict open."""
    kw = dict(min_ratio=2.0, reject_below=1.0, middle=PARTIAL)
    assert ratio_rule("H002", "x", 1.0, 3.0, **kw).verdict == SUPPORTED
    v = ratio_rule("H002", "x", 1.0, 3.0, lo=1.5, hi=4.0, **kw)
    assert v.verdict == INCONCLUSIVE and "inconclusive" in v.rule
    assert ratio_rule("H002", "x", 1.0, 3.0, lo=2.1, hi=4.0, **kw).verdict == SUPPORTED
    h3 = {"min_ratio": 1.0, "reject_below": 0.5, "min_boost": 0.01}
    small, large = {"steering.best_boost": Stat(0.1, 0.05, 0.15)}, {"steering.best_boost": Stat(0.12, 0.06, 0.2)}
    assert decide("H003", small, large, h3).verdict == INCONCLUSIVE  # [0.4, 4] holds 0.5 and 1
    tight = {"steering.best_boost": Stat(0.3, 0.25, 0.35)}
    assert decide("H003", small, tight, h3).verdict == SUPPORTED  # [1.67, 7]


def test_h002_decides_on_the_interval_of_the_strongest_heads_and_says_when_points_decide():
    """Records of schema 3 keep the strongest head's KL interval: H002's ratio interval decides (supported only
    when it clears min_ratio, inconclusive across it). Records of schema 2 keep none: the points decide, and the
    rule says so. The committed baselines are of schema 3: on them the interval decides."""
    th = {"min_ratio": 2.0}

    def heads(v, lo=None, hi=None):
        return {
            "heads.max_kl": Stat(v, lo, hi, kind="estimate" if lo is not None else "value"),
            "heads.layer_coverage": Stat(1.0),
        }

    assert decide("H002", heads(0.1, 0.08, 0.12), heads(0.5, 0.4, 0.6), th).verdict == SUPPORTED  # [3.3, 7.5]
    v = decide("H002", heads(0.1, 0.05, 0.2), heads(0.5, 0.3, 0.7), th)  # [1.5, 14]: holds 2
    assert v.verdict == INCONCLUSIVE and (v.lo, v.hi) == pytest.approx((1.5, 14.0)) and "points decide" not in v.rule
    points = decide("H002", heads(0.1), heads(0.5), th)  # the same points, no interval (a schema 2 record)
    assert points.verdict == SUPPORTED and "older than schema 3), so the points decide" in points.rule
    one = decide("H002", heads(0.1), heads(0.5, 0.4, 0.6), th)
    assert one.lo is None and "the small model's record keeps no per-prompt head KL" in one.rule
    # the committed pair: 0.933 -> 1.41 nats, a point ratio of 1.51 whose interval holds min_ratio
    on_baselines = decide("H002", _stats("qwen2.5-coder-0.5b-instruct"), _stats("qwen2.5-coder-1.5b-instruct"), th)
    assert on_baselines.verdict == INCONCLUSIVE and on_baselines.value == pytest.approx(1.512, abs=1e-3)
    assert on_baselines.lo < th["min_ratio"] < on_baselines.hi and "points decide" not in on_baselines.rule


def test_a_verdict_claim_expecting_inconclusive_is_refused():
    meta = {"models": ["a", "b"]}
    c = parse_claim({"id": "H003", "statistic": "H003", "expected_verdict": "inconclusive"}, meta)
    assert "a claim states a finding" in refusal(c, {"H003": {"min_ratio": 1.0, "reject_below": 0.5}})


# -------------------------------------------------------------------------------------------------
# a new statistic, declared once


@dataclass
class ToyResult:
    layers: list[int]
    share: list[float]


def _toy_stats(result: ToyResult, n_layers: int, results: dict) -> dict:
    return {
        "toy.share_top": Stat(max(result.share), 0.0, 1.0, kind="estimate"),
        "toy.profile": profile_stat(result.layers, result.share, n_layers, ylabel="share"),
    }


def _toy_relayer(result: ToyResult, order) -> ToyResult:
    layers, (share,) = relabel(result.layers, order, result.share)
    return ToyResult(layers, share)


TOY = ExperimentSpec(
    name="toy_share",
    title="Toy",
    about="a statistic declared in a test",
    order=999,
    run=lambda ctx: None,
    result=ToyResult,
    group="toy",
    statistics=_toy_stats,
    relayer=_toy_relayer,
    declares=(
        StatDecl("toy.profile", "fraction", 0.0, 1.0, None, axis="layer"),
        StatDecl("toy.share_top", "fraction", 0.0, 1.0, 0.0),
    ),
)


def test_a_new_statistic_declared_once_is_checked_formatted_and_audited():
    """Declared with its facts in its own spec, a statistic's name is what the claims preflight accepts (a
    misspelt one is refused), it is refused by the hygiene where a claim cannot fail,
    formatted by its unit in the report, given location/top-k/profile claims, and its claims fail on the
    audit's reversed layers (through the spec's relayer): no edit elsewhere."""
    register([TOY], "test")
    try:
        assert declaration("toy.share_top").unit == "fraction" and stat_kind("toy.share_top") == "pct"
        meta = {"models": ["m"]}
        # the same declaration is the preflight's list of names: a claim on one it lacks is refused when read
        from atlas_core import AtlasError

        with pytest.raises(
            AtlasError,
            match=r"unknown statistic 'toy.share_tpo': the toy_share experiment computes "
            r"toy.profile, toy.share_top",
        ):
            parse_claim(
                {"id": "t", "model": "m", "statistic": "toy.share_tpo", "expected": 0.5, "tolerance": 0.1}, meta
            )
        wide = parse_claim(
            {"id": "w", "model": "m", "statistic": "toy.share_top", "expected": 0.5, "tolerance": 0.6}, meta
        )
        assert "whole plausible range [0, 1]" in refusal(wide)
        none = parse_claim(
            {"id": "n", "model": "m", "statistic": "toy.share_top", "expected": 0.3, "tolerance": 0.3}, meta
        )
        assert "holds 0 (no effect)" in refusal(none)
        result = ToyResult(list(range(8)), [0.05, 0.1, 0.9, 0.3, 0.2, 0.15, 0.1, 0.05])
        stats = model_statistics({"toy_share": result}, 8)
        entries = where_claims("m", "toy.profile", stats["toy.profile"])
        assert {e["kind"] for e in entries} == {"location", "top_k", "profile"}
        claims = [parse_claim(e, meta) for e in entries]
        assert all(refusal(c) is None and evaluate(c, [stats], ["m"]).passed for c in claims)
        reversed_stats = model_statistics({"toy_share": TOY.relayer(result, list(range(8))[::-1])}, 8)
        failed = [evaluate(c, [reversed_stats], ["m"]) for c in claims]
        assert all(not e.passed for e in failed), [e.message for e in failed]
        assert re.search(r"top L5 .*expected top L2 ± 0 layers -> FAIL", failed[0].message), failed[0].message
        print("\n".join(e.message for e in failed))
    finally:
        unregister(["toy_share"])


def test_claims_write_drops_what_passes_every_wrong_input_and_says_so(tmp_path):
    """Written from the committed pair with a loose relative floor (50% of each value), claims that no wrong
    input can fail appear; the writer audits the pair's file on its own runs, drops each (named, with the wrong
    inputs it passed) and what it keeps passes the audit. The shipped floor drops one claim of the full file so:
    a LoRA KL, read through the trained adapter, whose interval is as wide as the gap between the models."""
    from atlas_core.claims import write_claims

    runs = [p for m in load_claims(FULL).models for p in baseline_runs("full") if p.name.startswith(m)]
    out = write_claims(runs, tmp_path / "loose.toml", rel=0.5)
    dropped = [line for line in out.read_text().splitlines() if "passes every wrong input the audit made" in line]
    assert dropped, "a 50% floor left no claim blind: the test no longer exercises the drop"
    assert all("swapped" in line and "reversed" in line for line in dropped), dropped[:3]
    a = audit(out, baseline_runs())
    assert a.ok and not a.blind, a.table()
    shipped = [line for line in FULL.read_text().splitlines() if "passes every wrong input the audit made" in line]
    assert [line.split()[2] for line in shipped] == ["qwen2.5-coder-0.5b-instruct:lora.kl.dead_code:"], shipped


@pytest.mark.real_model
@pytest.mark.pair
def test_the_ci_file_passes_its_audit_on_the_recomputed_ci_runs(atlas):
    """coder-pair-ci.toml has no committed evidence (its runs are recomputed in this tier): audited on the
    session's ci-profile runs of the Coder pair (swapped, same model twice, layers reversed and shuffled; no
    other model is computed at the ci profile to substitute)."""
    path = CLAIMS_DIR / "coder-pair-ci.toml"
    from atlas_core.orchestrate import RunPlan, run_plan

    cf = load_claims(path)
    for m in cf.models:
        atlas.ensure(m)
        # every experiment the file's claims read, whichever tests were selected beside this one (alone: none)
        exps = sorted({e for c in cf.claims if m in c.models for e in c.experiments})
        run_plan(
            RunPlan(
                model=m,
                experiments=exps,
                profile=atlas.profile,
                out=atlas.run_dir(m),
                device=atlas.device,
                tasks=atlas.tasks,
                report=False,
                progress=True,
                wait=True,
            )
        )
    a = audit(path, [atlas.run_dir(m) for m in cf.models] + baseline_runs())
    print(a.table())
    assert not a.wrong_on_right and a.ok, a.table()


# -------------------------------------------------------------------------------------------------
# the full claims on the H200 records (fixtures/gpu-runs): fp32 on another device, and bf16

GPU_RUNS = CLAIMS_DIR.parents[2] / "fixtures" / "gpu-runs"


def _gpu(dtype: str):
    from atlas_core.claims.audit import check_on_runs

    return check_on_runs(FULL, [GPU_RUNS / f"{m}-full-{dtype}-h200" for m in load_claims(FULL).models])


def test_the_full_claims_hold_on_fp32_gpu_records_and_bf16_moves_only_small_uninterval_statistics():
    """fp32 on an H200 (another device, torch and kernels) passes every claim it can evaluate: no false alarm.
    bf16 fails some, all on head ablation and steering, whose statistics (single-head KLs of tenths of a nat,
    steering boosts of a few hundredths) carry no interval, so their claims hold the 10% floor; claims on what
    the GPU runs lack (LoRA training, transfer, adapter ablation, and H008, decided on adapter ablation) are not
    evaluated, never failed."""
    fp32, bf16 = _gpu("fp32"), _gpu("bf16")
    print(fp32.table().split("\n\n")[-1], bf16.table(), sep="\n")
    p, f, n = fp32.counts()
    assert f == 0 and p >= 200, fp32.table()
    skipped = {c.statistic.split(".")[0] for c, ok, _ in fp32.results if ok is None}
    assert skipped == {"lora", "transfer", "adapter", "H008"}
    failed = [(c, msg) for c, ok, msg in bf16.results if ok is False]
    assert failed and {c.statistic.split(".")[0] for c, _ in failed} <= {"heads", "steering"}
    assert all(msg.endswith("-> FAIL") and c.id in msg for c, msg in failed)
    assert bf16.counts()[0] > 0.95 * (bf16.counts()[0] + len(failed))


def test_a_per_layer_value_claim_reads_its_layer_and_only_a_per_layer_statistic():
    """A value claim with a layer reads the profile at that absolute layer: it holds on its model, fails when
    the layers are reversed (naming the layer), and is refused on a statistic that is not declared per layer."""
    from atlas_core import AtlasError
    from atlas_core.claims.audit import relayered_stats

    meta = {"models": ["qwen2.5-coder-0.5b-instruct"]}
    stats = _stats("qwen2.5-coder-0.5b-instruct")
    c = parse_claim(
        {
            "id": "L9",
            "model": meta["models"][0],
            "statistic": "hub.ranking",
            "kind": "value",
            "layer": 9,
            "expected": 18.35,
            "tolerance": 0.61,
        },
        meta,
    )
    assert evaluate(c, [stats], meta["models"]).passed
    run = load_run(next(p for p in baseline_runs("full") if p.name.startswith(meta["models"][0])))
    ev = evaluate(c, [relayered_stats(run, list(range(24))[::-1])], meta["models"])
    assert not ev.passed and "hub.ranking at L9 measured 9.972" in ev.message  # old L14, ev.message
    with pytest.raises(AtlasError, match="a value claim with a 'layer' reads a statistic declared per layer"):
        parse_claim(
            {
                "id": "x",
                "model": "m",
                "statistic": "hub.top_layer_kl",
                "kind": "value",
                "layer": 9,
                "expected": 18.35,
                "tolerance": 0.61,
            },
            meta,
        )


def test_a_value_read_at_an_item_names_it_and_fails_where_another_item_holds_it():
    """A family's hub KL (read at the hub layer) and its strongest head's KL are claimed at that layer and head: the
    shipped claims name them, hold on their model, and fail on the other Coder model and on the reversed layers,
    naming the item; a head is read as (layer, head) on a model of another head count."""
    from atlas_core.claims.audit import relayered_stats

    m, other = "qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct"
    cf = load_claims(FULL)
    by_id = {c.id: c for c in cf.claims}
    hub = by_id[f"{m}:hub.family_kl.arithmetic"]
    assert hub.layer == 9 and hub.expectation().startswith("L9: 17.59")
    run = load_run(next(p for p in baseline_runs("full") if p.name.startswith(m)))
    assert evaluate(hub, [run.stats], [m]).passed
    ev = evaluate(hub, [_stats(other)], [other])
    assert not ev.passed and "hub.family_kl.arithmetic at L9 measured" in ev.message, ev.message  # 1.5B's hub is L14
    ev = evaluate(hub, [relayered_stats(run, list(range(24))[::-1])], [m])
    assert not ev.passed and "at L9" in ev.message, ev.message
    # the value alone (the claim as it was, without the layer) passes the swap: both hubs give ~17 nats
    alone = parse_claim(
        {"id": "a", "model": m, "statistic": hub.statistic, "expected": hub.expected, "tolerance": hub.tolerance},
        {"models": [m]},
    )
    assert evaluate(alone, [_stats(other)], [other]).passed
    head = by_id[f"{m}:heads.family_max_kl.dead_code"]
    assert head.n_heads == 14 and head.item(head.layer) == "L11 H2"
    assert evaluate(head, [run.stats], [m]).passed
    ev = evaluate(head, [_stats(other)], [other])  # L11 H2 of the 1.5B's 12 heads per layer, not its item 156
    assert not ev.passed and "heads.family_max_kl.dead_code at L11 H2 measured" in ev.message, ev.message
    s = _stats(other)["heads.family_max_kl.dead_code"].series
    assert ev.value == s["y"][s["x"].index(11 * 12 + 2)]


def test_a_profile_whose_order_is_fixed_by_construction_gets_value_claims_not_location_claims():
    """Transfer recovery reaches 1 at the last layer by construction: a location, top-k or profile claim on its
    profile is refused naming the reason, its top layer as a statistic too, while its per-layer values are
    claimed (the shipped files hold them, and no claim of where its top is)."""
    meta = {"models": ["m"]}
    for entry in (
        {"kind": "location", "layer": 23, "within": 0, "n_items": 24},
        {"kind": "top_k", "layers": [23, 22, 21], "min_common": 3, "n_items": 24},
        {"kind": "profile", "items": list(range(4)), "profile": [0.1, 0.5, 0.9, 1.0], "min_rho": 0.9},
    ):
        c = parse_claim({"id": "t", "model": "m", "statistic": "transfer.layer_profile", **entry}, meta)
        assert "the order of transfer.layer_profile is fixed by construction" in refusal(c), entry
    top = parse_claim(
        {"id": "t", "model": "m", "statistic": "transfer.top_layer", "expected": 23, "tolerance": 0}, meta
    )
    assert "true by construction" in refusal(top)
    value = parse_claim(
        {
            "id": "v",
            "model": "m",
            "statistic": "transfer.layer_profile",
            "layer": 4,
            "expected": 0.335,
            "tolerance": 0.05,
        },
        meta,
    )
    assert refusal(value) is None
    for path in (FULL, CLAIMS_DIR / "coder-pair-ci.toml"):
        transfer = [c for c in load_claims(path).claims if c.statistic == "transfer.layer_profile"]
        assert transfer and all(c.kind == "value" and c.layer is not None for c in transfer), path


def test_a_claim_in_relative_depth_may_pass_a_swap_but_never_every_reordering():
    """The audit counts the swap over claims on absolute quantities apart, and fails a relative-depth claim that
    passes the layers reversed and every shuffle, naming it (the same row failing the reversal passes)."""
    from pathlib import Path

    from atlas_core.claims.audit import Audit, ClaimAudit

    meta = {"models": ["m"]}
    depth = parse_claim(
        {
            "id": "m:hub.ranking.top_depth",
            "model": "m",
            "statistic": "hub.ranking",
            "kind": "location",
            "depth": 0.4,
            "tolerance": 0.1,
            "n_items": 24,
        },
        meta,
    )
    top = parse_claim(
        {
            "id": "m:hub.ranking.top",
            "model": "m",
            "statistic": "hub.ranking",
            "kind": "location",
            "layer": 9,
            "within": 1,
            "n_items": 24,
        },
        meta,
    )
    blind_to_order = {"swapped (o)": True, "substituted g": False, "reversed": True, "shuffled seed 0": True}
    rows = [ClaimAudit(depth, True, dict(blind_to_order)), ClaimAudit(top, True, {**blind_to_order, "reversed": False})]
    a = Audit(Path("x.toml"), rows, {})
    assert [r.claim.id for r in a.order_blind] == ["m:hub.ranking.top_depth"] and not a.blind and not a.ok
    assert "FAIL: 1 claim(s) in relative depth pass every reordering" in a.table()
    assert a.claims_passing("swapped", True) == (2, 2) and a.claims_passing("swapped", True, absolute=True) == (1, 1)
    rows[0].outcomes["shuffled seed 0"] = False
    assert Audit(Path("x.toml"), rows, {}).ok
