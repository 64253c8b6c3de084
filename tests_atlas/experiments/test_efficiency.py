"""Efficiency (layer skipping and early exit): the skip configurations relative to depth, shapes, ranges,
determinism and JSON on tiny-qwen2; on the real Coder-0.5B, a clean skip is nothing like zeroing a
layer and the last exit is the full model."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from atlas_core import AtlasError
from atlas_core.experiments import efficiency, layer_ablation, run_experiment
from atlas_core.experiments.context import Context
from atlas_core.experiments.schema import load_result
from atlas_core.experiments.efficiency import EfficiencyResult
from atlas_core.models import LoadedModel
from atlas_core.models.tiny import build_tiny_qwen2
from atlas_core.profiles import get_profile
from atlas_core.results import unstructure
from atlas_core.tasks import load_families

pytestmark = pytest.mark.usefixtures("tiny_on_one_thread")
SMOKE = get_profile("smoke")


def as_json(result) -> dict:
    return json.loads(json.dumps(unstructure(result), allow_nan=False))


def without_timings(data: dict) -> dict:
    data = json.loads(json.dumps(data))
    for e in data["exits"]:
        e.pop("seconds"), e.pop("speedup")
    data["notes"] = data["notes"].split(" Timings:")[0]
    return data


@pytest.fixture(scope="module")
def smoke(tiny, one_thread, smoke_ctx):
    ctx = smoke_ctx(tiny)
    with one_thread():
        return ctx, efficiency.run(ctx)


def check_estimate(e, lo: float, hi: float, n: int):
    assert lo - 1e-9 <= e.lo <= e.value + 1e-9 <= e.hi + 2e-9 and e.hi <= hi + 1e-9 and e.n == n, e


# ---- the configurations ----------------------------------------------------------------------------
def test_skip_configs_of_the_study_depth():
    """At 28 layers: the study's mid block L4..L8; weakest layers never include the first or last."""
    kl = [0.0] + [float(i) for i in range(1, 27)] + [0.0]  # first and last are the "weakest" but excluded
    kl[15] = 0.5
    cfg = dict(efficiency.skip_configs(kl))
    assert list(cfg) == ["skip_weakest_1", "skip_mid_5", "skip_6_layers", "skip_8_layers"]
    assert cfg["skip_weakest_1"] == [15]
    assert cfg["skip_mid_5"] == [4, 5, 6, 7, 8]
    assert cfg["skip_6_layers"] == [1, 2, 3, 4, 5, 15]
    assert cfg["skip_8_layers"] == [1, 2, 3, 4, 5, 6, 7, 15]


@pytest.mark.parametrize("n, mid", [(24, [3, 4, 5, 6, 7]), (18, [3, 4, 5, 6, 7]), (6, [1, 2, 3, 4]), (4, [1, 2])])
def test_mid_block_scales_with_depth(n, mid):
    cfg = dict(efficiency.skip_configs([1.0] * n))
    assert cfg["skip_mid_5"] == mid
    for layers in cfg.values():
        assert layers and 0 not in layers and n - 1 not in layers and layers == sorted(set(layers))


def test_too_shallow_model_is_an_error(tiny, smoke_ctx):
    model, tok = build_tiny_qwen2(n_layers=2)
    lm = LoadedModel(model, tok, tiny.info)
    ctx = smoke_ctx(lm, 2, ["copying"])
    with pytest.raises(AtlasError, match="at least 3 layers"):
        efficiency.run(ctx)
    assert "runner" not in ctx.__dict__  # before any work


def test_family_without_items_is_an_error(tiny):
    fams = load_families(["copying", "arithmetic"], n_items=2)
    fams["copying"] = dataclasses.replace(fams["copying"], items=())
    with pytest.raises(AtlasError, match="copying.*no items"):
        efficiency.run(Context(tiny, fams, SMOKE))


# ---- tiny-qwen2 ------------------------------------------------------------------------------------
def test_shapes_and_ranges(smoke, tiny):
    ctx, r = smoke
    n = len(tiny.model.model.layers)
    p = len(ctx.prompts)
    assert isinstance(r, EfficiencyResult)
    assert len(r.single_skip_kl) == n and all(v >= 0 and math.isfinite(v) for v in r.single_skip_kl)
    assert [c.name for c in r.skip_configs] == ["skip_weakest_1", "skip_mid_5", "skip_6_layers", "skip_8_layers"]
    assert dict((c.name, c.layers) for c in r.skip_configs) == dict(efficiency.skip_configs(r.single_skip_kl))
    for c in r.skip_configs:
        check_estimate(c.mean_kl, 0.0, math.inf, p)
        check_estimate(c.top5_overlap, 0.0, 1.0, p)
        check_estimate(c.argmax_match, 0.0, 1.0, p)
    assert [e.layer for e in r.exits] == list(range(n))
    assert [e.layers_skipped for e in r.exits] == list(range(n - 1, -1, -1))
    for e in r.exits:
        check_estimate(e.mean_kl, 0.0, math.inf, p)
        check_estimate(e.top5_overlap, 0.0, 1.0, p)
        check_estimate(e.argmax_match, 0.0, 1.0, p)
        assert e.seconds > 0 and e.speedup > 0
    last = r.exits[-1]
    assert last.mean_kl.value < 1e-5 and last.argmax_match.value == 1.0 and last.top5_overlap.value == 1.0
    assert last.speedup == 1.0
    assert r.exits[0].mean_kl.value > 1e-3  # the logit lens at layer 0 is not the model's output
    assert "unchanged" in r.notes and "9.5" in r.notes


def test_the_timed_forward_feeds_the_head_one_contiguous_position_per_prompt(smoke):
    """The exit timing's stock forward keeps the last position by index: the LM head gets a contiguous [rows, 1, d]
    input (``logits_to_keep=1`` hands it a strided view, which F.linear runs as a batched matmul over a copied
    weight: ~200x the head's time in bf16 on CPU) and gives the logits the slice would."""
    import torch

    from atlas_core.models.adapters import lm_head

    ctx, _ = smoke
    model, batch = ctx.lm.model, efficiency._timing_batch(ctx)
    seen = []
    hook = lm_head(model).register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    try:
        with torch.inference_mode():
            kept = model(**batch).logits
            sliced = model(**{**batch, "logits_to_keep": 1}).logits
    finally:
        hook.remove()
    rows, t = batch["input_ids"].shape
    assert t > 1 and seen[0].shape == (rows, 1, model.config.hidden_size) and seen[0].is_contiguous()
    assert not seen[1].is_contiguous()  # the slice it replaces
    torch.testing.assert_close(kept, sliced, rtol=1e-5, atol=1e-5)  # the same logits up to the matmul path's rounding


def test_skip_matches_its_single_layer_sweep(smoke):
    """The weakest-1 configuration is the same intervention as that layer's single skip."""
    _, r = smoke
    w = r.skip_configs[0]
    assert w.mean_kl.value == pytest.approx(r.single_skip_kl[w.layers[0]], rel=1e-5)
    assert w.mean_kl.value == pytest.approx(min(r.single_skip_kl[1:-1]), rel=1e-5)


def test_reuses_the_layer_ablation_skip_sweep(smoke, tiny, smoke_ctx):
    """After the layer ablation in the same run, the single-skip KL comes from its delta/zero sweep (the
    same intervention) and equals a fresh skip sweep."""
    _, fresh = smoke
    ctx = smoke_ctx(tiny)
    handed = {"layer_ablation": layer_ablation.run(ctx)}
    assert efficiency.reuse_single_skips(handed, len(fresh.single_skip_kl)) is not None
    r = run_experiment(efficiency.SPEC, ctx, handed)
    np.testing.assert_allclose(r.single_skip_kl, fresh.single_skip_kl, rtol=1e-5, atol=1e-7)
    assert [c.layers for c in r.skip_configs] == [c.layers for c in fresh.skip_configs]
    assert "over the middle layers in this run" in r.notes
    # a result read back from the store, as the orchestrator hands it on (typed)
    stored = {"layer_ablation": load_result("layer_ablation", as_json(handed["layer_ablation"]))}
    assert efficiency.reuse_single_skips(stored, len(r.single_skip_kl)) == r.single_skip_kl


def test_an_experiment_is_handed_only_the_results_it_declares(smoke, tiny, smoke_ctx):
    """``run_experiment`` gives efficiency the layer ablation it reuses, not the other results on offer, and
    takes them back afterwards: nothing a run passes leaks into a later experiment's context."""
    ctx = smoke_ctx(tiny)
    offered = {"layer_ablation": layer_ablation.run(ctx), "clean": object(), "head_ablation": object()}
    seen = []
    spec = dataclasses.replace(efficiency.SPEC, run=lambda c: seen.append(dict(c.results)) or efficiency.run(c))
    r = run_experiment(spec, ctx, offered)
    assert [list(s) for s in seen] == [["layer_ablation"]] and seen[0]["layer_ablation"] is offered["layer_ablation"]
    assert ctx.results == {}
    assert "over the middle layers in this run" in r.notes
    assert "over the middle layers in this run" not in efficiency.run(ctx).notes  # handed nothing: computed anew


def test_json_serialisable(smoke):
    _, r = smoke
    data = as_json(r)
    assert len(data["exits"]) == len(r.exits) and data["skip_configs"][0]["mean_kl"]["n"] == r.exits[0].mean_kl.n


def test_deterministic_with_fixed_seed(tiny, smoke_ctx):
    fams = ["arithmetic", "delimiter_tracking"]
    a = as_json(efficiency.run(smoke_ctx(tiny, 2, fams, seed=5)))
    b = as_json(efficiency.run(smoke_ctx(tiny, 2, fams, seed=5)))
    assert without_timings(a) == without_timings(b)


# ---- the real 0.5B model ---------------------------------------------------------------------------
@pytest.mark.real_model
@pytest.mark.pair  # numbers covered in the default tier by the golden check
def test_real_skip_and_exit(coder05):
    """A skipped middle layer passes the residual on: far less KL than zeroing that layer's output (the
    study's 9.5 nats came from the latter). Exiting at the last layer is the full model."""
    prof = dataclasses.replace(get_profile("ci"), n_items=2, timing_repeats=1)
    ctx = Context(coder05, load_families(["arithmetic", "copying", "code_syntax"], n_items=2), prof, seed=0)
    r = efficiency.run(ctx)
    n = len(r.single_skip_kl)
    mid = n // 2
    zeroed = layer_ablation.layer_sweep(ctx, "resid", "zero", layers=[mid])
    assert zeroed.family_mean_kl[0] > 5.0
    assert r.single_skip_kl[mid] < 0.1 * zeroed.mean_kl[0].value, (r.single_skip_kl[mid], zeroed.mean_kl[0])
    assert r.single_skip_kl[0] > 5.0  # the first layer is not skippable
    assert np.median(r.single_skip_kl[1:-1]) < 1.0
    weakest = r.skip_configs[0]
    assert weakest.mean_kl.value < 0.5 and weakest.top5_overlap.value > 0.6
    last = r.exits[-1]
    assert last.mean_kl.value < 1e-4 and last.argmax_match.value == 1.0 and last.top5_overlap.value == 1.0
    assert r.exits[0].mean_kl.value > 5.0 and r.exits[0].argmax_match.value < 0.5
    assert all(e.seconds > 0 for e in r.exits)
