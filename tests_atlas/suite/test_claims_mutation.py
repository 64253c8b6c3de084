"""Mutation meta-test: every claim of ``coder-pair-full.toml`` fails, by name, when the statistic it
reads is moved just past it, and still holds just inside.

The committed full-profile baselines of the Coder pair are read (no model, no computation); one test per
claim kind (a value with its tolerance, a rank, a hypothesis verdict, a hypothesis statistic) perturbs each
claim of that kind in turn. Hypothesis claims are perturbed through the rule's inputs: the large model's
statistic is set so that the rule's decisive number lands where the test wants it. One-sided claims
(``at_least`` / ``at_most``; only the study's file holds them) are moved a hair past their threshold.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from atlas_core.baselines import BASELINES_DIR
from atlas_core.claim_hygiene import boundaries
from atlas_core.claims import CLAIMS_DIR, evaluate, load_claims
from atlas_core.runs import load_run, run_path
from atlas_core.verdicts import Stat, decide

CLAIMS = load_claims(CLAIMS_DIR / "coder-pair-full.toml")
EPS = 1e-6


@pytest.fixture(scope="module")
def stats():
    return {m: load_run(run_path(m, "full", BASELINES_DIR)).stats for m in CLAIMS.models}


def _claims(kind: str, hypothesis: bool) -> list:
    return [c for c in CLAIMS.claims if c.kind == kind and bool(c.hypothesis) == hypothesis]


def _eval(claim, stats):
    return evaluate(claim, [stats[m] for m in claim.models], claim.models, CLAIMS.thresholds)


def _fails_by_name(claim, stats) -> str:
    ev = _eval(claim, stats)
    assert not ev.passed, f"{claim.id} still holds after the perturbation: {ev.message}"
    assert ev.message.startswith(f"claim {claim.id} (measured) on ") and ev.message.endswith("-> FAIL"), ev.message
    return ev.message


def _with(stats, model: str, name: str, stat: Stat) -> dict:
    return {**stats, model: {**stats[model], name: stat}}


def test_every_kind_is_covered():
    kinds = {(c.kind, bool(c.hypothesis)) for c in CLAIMS.claims}
    assert kinds == {
        ("value", False),
        ("rank", False),
        ("verdict", True),
        ("value", True),
        ("location", False),
        ("top_k", False),
        ("profile", False),
    }
    assert any(c.invariant for c in CLAIMS.claims)


def _moved(s: Stat, how: str) -> Stat:
    """Profile ``s`` moved: ``reversed`` (each item takes the value of its mirror item), ``rolled`` (by half
    the profile's length) or ``far`` (the top item's value exchanged with that of the item farthest from it)."""
    from atlas_core.layers import item_layer, profile_stat

    ser = s.series
    xs, ys = list(ser["x"]), list(ser["y"])
    if how == "reversed":
        ys = ys[::-1]
    elif how == "rolled":
        h = len(ys) // 2
        ys = ys[h:] + ys[:h]
    else:
        t = xs.index(s.ranking[0])
        f = max(range(len(xs)), key=lambda k: abs(item_layer(xs[k], ser) - item_layer(xs[t], ser)))
        ys[t], ys[f] = ys[f], ys[t]
    return profile_stat(xs, ys, ser["n_layers"], axis=ser["axis"], n_heads=ser.get("n_heads"))


@pytest.mark.parametrize("kind", ["location", "top_k", "profile"])
def test_where_claims_fail_when_the_profile_moves(stats, kind):
    """Each location, top-k and profile claim fails, naming the layer (or head), when its profile is reversed,
    rolled by half, or its top item is moved to the farthest item; unmoved, it holds."""
    claims = _claims(kind, False)
    assert len(claims) >= 10
    for c in claims:
        model = c.models[0]
        assert _eval(c, stats).passed, c.id
        messages = []
        for how in ("reversed", "rolled", "far"):
            ev = _eval(c, _with(stats, model, c.statistic, _moved(stats[model][c.statistic], how)))
            if not ev.passed:
                messages.append(
                    _fails_by_name(c, _with(stats, model, c.statistic, _moved(stats[model][c.statistic], how)))
                )
        assert messages, f"{c.id} holds under every perturbation"
        assert " L" in messages[0], messages[0]  # it names the layer
    print(messages[0])


def test_invariant_claims_fail_on_a_broken_model(stats):
    """A declared invariant still states a finding: a model whose knockout hits every family (the collateral
    drop at 0.5) fails it."""
    claims = [c for c in CLAIMS.claims if c.invariant and c.kind == "value"]
    assert claims
    for c in claims:
        model = c.models[0]
        message = _fails_by_name(c, _with(stats, model, c.statistic, Stat(0.5, 0.45, 0.55)))
        assert "knockout.nonskill_drop measured 0.5" in message
    print(message)


def _valued(s: Stat, c, value: float) -> Stat:
    """``s`` with the value a value claim reads set to ``value``: the statistic's own, or, for a per-layer claim,
    its profile's value at the claim's layer or head (the others untouched)."""
    if c.layer is None:
        return replace(s, value=value, lo=None, hi=None)
    ser = dict(s.series)
    i = list(ser["x"]).index(c.layer)
    ser["y"] = [value if j == i else y for j, y in enumerate(ser["y"])]
    return replace(s, series=ser)


def test_value_claims_fail_just_past_their_tolerance(stats):
    """Every value claim, those read at a layer or head at that item, holds just inside its tolerance and fails just
    past it."""
    claims = _claims("value", False)
    assert len(claims) > 50 and sum(c.layer is not None for c in claims) > 50
    for c in claims:
        model = c.models[0]
        assert _eval(c, stats).passed, c.id
        s = stats[model][c.statistic]
        for sign in (1, -1):
            edge, eps = c.expected + sign * c.tolerance, min(EPS, 1e-3 * c.tolerance)  # adapter KLs are ~1e-6
            inside = _with(stats, model, c.statistic, _valued(s, c, edge - sign * eps))
            assert _eval(c, inside).passed, c.id
            past = _with(stats, model, c.statistic, _valued(s, c, edge + sign * eps))
            message = _fails_by_name(c, past)
            if c.layer is not None:
                assert f"at {c.item(c.layer)} measured" in message, message  # a layer (L9) or a head (L14 H7)
    print(message)


def test_rank_claims_fail_one_rank_down(stats):
    claims = _claims("rank", False)
    assert {c.statistic for c in claims} == {"hub.ranking", "mlp.ranking", "lora.ranking"}
    for c in claims:
        model, target = c.models[0], c.family if c.family is not None else c.layer
        assert _eval(c, stats).passed, c.id
        s = stats[model][c.statistic]
        rest = [x for x in s.ranking if x != target]
        for rank, holds in ((c.max_rank, True), (c.max_rank + 1, False)):
            order = tuple(rest[: rank - 1] + [target] + rest[rank - 1 :])
            moved = _with(stats, model, c.statistic, replace(s, ranking=order))
            if holds:
                assert _eval(c, moved).passed, c.id
            else:
                message = _fails_by_name(c, moved)
                assert f"rank {c.max_rank + 1} of {len(order)}" in message
    print(message)


def _decisive(hid: str, small: dict, th: dict) -> tuple[str, float, float]:
    """The large model's statistic the rule reads, and the map from the rule's decisive number to it
    (as offset + scale * number)."""
    if hid == "H001":
        return "hub.top_layer_depth", small["hub.top_layer_depth"].value, 1.0
    if hid in ("H002", "H004", "H006"):
        name = {"H002": "heads.max_kl", "H004": "knockout.best_selectivity", "H006": "mlp.max_kl"}[hid]
        return name, 0.0, small[name].value
    if hid == "H003":
        name = "steering." + th.get("boost", "best_boost")
        return name, 0.0, max(small[name].value, th["min_boost"])
    if hid == "H005":
        return "transfer.zone_final_fraction", small["transfer.zone_final_fraction"].value, 1.0
    if hid == "H007":
        return "efficiency.best_mid_top5_overlap", small["efficiency.best_mid_top5_overlap"].value, 1.0
    return "adapter.pearson", 0.0, 1.0  # H008 reads the large model's r


def _set_decisive(stats, claim, number: float) -> dict:
    """The pair's statistics with the large model's input set so that the rule's number is ``number``
    (H001 and H005 read a distance: the large model moves above the small one's value)."""
    small_m, large_m = claim.models
    th = CLAIMS.thresholds[claim.hypothesis]
    name, offset, scale = _decisive(claim.hypothesis, stats[small_m], th)
    return _with(stats, large_m, name, Stat(offset + scale * number))


def _number(stats, claim) -> float:
    return decide(claim.hypothesis, *(stats[m] for m in claim.models), CLAIMS.thresholds[claim.hypothesis]).value


def test_hypothesis_statistic_claims_fail_just_past_their_tolerance(stats):
    claims = _claims("value", True)
    # H006 alone: the others' intervals hold a threshold, so the writer drops their statistic claims (the file's
    # header names each; H002's ratio interval, [0.03, 5.2], now that the baselines keep per-prompt head KLs)
    assert {c.hypothesis for c in claims} == {"H006"}
    for c in claims:
        assert _eval(c, stats).passed, c.id
        for sign in (1, -1):
            edge = c.expected + sign * c.tolerance
            inside = _set_decisive(stats, c, edge - sign * EPS)
            assert _number(inside, c) == pytest.approx(edge - sign * EPS, abs=1e-9), c.id  # the map is exact
            assert _eval(c, inside).passed, c.id
            message = _fails_by_name(c, _set_decisive(stats, c, edge + sign * EPS))
    print(message)


def test_verdict_claims_fail_across_a_decision_threshold(stats):
    claims = _claims("verdict", True)
    # H001, H002, H004, H005, H007 are inconclusive on the pair (their intervals straddle a threshold): a claim
    # states a finding, so the file holds no verdict claim for them (its header lists each)
    assert {c.hypothesis for c in claims} == {"H003", "H006", "H008"}
    for c in claims:
        assert _eval(c, stats).passed, c.id
        th = CLAIMS.thresholds[c.hypothesis]
        flipped = None
        for b in boundaries(c.hypothesis, th):
            for number in (b - 1e-3, b + 1e-3):
                ev = _eval(c, _set_decisive(stats, c, number))
                if not ev.passed:
                    flipped = _fails_by_name(c, _set_decisive(stats, c, number))
                    break
            if flipped:
                break
        assert flipped, f"{c.id}: no value of the decisive statistic around its thresholds changes the verdict"
        assert f"{c.hypothesis} verdict " in flipped and f"expected {c.expected_verdict.upper()}" in flipped
        print(flipped)


def test_one_sided_claims_fail_just_past_their_threshold(stats):
    """``at_least`` / ``at_most`` finding claims (the study file's; the Coder files hold none): at the
    threshold they hold, a hair past it they fail by name."""
    study = load_claims(CLAIMS_DIR / "study-qwen2.5-1.5b.toml")
    coder = dict(zip(study.models, CLAIMS.models))
    claims = [c for c in study.claims if c.kind in ("at_least", "at_most") and not c.hypothesis]
    assert len(claims) >= 4
    for c in claims:
        model = coder[c.models[0]]
        s = stats[model][c.statistic]
        past = c.threshold + (EPS if c.kind == "at_most" else -EPS)
        for value, holds in ((c.threshold, True), (past, False)):
            ev = evaluate(c, [{c.statistic: replace(s, value=value, lo=None, hi=None)}], (model,))
            assert ev.passed == holds, ev.message
        assert ev.message.startswith(f"claim {c.id} (published) on {model}: ") and ev.message.endswith("-> FAIL")
    print(ev.message)
