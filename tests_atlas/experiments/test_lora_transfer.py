"""LoRA training, cross-model transfer and adapter ablation (experiments 6-8): training lowers the
loss and is deterministic per seed, the adapter is saved and re-found, the shared base model comes
back bitwise unchanged (weights, logits, modes, grad flags, hooks) after every experiment and after a
crash mid-training, patching the last residual restores the trained output, and results are JSON.
Tiny-qwen2 at the smoke profile; one reduced run on the real Coder-0.5B."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from atlas_core import AtlasError
from atlas_core.adapters_lora import (
    adapter_disabled_at,
    attached_adapter,
    lora_modules,
    new_adapter,
    spec_for,
    training_mode,
)
from atlas_core.experiments import adapter_ablation, lora_fit, lora_training, transfer
from atlas_core.checkpoints import Checkpoints
from atlas_core.experiments.context import Context
from atlas_core.experiments.adapter_ablation import AdapterAblationResult
from atlas_core.experiments.lora_training import LoraResult
from atlas_core.experiments.transfer import TransferResult
from atlas_core.hooks import count_hooks
from atlas_core.integrity import torch_load_sealed
from atlas_core.interventions import Noop, Variant
from atlas_core.metrics import kl_divergence
from atlas_core.profiles import get_profile
from atlas_core.results import unstructure
from atlas_core.forward import encode, plain_logprobs
from atlas_core.sites import Site
from atlas_core.tasks import load_families

pytestmark = pytest.mark.usefixtures("tiny_on_one_thread")
SMOKE = get_profile("smoke")


def make_ctx(lm, out_dir=None, seed=0, profile=SMOKE, n_items=2, families=None) -> Context:
    return Context(lm, load_families(families, n_items=n_items), profile, seed=seed, out_dir=out_dir)


def as_json(result) -> dict:
    return json.loads(json.dumps(unstructure(result), allow_nan=False))


@dataclasses.dataclass
class Snapshot:
    """Everything about the shared model an experiment must leave as it found it."""

    logprobs: torch.Tensor
    modules: list[tuple[str, str, bool]]  # name, class, training
    grads: list[tuple[str, bool]]
    hooks: int
    attrs: set
    config: dict


def snapshot(lm, prompts) -> Snapshot:
    m = lm.model
    return Snapshot(
        plain_logprobs(m, encode(lm.tokenizer, prompts)),
        [(n, type(x).__name__, x.training) for n, x in m.named_modules()],
        [(n, p.requires_grad) for n, p in m.named_parameters()],
        count_hooks(m),
        set(vars(m)),
        m.config.to_dict(),
    )


def assert_pristine(lm, prompts, before: Snapshot) -> None:
    after = snapshot(lm, prompts)
    assert torch.equal(after.logprobs, before.logprobs), "base logits changed"
    assert after.modules == before.modules, "module tree or train/eval modes changed"
    assert after.grads == before.grads, "requires_grad flags changed"
    assert after.hooks == before.hooks == 0, "hooks left on the model"
    assert after.attrs == before.attrs, f"attributes left on the model: {after.attrs ^ before.attrs}"
    assert after.config == before.config
    assert not any(getattr(x, "gradient_checkpointing", False) for x in lm.model.modules())


@pytest.fixture(scope="module")
def smoke(tiny, tmp_path_factory, one_thread):
    """The three experiments once, in run order, on one context, with the base model checked after each."""
    out = tmp_path_factory.mktemp("lora-smoke")
    ctx = make_ctx(tiny, out_dir=out)
    with one_thread():
        before = snapshot(tiny, ctx.prompts)
        results, states = {}, {}
        for mod in (lora_training, transfer, adapter_ablation):
            results[mod.NAME] = mod.run(ctx)
            states[mod.NAME] = snapshot(tiny, ctx.prompts)
    return ctx, before, results, states


# ---- the shared model stays the base model ----------------------------------------------------------


@pytest.mark.parametrize("name", ["lora_training", "transfer", "adapter_ablation"])
def test_base_model_untouched_after_each_experiment(smoke, name):
    ctx, before, _, states = smoke
    after = states[name]
    assert torch.equal(after.logprobs, before.logprobs)
    assert after.modules == before.modules and after.grads == before.grads and after.attrs == before.attrs
    assert after.hooks == 0 and after.config == before.config
    assert not any(p.requires_grad for _, p in ctx.lm.model.named_parameters())
    assert not ctx.lm.model.training


def test_attach_and_unload_round_trip_is_bitwise(tiny, smoke):
    ctx, before, results, _ = smoke
    with attached_adapter(tiny.model, results["lora_training"].adapter_dir) as peft_model:
        n_lora = sum(len(lora_modules(peft_model, i)) for i in range(ctx.runner.dims.n_layers))
        trained = plain_logprobs(peft_model, encode(tiny.tokenizer, ctx.prompts))
        assert not peft_model.training
        assert not any(p.requires_grad for p in peft_model.parameters())
    assert n_lora == 4 * ctx.runner.dims.n_layers  # q, k, v, o in every layer
    assert kl_divergence(before.logprobs, trained).mean().item() > 1e-4  # the adapter really was on
    assert_pristine(tiny, ctx.prompts, before)


def test_crash_mid_training_restores_everything(tiny, tmp_path, monkeypatch):
    ctx = make_ctx(tiny, out_dir=tmp_path)
    ctx.runner.clean_logprobs
    before = snapshot(tiny, ctx.prompts)
    calls = {"n": 0}
    real_clip = torch.nn.utils.clip_grad_norm_

    def clip_then_crash(params, max_norm, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:  # after two optimiser steps, inside train mode with checkpointing on
            assert tiny.model.training and any(
                getattr(m, "gradient_checkpointing", False) for m in tiny.model.modules()
            )
            raise RuntimeError("boom")
        return real_clip(params, max_norm, *a, **k)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip_then_crash)
    with pytest.raises(RuntimeError, match="boom"):
        lora_training.run(ctx)
    assert calls["n"] == 3
    assert_pristine(tiny, ctx.prompts, before)
    left = [p.name for p in tmp_path.iterdir() if p.name != ".locks"]  # the adapter's lock, released
    assert not left, "a crashed training left files behind"
    assert ctx.artifacts.lora_adapter_dir is None  # no adapter handed on


@pytest.mark.parametrize("stop_after", [1, 4, 9])
def test_interrupted_training_resumes_bit_for_bit(tiny, tmp_path, monkeypatch, stop_after):
    """Training stopped after ``stop_after`` steps and run again from its saved state gives the same loss
    curve and the same adapter weights as one uninterrupted run (AdamW moments, schedule, shuffling RNG and
    the epoch's order all come back)."""
    ctx = make_ctx(tiny)
    pairs = lora_training.training_pairs(ctx)
    kw = dict(seed=3, lr=1e-3, max_steps=12, target_loss=1e-9, window=len(pairs), schedule="linear")

    def trained(checkpoints=None, crash_at=None, key="k"):
        real = lora_fit.target_loss_of
        calls = {"n": 0}

        def counted(*a, **k):
            calls["n"] += 1
            if crash_at is not None and calls["n"] > crash_at:
                raise KeyboardInterrupt
            return real(*a, **k)

        with new_adapter(tiny.model, spec_for(tiny.model), 0) as peft_model, training_mode(peft_model):
            with monkeypatch.context() as m:
                m.setattr(lora_fit, "target_loss_of", counted)
                losses, _ = lora_fit.train(peft_model, pairs, checkpoints=checkpoints, checkpoint_key=key, **kw)
            return losses, [p.detach().clone() for p in peft_model.parameters() if p.requires_grad], calls["n"]

    whole, weights, _ = trained()
    ck = Checkpoints(tmp_path, interval=0)  # saves after every step
    state = lora_fit.state_path(ck, kw["seed"])
    with pytest.raises(KeyboardInterrupt):
        trained(ck, crash_at=stop_after)
    assert torch_load_sealed(state)["step"] == stop_after
    resumed, resumed_weights, steps = trained(ck)
    assert steps == kw["max_steps"] - stop_after  # only the rest was trained
    assert resumed == whole
    assert all(torch.equal(a, b) for a, b in zip(weights, resumed_weights, strict=True))
    other, _, steps = trained(ck, key="other training")  # a state saved for other training is not used
    assert other == whole and steps == kw["max_steps"]
    state.write_bytes(b"not a checkpoint")  # nor one that cannot be read
    again, _, steps = trained(ck)
    assert again == whole and steps == kw["max_steps"]


def test_training_mode_restores_after_exception(tiny):
    before = snapshot(tiny, ["x = 1"])
    with pytest.raises(ValueError):
        with new_adapter(tiny.model, spec_for(tiny.model), 0) as peft_model:
            with training_mode(peft_model):
                assert peft_model.training
                assert all(p.requires_grad == ("lora_" in n) for n, p in peft_model.named_parameters())
                raise ValueError("inside")
    assert_pristine(tiny, ["x = 1"], before)


def test_adapter_misuse_is_a_clear_error(tiny, tmp_path, smoke):
    with pytest.raises(AtlasError, match="no saved LoRA adapter"):
        with attached_adapter(tiny.model, tmp_path):
            pass
    adapter = smoke[2]["lora_training"].adapter_dir
    with attached_adapter(tiny.model, adapter) as peft_model:
        with pytest.raises(AtlasError, match="already carries adapter"):
            with attached_adapter(tiny.model, adapter):
                pass
        with pytest.raises(AtlasError, match="out of range"):
            with adapter_disabled_at(peft_model, 99):
                pass
    assert count_hooks(tiny.model) == 0


# ---- LoRA training ----------------------------------------------------------------------------------


def test_training_reduces_loss(tiny, smoke):
    ctx, _, results, _ = smoke
    res: LoraResult = results["lora_training"]
    pairs = lora_training.training_pairs(ctx)
    base = lora_fit.pair_losses(tiny.model, pairs)
    with attached_adapter(tiny.model, res.adapter_dir) as peft_model:
        trained = lora_fit.pair_losses(peft_model, pairs)
    assert len(pairs) == SMOKE.lora_items * len(ctx.families)
    # 20 steps at the 3e-4 peak on a random-init model: every pair's loss falls, the mean by ~0.14 nats
    assert (trained < base).all() and trained.mean() < base.mean() - 0.1, (base, trained)
    first = int(np.random.default_rng(ctx.seed).permutation(len(pairs))[0])
    assert res.loss_curve[0] == pytest.approx(base[first], rel=1e-4)  # B = 0 at init: step 1 sees the base model
    assert res.steps == len(res.loss_curve) == SMOKE.lora_max_steps and not res.converged
    assert res.final_loss == pytest.approx(trained.mean(), rel=1e-5)  # the saved adapter over every pair
    assert (res.rank, res.alpha, res.batch_size, res.targets) == (8, 16, 1, ["q_proj", "k_proj", "v_proj", "o_proj"])
    assert res.train_seconds > 0 and res.seed == 0
    # the pairs still above the target loss, named and worst first
    items = lora_training.training_items(ctx)
    above = [j for j in range(len(pairs)) if trained[j] >= res.target_loss]
    assert above and len(res.above_target) == len(above)
    assert [a["loss"] for a in res.above_target] == sorted((a["loss"] for a in res.above_target), reverse=True)
    want = sorted(
        ((items[j][0], items[j][1].prompt, items[j][1].target, trained[j]) for j in above), key=lambda t: -t[3]
    )
    for a, (fam, prompt, target, loss) in zip(res.above_target, want):
        assert (a["family"], a["prompt"], a["target"]) == (fam, prompt, target)
        assert a["loss"] == pytest.approx(loss, rel=1e-5)


def test_loss_is_on_the_target_tokens_only(tiny):
    ids, labels = lora_fit.make_batch([5, 6, 7], [8, 9], "cpu")
    assert ids.tolist() == [[5, 6, 7, 8, 9]] and labels.tolist() == [[-100, -100, -100, 8, 9]]
    with torch.no_grad():
        loss = lora_fit.target_loss_of(tiny.model, ids, labels).item()
        logits = tiny.model(input_ids=ids).logits[0].float()
    expect = torch.nn.functional.cross_entropy(logits[2:4], torch.tensor([8, 9])).item()
    assert loss == pytest.approx(expect, rel=1e-5)
    assert loss == pytest.approx(lora_fit.pair_losses(tiny.model, [([5, 6, 7], [8, 9])])[0], rel=1e-5)


def test_kl_per_family_matches_trained_model(tiny, smoke):
    ctx, before, results, _ = smoke
    res: LoraResult = results["lora_training"]
    with attached_adapter(tiny.model, res.adapter_dir) as peft_model:
        trained = plain_logprobs(peft_model, encode(tiny.tokenizer, ctx.prompts))
    kl = kl_divergence(before.logprobs, trained).numpy()
    assert list(res.kl_per_family) == list(ctx.families)
    for name, sl in ctx.family_slices.items():
        est = res.kl_per_family[name]
        assert est.value == pytest.approx(kl[sl].mean(), rel=1e-3, abs=1e-6)
        assert est.lo <= est.value <= est.hi and est.n == sl.stop - sl.start
    assert max(e.value for e in res.kl_per_family.values()) > 1e-3


def test_training_is_deterministic_per_seed(tiny, smoke, tmp_path):
    ctx, _, results, _ = smoke
    first: LoraResult = results["lora_training"]
    again = lora_training.run(make_ctx(tiny, out_dir=tmp_path / "again"))
    assert again.loss_curve == first.loss_curve
    a = load_file(Path(first.adapter_dir) / "adapter_model.safetensors")
    b = load_file(Path(again.adapter_dir) / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    other = lora_training.run(
        make_ctx(tiny, out_dir=tmp_path / "other", seed=1, profile=dataclasses.replace(SMOKE, lora_max_steps=3))
    )
    assert other.loss_curve != first.loss_curve[:3]


def test_training_stops_at_the_target_loss(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(lora_training, "LEARNING_RATE", 1e-2)
    profile = dataclasses.replace(SMOKE, lora_items=1, lora_max_steps=300, lora_target_loss=2.5)
    res = lora_training.run(make_ctx(tiny, out_dir=tmp_path, profile=profile, families=["arithmetic", "copying"]))
    assert res.converged and res.steps < profile.lora_max_steps
    assert np.mean(res.loss_curve[-2:]) < 2.5  # the running mean over the last epoch triggered the stop
    assert res.final_loss < 2.5  # and a pass over every pair with the final adapter confirmed it
    assert np.mean(res.loss_curve[-2:]) < np.mean(res.loss_curve[:2])
    assert res.learning_rate == 1e-2


def test_adapter_saved_with_its_provenance(smoke):
    ctx, _, results, _ = smoke
    d = Path(results["lora_training"].adapter_dir)
    assert d == ctx.out_dir / "lora_adapter_seed0"
    assert {"adapter_config.json", "adapter_model.safetensors", "atlas_meta.json"} <= {p.name for p in d.iterdir()}
    meta = json.loads((d / "atlas_meta.json").read_text())
    assert meta["key"] == lora_training.adapter_key(ctx) and meta["steps"] == SMOKE.lora_max_steps
    left = [p for p in ctx.out_dir.iterdir() if p.name.startswith(".") and p.name != ".locks"]  # the lock stays
    assert not left, "temporary folders left behind"


def test_saved_adapter_is_reused_and_a_stale_one_is_not(tiny, smoke, monkeypatch, tmp_path):
    ctx, _, results, _ = smoke
    fresh = make_ctx(tiny, out_dir=ctx.out_dir)  # a later run over the same out dir: nothing shared yet

    def no_training(_):
        raise AssertionError("trained again although a matching adapter was saved")

    monkeypatch.setattr(lora_training, "run", no_training)
    assert lora_training.ensure_adapter(fresh) == Path(results["lora_training"].adapter_dir)
    other_seed = make_ctx(tiny, out_dir=ctx.out_dir, seed=5)
    with pytest.raises(AssertionError, match="trained again"):
        lora_training.ensure_adapter(other_seed)  # no adapter for seed 5: it must train


# ---- transfer -----------------------------------------------------------------------------------------


def test_transfer_last_layer_recovers_exactly(smoke):
    ctx, _, results, _ = smoke
    res: TransferResult = results["transfer"]
    n = ctx.runner.dims.n_layers
    assert res.layers == list(range(n)) and res.families == list(ctx.families)
    assert res.mean_recovery[-1].value == pytest.approx(1.0, abs=1e-5)
    for fam, rec in res.recovery.items():
        assert len(rec) == n
        if res.base_kl[fam] >= transfer.MIN_BASE_KL:
            assert rec[-1] == pytest.approx(1.0, abs=1e-5)
        else:
            assert all(np.isnan(rec))
    vals = np.array([e.value for e in res.mean_recovery])
    assert np.all(vals <= 1.0 + 1e-9)  # KL >= 0: nothing recovers more than all of it
    assert vals[0] < 1.0 - 1e-6  # patching after layer 0 leaves the later layers' adapter out
    assert res.top_layers[0] == int(np.argmax(vals)) and len(res.top_layers) == min(3, n)
    assert res.zone == [i for i in range(n) if vals[i] >= res.zone_threshold] and n - 1 in res.zone
    assert min(res.base_kl.values()) >= 0 and max(res.base_kl.values()) > 1e-3


def test_transfer_recovery_matches_a_direct_patch(tiny, smoke):
    """Layer 1's recovery recomputed with plain hooked forwards (no runner prefix reuse)."""
    from atlas_core.interventions import Patch, intervene

    ctx, before, results, _ = smoke
    enc = encode(tiny.tokenizer, ctx.prompts)
    with attached_adapter(tiny.model, results["lora_training"].adapter_dir) as peft_model:
        trained_runner = lora_training.trained_runner(ctx, peft_model)
        resid = trained_runner.residuals[2].clone()
        trained = plain_logprobs(peft_model, enc)
    with intervene(tiny.model, [Patch(Site("resid", 1), resid)]):
        patched = plain_logprobs(tiny.model, enc)
    base_kl = kl_divergence(trained, before.logprobs).numpy()
    patched_kl = kl_divergence(trained, patched).numpy()
    res: TransferResult = results["transfer"]
    assert res.mean_recovery[1].value == pytest.approx(1 - patched_kl.mean() / base_kl.mean(), abs=1e-4)
    for name, sl in ctx.family_slices.items():
        assert res.recovery[name][1] == pytest.approx(1 - patched_kl[sl].mean() / base_kl[sl].mean(), abs=1e-3)
        assert res.base_kl[name] == pytest.approx(base_kl[sl].mean(), rel=1e-3, abs=1e-7)


# ---- adapter ablation -----------------------------------------------------------------------------


def test_adapter_ablation_shapes_and_correlation(smoke):
    ctx, _, results, _ = smoke
    res: AdapterAblationResult = results["adapter_ablation"]
    n = ctx.runner.dims.n_layers
    means = np.array([e.value for e in res.kl])
    assert res.layers == list(range(n)) and len(res.norm) == n
    assert np.all(means >= 0) and means.max() > 1e-4
    assert all(e.lo <= e.value <= e.hi for e in res.kl)
    assert np.all(np.array(res.norm) > 0)
    assert res.pearson == pytest.approx(np.corrcoef(res.norm, means)[0, 1], abs=1e-9)
    lo, hi = res.pearson_ci
    assert -1 - 1e-9 <= lo <= hi <= 1 + 1e-9
    assert res.top_layers == [int(i) for i in np.argsort(-means, kind="stable")[:5]]


def test_adapter_norms_match_the_saved_weights(tiny, smoke):
    ctx, _, results, _ = smoke
    res: AdapterAblationResult = results["adapter_ablation"]
    d = Path(results["lora_training"].adapter_dir)
    weights = load_file(d / "adapter_model.safetensors")
    cfg = json.loads((d / "adapter_config.json").read_text())
    scale = cfg["lora_alpha"] / cfg["r"]
    expect = []
    for layer in range(ctx.runner.dims.n_layers):
        total = 0.0
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            key = next(k for k in weights if f"layers.{layer}.self_attn.{proj}.lora_A" in k)
            a, b = weights[key], weights[key.replace("lora_A", "lora_B")]
            total += float(torch.linalg.matrix_norm(b @ a)) * scale
        expect.append(total)
    assert res.norm == pytest.approx(expect, rel=1e-5)


def test_disabling_the_adapter_everywhere_gives_the_base_model(tiny, smoke):
    from contextlib import ExitStack

    ctx, before, results, _ = smoke
    enc = encode(tiny.tokenizer, ctx.prompts)
    with attached_adapter(tiny.model, results["lora_training"].adapter_dir) as peft_model:
        runner = lora_training.trained_runner(ctx, peft_model)
        noop = runner.sweep([Variant("noop", (Noop(Site("resid", 1)),))])
        with ExitStack() as stack:
            for layer in range(ctx.runner.dims.n_layers):
                stack.enter_context(adapter_disabled_at(peft_model, layer))
            off = plain_logprobs(peft_model, enc)
        on = plain_logprobs(peft_model, enc)
    assert noop.kl.max() < 1e-6  # the prefix-reused identity reproduces the trained run
    assert torch.equal(off, before.logprobs)  # every LoRA module off == the base projections, exactly
    assert kl_divergence(on, off).mean().item() > 1e-4  # and the flag is restored on exit


def test_results_are_json(smoke):
    _, _, results, _ = smoke
    lora = as_json(results["lora_training"])
    assert set(lora) == {f.name for f in dataclasses.fields(LoraResult)}
    assert set(lora["kl_per_family"]["arithmetic"]) == {"value", "lo", "hi", "n"}
    tr = as_json(results["transfer"])
    assert set(tr) == {f.name for f in dataclasses.fields(TransferResult)}
    assert tr["mean_recovery"][-1]["value"] == pytest.approx(1.0, abs=1e-5)
    ab = as_json(results["adapter_ablation"])
    assert set(ab) == {f.name for f in dataclasses.fields(AdapterAblationResult)} and len(ab["pearson_ci"]) == 2


# ---- the real model ------------------------------------------------------------------------------


@pytest.mark.real_model
@pytest.mark.pair  # numbers covered in the default tier by the golden check
def test_real_lora_transfer_coder05(coder05, tmp_path):
    """One family, two items, 30 steps at most: the loss falls and the last residual transfers exactly."""
    profile = dataclasses.replace(get_profile("ci"), n_items=2, lora_items=2, lora_max_steps=30, n_boot=200)
    ctx = make_ctx(coder05, out_dir=tmp_path, profile=profile, families=["factual_recall"])
    before = snapshot(coder05, ctx.prompts)
    lora: LoraResult = lora_training.run(ctx)
    res = transfer.run(ctx)  # reads the adapter this context trained
    assert_pristine(coder05, ctx.prompts, before)
    pairs = lora_training.training_pairs(ctx)
    base_loss = lora_fit.pair_losses(coder05.model, pairs)
    with attached_adapter(coder05.model, lora.adapter_dir) as peft_model:
        trained_loss = lora_fit.pair_losses(peft_model, pairs)
    assert trained_loss.mean() < 0.5 * base_loss.mean(), (base_loss, trained_loss)
    assert np.mean(lora.loss_curve[-2:]) < np.mean(lora.loss_curve[:2])
    assert res.mean_recovery[-1].value == pytest.approx(1.0, abs=1e-4)
    assert res.base_kl["factual_recall"] > 1e-3
    assert np.isfinite(res.mean_recovery[0].value) and res.mean_recovery[0].value < res.mean_recovery[-1].value
