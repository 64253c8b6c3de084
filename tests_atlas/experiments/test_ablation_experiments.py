"""Clean baseline, layer, MLP and head ablation: shapes, ranges, determinism and JSON on tiny-qwen2 at
the smoke profile; meaningful facts on the real Coder-0.5B at a reduced ci profile."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from atlas_core import AtlasError
from atlas_core.experiments import clean, head_ablation, layer_ablation, mlp_ablation
from atlas_core.experiments.context import Context
from atlas_core.experiments.clean import CleanResult
from atlas_core.experiments.head_ablation import HeadAblationResult
from atlas_core.experiments.layer_ablation import LayerAblationResult, LayerSweep
from atlas_core.experiments.mlp_ablation import MLPAblationResult
from atlas_core.profiles import get_profile, sample_layers
from atlas_core.results import unstructure
from atlas_core.tasks import load_families

pytestmark = pytest.mark.usefixtures("tiny_on_one_thread")
SMOKE = get_profile("smoke")


def as_json(result) -> dict:
    return json.loads(json.dumps(unstructure(result), allow_nan=False))


@pytest.fixture(scope="module")
def smoke(tiny, one_thread, smoke_ctx):
    """Every experiment of this file once, in run order, on one shared context (as `atlas run` does)."""
    ctx = smoke_ctx(tiny)
    with one_thread():
        out = {mod.NAME: mod.run(ctx) for mod in (clean, layer_ablation, mlp_ablation, head_ablation)}
    return ctx, out


def check_estimate(e, lo: float = 0.0, hi: float = float("inf"), n: int | None = None):
    assert lo - 1e-9 <= e.lo <= e.value + 1e-9 <= e.hi + 2e-9 and e.hi <= hi + 1e-9, e
    if n is not None:
        assert e.n == n


def check_sweep(s: LayerSweep, ctx: Context, n_layers: int):
    n_prompts = len(ctx.prompts)
    assert s.layers == list(range(n_layers))
    assert list(s.kl) == list(ctx.families)
    for vals in s.kl.values():
        assert len(vals) == n_layers and all(v >= 0 and np.isfinite(v) for v in vals)
    assert len(s.mean_kl) == len(s.family_mean_kl) == len(s.argmax_match) == n_layers
    for e in s.mean_kl:
        check_estimate(e, 0.0, n=n_prompts)
    expect = np.mean([s.kl[f] for f in ctx.families], axis=0)
    np.testing.assert_allclose(s.family_mean_kl, expect, rtol=1e-12)
    assert all(0.0 <= v <= 1.0 for v in s.argmax_match)
    assert sorted(s.ranking) == s.layers  # a permutation
    ranked = [s.family_mean_kl[s.layers.index(layer)] for layer in s.ranking]
    assert ranked == sorted(ranked, reverse=True)
    assert max(s.family_mean_kl) > 1e-3  # an ablation that changes nothing is a broken hook


# ---- clean -----------------------------------------------------------------------------------------
def test_clean_shapes_and_ranges(smoke):
    ctx, out = smoke
    r = out["clean"]
    assert isinstance(r, CleanResult)
    assert [f.family for f in r.families] == list(ctx.families)
    assert len(r.prompts) == len(ctx.prompts) == 4 * len(ctx.families)
    for f in r.families:
        assert f.n == 4
        check_estimate(f.top1_accuracy, 0.0, 1.0, n=4)
        check_estimate(f.target_prob, 0.0, 1.0, n=4)
    logp = ctx.runner.clean_logprobs
    for i, p in enumerate(r.prompts):
        assert p.prompt == ctx.prompts[i] and p.target_id == ctx.targets[i]
        assert 0.0 <= p.target_prob <= 1.0
        assert p.target_prob == pytest.approx(float(logp[i, p.target_id].exp()), rel=1e-6)
        assert p.correct == (int(logp[i].argmax()) == p.target_id)
        assert p.predicted == ctx.lm.tokenizer.decode([int(logp[i].argmax())])
    acc = np.mean([p.correct for p in r.prompts])
    assert r.overall_accuracy.value == pytest.approx(acc)


# ---- layer ablation --------------------------------------------------------------------------------
def test_layer_ablation_shapes_and_ranges(smoke, tiny):
    ctx, out = smoke
    r = out["layer_ablation"]
    n = len(tiny.model.model.layers)
    assert isinstance(r, LayerAblationResult) and r.n_layers == n and r.families == list(ctx.families)
    keys = [f"{s.target}/{s.mode}" for s in r.sweeps]
    assert keys == [f"{t}/{m}" for t in ("resid", "delta") for m in SMOKE.ablation_modes]
    assert r.primary == "resid/zero" and r.primary in keys
    for s in r.sweeps:
        check_sweep(s, ctx, n)
    assert "5.4" in r.notes and "13.7" in r.notes and "delta" in r.notes


def test_delta_zero_is_skip(smoke):
    """Zeroing a layer's write keeps the residual it received: the KL equals skipping the layer."""
    ctx, out = smoke
    from atlas_core.interventions import Skip, Variant

    delta = layer_ablation.find_sweep(out["layer_ablation"].sweeps, "delta/zero")
    stats = ctx.runner.sweep([Variant(f"skip{layer}", (Skip((layer,)),)) for layer in delta.layers])
    np.testing.assert_allclose(stats.kl.mean(1), [e.value for e in delta.mean_kl], rtol=1e-5, atol=1e-6)


def test_layer_ablation_resample_depends_on_seed_only(tiny, smoke_ctx):
    """Resample donors come from ctx.seed: same seed, same result; another seed, other donors."""
    prof = dataclasses.replace(SMOKE, ablation_modes=("resample",))
    runs = [layer_ablation.run(smoke_ctx(tiny, 2, ["copying", "arithmetic"], seed=s, profile=prof)) for s in (3, 3, 4)]
    a, b, c = (as_json(x) for x in runs)
    assert a == b
    assert a["sweeps"][0]["family_mean_kl"] != c["sweeps"][0]["family_mean_kl"]


# ---- MLP ablation ----------------------------------------------------------------------------------
def test_mlp_ablation_shapes_and_ranges(smoke, tiny):
    ctx, out = smoke
    r = out["mlp_ablation"]
    n = len(tiny.model.model.layers)
    assert isinstance(r, MLPAblationResult) and r.n_layers == n and r.primary == "mlp/zero"
    assert [s.mode for s in r.sweeps] == list(SMOKE.ablation_modes)
    assert all(s.target == "mlp" for s in r.sweeps)
    for s in r.sweeps:
        check_sweep(s, ctx, n)


# ---- head ablation ---------------------------------------------------------------------------------
def test_head_ablation_shapes_and_ranges(smoke, tiny):
    ctx, out = smoke
    r = out["head_ablation"]
    cfg = tiny.model.config
    assert isinstance(r, HeadAblationResult)
    assert r.n_layers == cfg.num_hidden_layers and r.n_heads == cfg.num_attention_heads and r.mode == "zero"
    assert r.layers == sample_layers(cfg.num_hidden_layers, SMOKE.head_layers)
    assert list(r.kl) == r.families == list(ctx.families)
    cells = []
    for fam, grid in r.kl.items():
        assert len(grid) == len(r.layers) and all(len(row) == r.n_heads for row in grid)
        cells += [(v, fam, r.layers[i], h) for i, row in enumerate(grid) for h, v in enumerate(row)]
    assert all(v >= 0 and np.isfinite(v) for v, *_ in cells)
    best = max(cells, key=lambda c: c[0])
    assert (r.max_head.kl, r.max_head.family, r.max_head.layer, r.max_head.head) == best
    assert len(r.top) == 10 and r.top[0] == r.max_head
    assert [t.kl for t in r.top] == sorted((c[0] for c in cells), reverse=True)[:10]
    assert best[0] > 1e-4
    # the head ablation does not copy what the layer ablation measured: the gap statistic reads that result
    assert not hasattr(r, "max_layer_kl")
    # the strongest head's KL carries its bootstrap interval (schema 3), which H002 decides on
    assert r.max_kl.value == pytest.approx(r.max_head.kl, rel=1e-9) and r.max_kl.lo <= r.max_kl.value <= r.max_kl.hi
    sl = ctx.family_slices
    assert r.max_kl.lo < r.max_kl.hi and r.max_kl.n == sum(sl[f].stop - sl[f].start for f in {t.family for t in r.top})


def test_the_max_head_interval_is_the_bootstrap_of_the_max_over_the_strongest_cells():
    """Two cells of one family, whose prompts resample together: the interval holds the larger mean and moves
    with its prompts' spread; a single prompt per family leaves nothing to resample (a point)."""
    a = np.array([1.0, 1.2, 0.8, 1.1, 0.9, 1.0])
    e = head_ablation.max_interval([("f", a), ("f", a * 0.5)], n_boot=500, seed=0)
    assert e.value == pytest.approx(1.0) and e.lo < 1.0 < e.hi and e.n == 6  # the family's six prompts
    wide = head_ablation.max_interval([("f", (a - 1.0) * 4 + 1.0)], n_boot=500, seed=0)
    assert wide.hi - wide.lo > 3 * (e.hi - e.lo)
    one = head_ablation.max_interval([("f", np.array([0.7])), ("g", np.array([0.3]))], n_boot=50, seed=0)
    assert one.lo == one.value == one.hi == pytest.approx(0.7)


def test_head_ablation_without_layer_results(tiny, smoke_ctx):
    r = head_ablation.run(smoke_ctx(tiny, 2, ["copying"]))
    assert len(r.top) == min(10, len(r.layers) * r.n_heads)


# ---- all of them -----------------------------------------------------------------------------------
def test_json_serialisable(smoke):
    _, out = smoke
    for name, result in out.items():
        data = as_json(result)  # no NaN, no numpy, no tensors
        assert data, name


def test_deterministic_with_fixed_seed(tiny, smoke_ctx):
    mods = (clean, layer_ablation, mlp_ablation, head_ablation)
    fams = ["arithmetic", "factual_recall"]
    first = [as_json(m.run(smoke_ctx(tiny, 2, fams, seed=7))) for m in mods]
    second = [as_json(m.run(smoke_ctx(tiny, 2, fams, seed=7))) for m in mods]
    assert first == second


@pytest.mark.parametrize("mod", [clean, layer_ablation, mlp_ablation, head_ablation], ids=lambda m: m.NAME)
def test_family_without_items_is_an_error(tiny, mod):
    fams = load_families(["copying", "arithmetic"], n_items=2)
    fams["arithmetic"] = dataclasses.replace(fams["arithmetic"], items=())
    ctx = Context(tiny, fams, SMOKE)
    with pytest.raises(AtlasError, match="arithmetic.*no items"):
        mod.run(ctx)
    assert "runner" not in ctx.__dict__  # failed before any work (the clean pass never ran)


def test_no_families_is_an_error(tiny):
    with pytest.raises(AtlasError, match="no task families"):
        clean.run(Context(tiny, {}, SMOKE))


@pytest.mark.parametrize("mod", [layer_ablation, mlp_ablation], ids=lambda m: m.NAME)
def test_unknown_ablation_mode_is_an_error(tiny, mod, smoke_ctx):
    prof = dataclasses.replace(SMOKE, ablation_modes=("zero", "gaussian"))
    with pytest.raises(AtlasError, match="gaussian.*zero, mean, resample"):
        mod.run(smoke_ctx(tiny, 2, ["copying"], profile=prof))


# ---- the real 0.5B model ---------------------------------------------------------------------------
REAL_FAMILIES = ["arithmetic", "copying", "factual_recall", "code_syntax"]


def real_ctx(lm, n_items: int = 2, modes=("zero",), **kw) -> Context:
    prof = dataclasses.replace(get_profile("ci"), n_items=n_items, ablation_modes=tuple(modes), timing_repeats=1, **kw)
    return Context(lm, load_families(REAL_FAMILIES, n_items=n_items), prof, seed=0)


@pytest.mark.real_model
def test_real_clean_accuracy(coder05):
    """Coder-0.5B has these skills: it completes most prompts of the chosen families."""
    r = clean.run(real_ctx(coder05, n_items=3))
    acc = {f.family: f.top1_accuracy.value for f in r.families}
    assert r.overall_accuracy.value >= 0.5, acc
    assert acc["copying"] >= 2 / 3, acc
    rome = [p for p in r.prompts if p.prompt == "The capital of Italy is"]
    assert rome and rome[0].correct and rome[0].target_prob > 0.2, rome


@pytest.mark.real_model
@pytest.mark.pair  # numbers covered in the default tier by the golden check
def test_real_layer_ablation(coder05):
    """Zeroing a layer's whole output is catastrophic at every depth (> 1 nat everywhere), while dropping a
    middle layer's write (a skip) barely matters; the first layer's write matters most."""
    r = layer_ablation.run(real_ctx(coder05))
    resid = layer_ablation.find_sweep(r.sweeps, "resid/zero")
    delta = layer_ablation.find_sweep(r.sweeps, "delta/zero")
    assert min(resid.family_mean_kl) > 1.0, resid.family_mean_kl
    mid = r.n_layers // 2
    assert delta.family_mean_kl[0] > 5 * delta.family_mean_kl[mid], delta.family_mean_kl
    assert delta.family_mean_kl[mid] < 0.2 * resid.family_mean_kl[mid]
    assert delta.ranking[0] == 0
    assert resid.argmax_match[mid] < 0.5 and delta.argmax_match[mid] > 0.5


@pytest.mark.real_model
@pytest.mark.pair  # numbers covered in the default tier by the golden check
def test_real_mlp_ablation(coder05):
    """The first MLP matters: zeroing it moves the output by more than a nat, and more than a middle MLP."""
    r = mlp_ablation.run(real_ctx(coder05))
    s = r.sweeps[0]
    assert (s.target, s.mode) == ("mlp", "zero")
    mid = r.n_layers // 2
    assert s.family_mean_kl[0] > 1.0, s.family_mean_kl
    assert s.family_mean_kl[0] > 5 * s.family_mean_kl[mid], s.family_mean_kl


@pytest.mark.real_model
@pytest.mark.pair  # numbers covered in the default tier by the golden check
def test_real_head_ablation(coder05):
    """One head is far weaker than a whole layer: the strongest head moves the output by less than a
    tenth of the weakest whole-layer (residual) ablation."""
    ctx = real_ctx(coder05, head_layers=3)
    layers = layer_ablation.layer_sweep(ctx, "resid", "zero", layers=[0, 12, 23])
    r = head_ablation.run(ctx)
    assert r.layers == [0, 12, 23] and r.n_heads == 14
    assert 0.0 < r.max_head.kl < 0.1 * min(layers.family_mean_kl), (r.max_head, layers.family_mean_kl)
