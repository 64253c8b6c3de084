"""Steering sweep (experiment 4), skill knockout (experiment 5) and their shared skill directions.

On tiny-qwen2 with the smoke profile: shapes and ranges, the exact identity of zero strength,
agreement with the stock hooked forward, determinism, JSON, and bad input rejected before any
forward. On the real Coder-0.5B at a reduced ci profile: KL grows with |strength|, the direction
lengthens with depth, and removing the factual-recall direction lowers every other family's targets.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from atlas_core import AtlasError
from atlas_core.experiments import knockout, steering
from atlas_core.experiments.context import Context
from atlas_core.experiments.directions import (
    contrast_runner,
    direction_norm,
    family_runner,
    skill_direction,
    study_layer,
)
from atlas_core.experiments.knockout import KnockoutResult
from atlas_core.experiments.steering import SteeringResult
from atlas_core.interventions import Steer, Variant
from atlas_core.metrics import selectivity
from atlas_core.profiles import get_profile, sample_layers
from atlas_core.results import unstructure
from atlas_core.forward import naive_logprobs
from atlas_core.runner import Runner
from atlas_core.tasks import load_families, target_token_id

FAMILY = "factual_recall"


@pytest.fixture(scope="module")
def tiny_run(tiny, smoke_ctx):
    ctx = smoke_ctx(tiny)
    return ctx, steering.run(ctx), knockout.run(ctx)


# ---- directions ---------------------------------------------------------------------------------
def test_study_layer_scales_with_depth():
    assert [study_layer(n) for n in (28, 24, 18, 4, 1)] == [2, 2, 1, 0, 0]


def test_direction_is_item_minus_contrast_mean(tiny_run, tiny):
    ctx, _, _ = tiny_run
    d_model = tiny.info.d_model
    for layer in range(tiny.info.n_layers):
        v = skill_direction(ctx, FAMILY, layer)
        assert v.shape == (d_model,) and v.dtype == torch.float32
        want = family_runner(ctx, FAMILY).last_residual(layer).mean(0) - contrast_runner(ctx, FAMILY).last_residual(
            layer
        ).mean(0)
        assert torch.equal(v, want)
        # the same items inside the all-families runner (other padding): the same direction
        sl = ctx.family_slices[FAMILY]
        alt = ctx.runner.last_residual(layer)[sl].mean(0) - contrast_runner(ctx, FAMILY).last_residual(layer).mean(0)
        assert torch.allclose(v, alt, atol=1e-4, rtol=1e-4)
        assert direction_norm(ctx, FAMILY, layer) == pytest.approx(float(v.norm()), rel=1e-6)
        assert direction_norm(ctx, FAMILY, layer) > 0


def test_directions_and_runners_are_cached(tiny_run):
    ctx, _, _ = tiny_run
    cache = ctx.artifacts.directions
    assert contrast_runner(ctx, FAMILY) is cache.contrast[FAMILY] is contrast_runner(ctx, FAMILY)
    assert skill_direction(ctx, FAMILY, 1) is skill_direction(ctx, FAMILY, 1)
    assert list(cache.contrast) == [FAMILY]  # one contrast runner for both experiments


# ---- steering on tiny ---------------------------------------------------------------------------
def test_steering_shapes_and_ranges(tiny_run, tiny):
    ctx, res, _ = tiny_run
    assert isinstance(res, SteeringResult)
    n = tiny.info.n_layers
    assert res.layers == sorted(set(sample_layers(n, ctx.profile.steer_layers)) | {study_layer(n)})
    assert res.strengths == list(ctx.profile.steer_strengths)
    L, S = len(res.layers), len(res.strengths)
    for grid in (res.target_prob, res.boost, res.kl):
        assert np.asarray(grid).shape == (L, S)
    assert len(res.direction_norm) == L and min(res.direction_norm) > 0
    tp, boost, kl = map(np.asarray, (res.target_prob, res.boost, res.kl))
    assert 0 < res.baseline_prob < 1 and ((tp >= 0) & (tp <= 1)).all()
    assert np.allclose(boost, tp - res.baseline_prob, atol=1e-12)
    assert (kl >= 0).all()
    nonzero = np.asarray(res.strengths) != 0
    assert (kl[:, nonzero] > 1e-4).all()  # a real push moves the distribution
    # best = the grid's maximum, with a bootstrap interval around it
    li, si = res.layers.index(res.best_layer), res.strengths.index(res.best_strength)
    assert boost[li, si] == pytest.approx(boost.max()) == pytest.approx(res.best_boost.value)
    assert res.best_boost.lo <= res.best_boost.value <= res.best_boost.hi and res.best_boost.n == 4
    assert res.study_layer == study_layer(n) and res.study_layer in res.layers
    assert res.study_layer_best_boost.value == pytest.approx(boost[res.layers.index(res.study_layer)].max())
    assert res.best_boost.value >= res.study_layer_best_boost.value >= 0  # strength 0 is on the grid


def test_steering_study_prompts(tiny_run, tiny):
    ctx, res, _ = tiny_run
    items = {it.id: it for it in ctx.families[FAMILY].items}
    assert [p.prompt for p in res.prompts] == [items["study_italy"].prompt, items["study_spain"].prompt]
    assert [p.prompt for p in res.prompts] == ["The capital of Italy is ", "The capital of Spain is "]
    clean = family_runner(ctx, FAMILY).clean_logprobs.exp()
    for p in res.prompts:
        it = next(i for i in items.values() if i.prompt == p.prompt)
        idx = list(items).index(it.id)
        assert p.target == it.target
        assert p.baseline_prob == pytest.approx(float(clean[idx, target_token_id(tiny.tokenizer, it.target)]))
        assert p.best_prob >= p.baseline_prob and p.best_layer in res.layers and p.best_strength in res.strengths


def test_zero_strength_is_exactly_clean(tiny_run):
    _, res, _ = tiny_run
    z = res.strengths.index(0.0)
    for li in range(len(res.layers)):
        assert res.boost[li][z] == 0.0 and res.kl[li][z] == 0.0
        assert res.target_prob[li][z] == res.baseline_prob


def test_zero_strength_shortcut_matches_a_real_forward(tiny_run):
    """The grid's zero column skips the forward; a zero steer actually run gives the clean output."""
    ctx, res, _ = tiny_run
    runner = family_runner(ctx, FAMILY)
    targets = [target_token_id(ctx.lm.tokenizer, it.target) for it in ctx.families[FAMILY].items]
    variants = [
        Variant(f"L{layer}/0", (Steer(layer, skill_direction(ctx, FAMILY, layer), 0.0),)) for layer in res.layers
    ]
    stats = runner.sweep(variants, targets)
    assert stats.kl.max() < 1e-5
    assert np.allclose(stats.target_prob, stats.ref_target_prob, atol=1e-6)


def test_steering_matches_stock_hooked_forward(tiny_run, tiny):
    """The batched, clean-prefix sweep agrees with one hooked stock forward per variant."""
    ctx, res, _ = tiny_run
    fam = ctx.families[FAMILY]
    targets = torch.tensor([target_token_id(tiny.tokenizer, it.target) for it in fam.items])
    li, si = len(res.layers) - 1, 0
    layer, s = res.layers[li], res.strengths[si]
    lp = naive_logprobs(
        tiny.model, tiny.tokenizer, fam.prompts, [Variant("x", (Steer(layer, skill_direction(ctx, FAMILY, layer), s),))]
    )[0]
    tp = lp.gather(-1, targets[:, None]).squeeze(-1).exp()
    assert float(tp.mean()) == pytest.approx(res.target_prob[li][si], abs=1e-5)


def test_steering_is_deterministic(tiny_run, tiny, smoke_ctx):
    _, res, _ = tiny_run
    again = steering.run(smoke_ctx(tiny))
    assert unstructure(again) == unstructure(res)


# ---- knockout on tiny ---------------------------------------------------------------------------
def test_knockout_shapes_and_ranges(tiny_run, tiny):
    ctx, _, res = tiny_run
    assert isinstance(res, KnockoutResult)
    assert res.family == FAMILY and res.strength == knockout.STRENGTH == -1.0
    assert [k.layer for k in res.layers] == sample_layers(tiny.info.n_layers, ctx.profile.steer_layers)
    n_other = len(ctx.prompts) - len(ctx.families[FAMILY].items)
    for k in res.layers:
        assert k.skill_drop.n == len(ctx.families[FAMILY].items) and k.nonskill_drop.n == n_other
        assert k.direction_norm == pytest.approx(direction_norm(ctx, FAMILY, k.layer))
        assert k.selectivity == pytest.approx(selectivity(k.skill_drop.value, k.nonskill_drop.value))
        for e in (k.skill_drop, k.nonskill_drop):
            assert -1 <= e.lo <= e.value <= e.hi <= 1
        assert k.nonskill_drop.value != 0.0
    best = max(res.layers, key=lambda k: k.selectivity)
    assert (res.best_layer, res.best_selectivity) == (best.layer, best.selectivity)


def test_knockout_drops_match_stock_hooked_forward(tiny_run, tiny):
    """Skill and non-skill drops recomputed with a hooked stock forward (signs kept)."""
    ctx, _, res = tiny_run
    k = res.layers[-1]
    lp = naive_logprobs(
        tiny.model,
        tiny.tokenizer,
        ctx.prompts,
        [Variant("ko", (Steer(k.layer, skill_direction(ctx, FAMILY, k.layer), res.strength),))],
    )[0]
    tid = torch.tensor(ctx.targets)
    knocked = lp.gather(-1, tid[:, None]).squeeze(-1).exp().double().numpy()
    clean = ctx.runner.clean_logprobs.gather(-1, tid[:, None]).squeeze(-1).exp().double().numpy()
    drop = clean - knocked
    skill = np.zeros(len(drop), bool)
    skill[ctx.family_slices[FAMILY]] = True
    assert k.skill_drop.value == pytest.approx(drop[skill].mean(), abs=1e-5)
    assert k.nonskill_drop.value == pytest.approx(drop[~skill].mean(), abs=1e-5)


def test_knockout_is_deterministic(tiny_run, tiny, smoke_ctx):
    _, _, res = tiny_run
    assert unstructure(knockout.run(smoke_ctx(tiny))) == unstructure(res)


def test_results_and_configs_are_json(tiny_run):
    ctx, s, k = tiny_run
    for obj in (s, k):
        back = json.loads(json.dumps(unstructure(obj), allow_nan=False))
        assert set(back) == {f.name for f in dataclasses.fields(obj)}
    assert set(json.loads(json.dumps(unstructure(s)))["best_boost"]) == {"value", "lo", "hi", "n"}
    for mod in (steering, knockout):
        cfg = json.loads(json.dumps(mod.config(ctx), allow_nan=False))
        assert cfg["family"] == FAMILY
    assert knockout.config(ctx)["strength"] == -1.0
    assert steering.config(ctx)["study_layer"] == s.study_layer


# ---- bad input, before any forward --------------------------------------------------------------
def test_wrong_width_direction_rejected_before_any_forward(tiny, forward_counter):
    fam = load_families([FAMILY], n_items=2)[FAMILY]
    runner = Runner(tiny.model, tiny.tokenizer, fam.prompts)
    targets = [target_token_id(tiny.tokenizer, t) for t in fam.targets]
    good = torch.ones(tiny.info.d_model)
    bad_cases = [
        ([0], [1.0], {0: torch.ones(tiny.info.d_model - 1)}, r"residual is \[64\] wide"),
        ([0], [1.0], {0: torch.ones(2, tiny.info.d_model)}, r"residual is \[64\] wide"),
        ([0], [1.0], {0: good * float("nan")}, "non-finite"),
        ([0, 1], [1.0], {0: good}, "no steering direction for layer 1"),
        ([tiny.info.n_layers], [1.0], {tiny.info.n_layers: good}, "out of range"),
        ([0], [float("inf")], {0: good}, "not finite"),
        ([0], [], {0: good}, "at least one"),
    ]
    with forward_counter(tiny.model) as calls:
        for layers, strengths, dirs, msg in bad_cases:
            with pytest.raises(AtlasError, match=msg):
                steering.steer_grid(runner, targets, layers, strengths, dirs)
        with pytest.raises(AtlasError, match="targets"):
            steering.steer_grid(runner, targets[:1], [0], [1.0], {0: good})
    assert calls == []


def test_missing_family_rejected_before_any_forward(tiny, smoke_ctx, forward_counter):
    ctx = smoke_ctx(tiny, n_items=2, families=["arithmetic", "copying"])
    only = smoke_ctx(tiny, n_items=2, families=[FAMILY])
    with forward_counter(tiny.model) as calls:
        for mod in (steering, knockout):
            with pytest.raises(AtlasError, match="factual_recall.*not loaded"):
                mod.run(ctx)
        with pytest.raises(AtlasError, match="at least one more task family"):
            knockout.run(only)
        with pytest.raises(AtlasError, match="not finite"):
            knockout.run(smoke_ctx(tiny, n_items=2), strength=float("nan"))
    assert calls == []


# ---- the real Coder-0.5B at a reduced ci profile ------------------------------------------------
@pytest.fixture(scope="module")
def coder05_ctx(coder05):
    profile = dataclasses.replace(get_profile("ci"), n_items=3, steer_layers=3)
    return Context(coder05, load_families(n_items=3), profile)


@pytest.mark.real_model
@pytest.mark.pair  # numbers covered in the default tier by the golden check
def test_coder05_steering(coder05_ctx):
    res = steering.run(coder05_ctx)
    assert res.study_layer == 2 and 2 in res.layers  # L2 of 28 scaled to 24 layers
    kl = np.asarray(res.kl)
    s = np.asarray(res.strengths)
    pos, neg = np.argsort(s), np.argsort(-s)
    for li, layer in enumerate(res.layers):
        up = kl[li][pos][s[pos] > 0]  # +1, +2, +4
        down = kl[li][neg][s[neg] < 0]  # -1, -2, -4
        assert (np.diff(up) > 0).all() and (np.diff(down) > 0).all(), f"KL not growing with |strength| at L{layer}"
        assert kl[li][s == 4.0] > 1.0 and kl[li][s == -4.0] > 1.0  # +-4 x the raw direction is a large push
    assert kl[:, s == 0].max() == 0.0
    norms = res.direction_norm
    assert min(norms) > 0 and all(b > a for a, b in zip(norms, norms[1:])), norms  # longer with depth
    assert norms[-1] > 3 * norms[0]
    assert res.best_boost.value >= res.study_layer_best_boost.value >= 0.0
    assert [p.prompt for p in res.prompts] == ["The capital of Italy is ", "The capital of Spain is "]
    assert all(0 < p.baseline_prob <= p.best_prob <= 1 for p in res.prompts)


@pytest.mark.real_model
@pytest.mark.pair  # numbers covered in the default tier by the golden check
def test_coder05_knockout(coder05_ctx):
    res = knockout.run(coder05_ctx)
    assert [k.layer for k in res.layers] == [0, 12, 23]
    for k in res.layers:
        # removing the factual-recall direction everywhere lowers the other families' targets too
        assert k.nonskill_drop.value > 0.05 and k.nonskill_drop.lo > 0, (k.layer, k.nonskill_drop)
        assert k.direction_norm == pytest.approx(direction_norm(coder05_ctx, FAMILY, k.layer))
        assert np.isfinite(k.selectivity)
        assert k.selectivity == pytest.approx(k.skill_drop.value / k.nonskill_drop.value)
    cache = coder05_ctx.artifacts.directions  # the vectors steering reads in the same context
    assert cache is not None and all((FAMILY, k.layer) in cache.vectors for k in res.layers)
