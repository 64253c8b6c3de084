"""The sweep runner on tiny-qwen2: batched, chunked, prefix-reusing sweeps give the same log-probs as the
naive path (one hooked stock forward per variant) and as one prompt at a time; identity variants are
exact; patching a run with its own activations recovers it; mean/resample ablation draw on the
reference set; the logit lens; bad input fails before any forward. Property-based, CPU fp32.
"""

from __future__ import annotations

import string
from contextlib import contextmanager
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from atlas_core import AtlasError, packing
from atlas_core.forward import encode, naive_logprobs, plain_logprobs
from atlas_core.hooks import count_hooks, hooked
from atlas_core.interventions import Ablate, ExitAt, Noop, Patch, Skip, Steer, Variant
from atlas_core.metrics import argmax_match, kl_divergence, kl_recovery, topk_overlap
from atlas_core.models.adapters import (
    adapter_for,
    decoder,
    final_norm,
    layer_part,
    layer_window,
    layers,
    lm_head,
)
from atlas_core.runner import Runner
from atlas_core.sites import SITE_KINDS, Dims, Site, dims

ALPHABET = string.ascii_letters + string.digits + " .,:=+()"
PROMPT = st.text(alphabet=ALPHABET, min_size=1, max_size=10)
PROMPTS = st.lists(PROMPT, min_size=1, max_size=4)
DISTINCT = st.lists(PROMPT, min_size=2, max_size=4, unique=True)
FEW = settings(max_examples=15, deadline=None)
ATOL = 1e-5  # fp32 log-probs, tiny model


# ---- helpers ---------------------------------------------------------------------------------------
@contextmanager
def patched(obj, name, value):
    """``setattr`` for the block (hypothesis tests cannot take the function-scoped ``monkeypatch``)."""
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


@st.composite
def sites(draw, d, kinds=SITE_KINDS):
    kind = draw(st.sampled_from(kinds))
    layer = draw(st.integers(0, d.n_layers - 1))
    head = draw(st.integers(0, d.n_heads - 1)) if kind == "head" else None
    return Site(kind, layer, head)


@st.composite
def recipes(draw, d, max_ivs=3):
    """A variant as a recipe (built once the runner's padded shape is known)."""
    items = []
    for _ in range(draw(st.integers(0, max_ivs))):
        what = draw(st.sampled_from(["zero", "mean", "resample", "steer", "patch", "skip", "noop"]))
        seed = draw(st.integers(0, 2**16))
        if what == "steer":
            items.append(
                (
                    "steer",
                    draw(st.integers(0, d.n_layers - 1)),
                    draw(st.floats(-6, 6)),
                    draw(st.sampled_from(["all", "last"])),
                    seed,
                )
            )
        elif what == "skip":
            items.append(
                ("skip", tuple(sorted(set(draw(st.lists(st.integers(0, d.n_layers - 1), min_size=1, max_size=2))))))
            )
        else:
            items.append((what, draw(sites(d)), draw(st.sampled_from(["all", "last"])), seed))
    if draw(st.integers(0, 4)) == 0:
        items.append(("exit", draw(st.integers(0, d.n_layers - 1))))
    return items


def build(recipe, runner: Runner, name: str = "v") -> Variant:
    d, enc = runner.dims, runner.enc
    ivs = []
    for item in recipe:
        kind = item[0]
        if kind in ("zero", "mean", "resample"):
            ivs.append(Ablate(item[1], kind))
        elif kind == "noop":
            ivs.append(Noop(item[1]))
        elif kind == "patch":
            site, positions, seed = item[1:]
            w = d.head_dim if site.kind == "head" else d.d_model
            value = torch.randn(enc.n, enc.seq, w, generator=torch.Generator().manual_seed(seed))
            ivs.append(Patch(site, value, positions))
        elif kind == "steer":
            layer, strength, positions, seed = item[1:]
            direction = torch.randn(d.d_model, generator=torch.Generator().manual_seed(seed))
            ivs.append(Steer(layer, direction, strength, positions))
        elif kind == "skip":
            ivs.append(Skip(item[1]))
        else:
            ivs.append(ExitAt(item[1]))
    if len([iv for iv in ivs if isinstance(iv, ExitAt)]) > 1:
        ivs = [iv for iv in ivs if not isinstance(iv, ExitAt)]
    return Variant(name, tuple(ivs))


def for_prompt(variant: Variant, i: int) -> Variant:
    """The variant for prompt ``i`` run alone: per-prompt values keep that prompt's row (the last positions
    line up with the unpadded prompt because the runner pads on the left)."""
    ivs = []
    for iv in variant.interventions:
        if isinstance(iv, Patch) or (isinstance(iv, Ablate) and iv.mode == "resample"):
            iv = replace(iv, value=iv.value[i : i + 1])
        ivs.append(iv)
    return Variant(variant.name, tuple(ivs))


def one_at_a_time(runner: Runner, variants) -> torch.Tensor:
    """[V, P, vocab]: every prompt alone (no padding), every variant its own hooked stock forward."""
    resolved = [runner.resolve(v) for v in variants]
    cols = [
        naive_logprobs(runner.model, runner.tokenizer, [p], [for_prompt(v, i) for v in resolved])[:, 0]
        for i, p in enumerate(runner.prompts)
    ]
    return torch.stack(cols, dim=1)


def window(runner: Runner, variant: Variant) -> tuple[int, int]:
    """The decoder layers ``[start, end)`` the runner's plan for ``variant`` runs."""
    (stop,) = runner.check([variant])
    plan = runner.plan(runner.resolve(variant), stop)
    return plan.start, plan.end


def max_diff(a, b) -> float:
    return (a - b).abs().max().item()


def assert_lp_close(a, b, msg="") -> None:
    """Log-probs of two paths whose batches differ in shape (padded or not, length-bucket chunks, variants x
    prompts): fp32 kernels round differently, ~1e-5 and growing with |log-prob| (as for a prompt alone)."""
    torch.testing.assert_close(a, b, atol=ATOL, rtol=2e-6, msg=(lambda m: f"{m}\n{msg}") if msg else None)


# ---- identity -------------------------------------------------------------------------------------
@FEW
@given(prompts=PROMPTS)
def test_clean_pass_matches_the_plain_forward_and_the_identity_variant_is_exact(tiny, prompts):
    r = Runner(tiny.model, tiny.tokenizer, prompts)
    plain = plain_logprobs(tiny.model, r.enc)
    assert_lp_close(r.clean_logprobs, plain)
    assert torch.equal(r.logprobs([Variant("clean")])[0], r.clean_logprobs)
    n = r.dims.n_layers
    assert r.residuals.shape == (n + 1, r.enc.n, r.enc.seq, r.dims.d_model)
    assert torch.equal(r.last_residual(n - 1), r.residuals[n][:, -1].float())


@FEW
@given(data=st.data(), prompts=PROMPTS, seed=st.integers(0, 2**16))
def test_identity_variants_reproduce_the_clean_run(tiny, data, prompts, seed):
    r = Runner(tiny.model, tiny.tokenizer, prompts)
    d = r.dims
    noop_sites = data.draw(st.lists(sites(d), min_size=1, max_size=3))
    layer = data.draw(st.integers(0, d.n_layers - 1))
    direction = torch.randn(d.d_model, generator=torch.Generator().manual_seed(seed))
    variants = [
        Variant("clean"),
        Variant("noop", tuple(Noop(s) for s in noop_sites)),
        Variant("steer0", (Steer(layer, direction, 0.0),)),
        Variant("steer0-last", (Steer(layer, direction, 0.0, "last"),)),
        Variant("exit-last", (ExitAt(d.n_layers - 1),)),
    ]
    lp = r.logprobs(variants)
    # nothing touched: the runner hands back the clean run bit for bit
    assert torch.equal(lp[0], r.clean_logprobs) and torch.equal(lp[-1], r.clean_logprobs)
    # a hooked identity recomputes layers over chunks of other shapes than the clean pass (length buckets
    # drop padding): equal up to fp32 kernel rounding, which scales with |log-prob| as in the unpadded case
    for v, row in zip(variants, lp):
        torch.testing.assert_close(row, r.clean_logprobs, atol=ATOL, rtol=2e-6, msg=lambda m: f"{v.name}: {m}")
    stats = r.sweep(variants)
    assert np.all(stats.kl <= 1e-6) and stats.argmax_match.all() and np.all(stats.topk_overlap == 1)


# ---- batched sweep == per-variant loop == one prompt at a time -------------------------------------
@FEW
@given(data=st.data(), prompts=PROMPTS)
def test_batched_sweep_equals_naive_loop_and_one_prompt_at_a_time(tiny, data, prompts):
    d = dims(tiny.model)
    rec = data.draw(st.lists(recipes(d), min_size=1, max_size=4))
    assume_resample_ok = len(prompts) >= 2
    if not assume_resample_ok:
        rec = [[it for it in r_ if it[0] != "resample"] for r_ in rec]
    r = Runner(tiny.model, tiny.tokenizer, prompts)
    variants = [build(x, r, f"v{i}") for i, x in enumerate(rec)]
    batched = r.logprobs(variants)
    naive = naive_logprobs(tiny.model, tiny.tokenizer, prompts, [r.resolve(v) for v in variants])
    alone = one_at_a_time(r, variants)
    assert_lp_close(batched, naive, msg=rec)
    # a prompt alone, unpadded, goes through other kernels (no attention mask): the stock forward itself
    # differs padded vs unpadded by up to 1.24e-5 on log-probs near -12 (300 random cases; median 2.9e-6),
    # so here the fp32 tolerance also scales with |log-prob|; probabilities stay within 1e-5 absolute
    torch.testing.assert_close(batched, alone, atol=ATOL, rtol=2e-6, msg=lambda m: f"{m}\n{rec}")
    assert max_diff(batched.exp(), alone.exp()) <= ATOL
    assert torch.isfinite(batched).all()


@FEW
@given(data=st.data(), prompts=PROMPTS)
def test_chunking_to_a_tiny_memory_budget_changes_nothing(tiny, data, prompts):
    d = dims(tiny.model)
    rec = data.draw(st.lists(recipes(d), min_size=2, max_size=5))
    big = Runner(tiny.model, tiny.tokenizer, prompts, memory_mb=4096)
    small = Runner(tiny.model, tiny.tokenizer, prompts, memory_mb=0)  # one row per chunk: many chunks
    assert small.rows_per_chunk() == 1 and big.rows_per_chunk() >= len(rec) * len(prompts)
    if len(prompts) < 2:
        rec = [[it for it in r_ if it[0] != "resample"] for r_ in rec]
    variants = [build(x, big, f"v{i}") for i, x in enumerate(rec)]
    # one-row chunks run unpadded: the same padded-vs-unpadded kernel tolerance as the one-at-a-time test
    torch.testing.assert_close(small.clean_logprobs, big.clean_logprobs, atol=ATOL, rtol=2e-6)
    torch.testing.assert_close(
        small.logprobs(variants), big.logprobs(variants), atol=ATOL, rtol=2e-6, msg=lambda m: f"{m}\n{rec}"
    )


def test_one_row_chunks_split_the_clean_pass_too(tiny):
    prompts = ["a", "hello", "x = 1 +", "(())"]
    small = Runner(tiny.model, tiny.tokenizer, prompts, memory_mb=0)
    assert small.rows_per_chunk() == 1 and len(small._prompt_blocks()) == 4
    big = Runner(tiny.model, tiny.tokenizer, prompts)
    # residuals reach |x| ~ 12 on tiny-qwen2: fp32 batch-shape rounding is relative, so compare relative to scale
    scale = max(1.0, big.residuals.abs().max().item())
    assert max_diff(small.residuals, big.residuals) <= ATOL * scale
    assert_lp_close(small.clean_logprobs, big.clean_logprobs)


# ---- clean-prefix reuse ------------------------------------------------------------------------------
@FEW
@given(data=st.data(), prompts=PROMPTS)
def test_prefix_reuse_runs_only_layers_from_the_first_touched_one_and_equals_full_recompute(
    tiny, data, prompts, forward_counter
):
    d = dims(tiny.model)
    site = data.draw(sites(d))
    r = Runner(tiny.model, tiny.tokenizer, prompts)
    v = Variant("abl", (Ablate(site),))
    # the residual after layer L is cached too: an intervention there starts the run at L + 1
    start = site.layer + 1 if site.kind == "resid" else site.layer
    assert window(r, v) == (start, d.n_layers)
    assert window(r, Variant("noop", (Noop(site),))) == (site.layer, d.n_layers)
    r.clean_logprobs  # the clean pass is cached before counting
    with forward_counter(tiny.model) as calls:
        reused = r.logprobs([v])
    ran = {c for c in calls if c.startswith("L")}
    assert ran == {f"L{i}" for i in range(start, d.n_layers)}, f"layers below {start} ran again"
    assert "embed" not in calls
    full = naive_logprobs(tiny.model, tiny.tokenizer, prompts, [v])
    assert_lp_close(reused, full)


def test_residual_interventions_on_the_last_layer_and_at_the_exit_layer(tiny, forward_counter):
    """The residual after the last (or exit) layer is cached: such variants run no layer at all, yet are not
    the clean run; mixed with untouched variants, each keeps its own result."""
    prompts = ["hello world", "ab", "x = 1"]
    r = Runner(tiny.model, tiny.tokenizer, prompts)
    n = r.dims.n_layers
    direction = torch.randn(r.dims.d_model, generator=torch.Generator().manual_seed(0))
    variants = [
        Variant("clean"),
        Variant("zero-last", (Ablate(Site("resid", n - 1)),)),
        Variant("steer-last", (Steer(n - 1, direction, 3.0, "last"),)),
        Variant("exit1", (ExitAt(1),)),
        Variant("steer-exit1", (Steer(1, direction, 3.0), ExitAt(1))),
        Variant("noop-last", (Noop(Site("resid", n - 1)),)),
    ]
    # a Noop hooks the stock layer as it runs: its layer runs (adapter ablation relies on that)
    assert [window(r, v) for v in variants] == [(n, n), (n, n), (n, n), (2, 2), (2, 2), (n - 1, n)]
    r.clean_logprobs
    with forward_counter(tiny.model) as calls:
        lp = r.logprobs(variants)
    # only the Noop's layer runs (once per length chunk: these prompts' lengths are far apart)
    assert {c for c in calls if c.startswith("L")} == {f"L{n - 1}"}, "a layer ran though its output is cached"
    naive = naive_logprobs(tiny.model, tiny.tokenizer, prompts, variants)
    assert_lp_close(lp, naive)
    assert torch.equal(lp[0], r.clean_logprobs)
    for i in (1, 2, 3, 4):
        assert max_diff(lp[i], r.clean_logprobs) > 1e-2, variants[i].name
    assert_lp_close(lp[5], r.clean_logprobs)  # the LM head over a chunk of another shape


# ---- patching, own activations ------------------------------------------------------------------------
@FEW
@given(data=st.data(), prompts=PROMPTS, positions=st.sampled_from(["all", "last"]))
def test_patching_a_run_with_its_own_activations_recovers_it_fully(tiny, data, prompts, positions):
    d = dims(tiny.model)
    site = data.draw(sites(d))
    r = Runner(tiny.model, tiny.tokenizer, prompts)
    own = r.record([site])[site]
    patched, ablated = Variant("own", (Patch(site, own, positions),)), Variant("zero", (Ablate(site),))
    lp = r.logprobs([patched, ablated])
    assert_lp_close(lp[0], r.clean_logprobs)
    stats = r.sweep([patched, ablated])
    rec = kl_recovery(stats.kl[0], stats.kl[1])
    # the patched rows differ from the clean ones only by batch-shape rounding (~1e-6 in log-probs), i.e. a
    # KL of order 1e-12: the ratio is held to 1e-6 wherever the ablation moved the distribution at all
    ok = stats.kl[1] > 1e-4
    assert ok.any() or site.kind in ("head", "attn"), "zero ablation changed nothing: the test shows nothing"
    assert np.all(stats.kl[0] <= 1e-9)
    assert np.all(np.abs(rec[ok] - 1) <= 1e-6), rec


def test_record_sites_agree_with_the_cached_residuals(tiny):
    r = Runner(tiny.model, tiny.tokenizer, ["hello world", "ab", "x+y="])
    d = r.dims
    for layer in range(d.n_layers):
        got = r.record(
            [Site("resid", layer), Site("delta", layer), Site("attn", layer), Site("mlp", layer)]
            + [Site("head", layer, h) for h in range(d.n_heads)]
        )
        resid, delta = got[Site("resid", layer)], got[Site("delta", layer)]
        assert torch.equal(resid, r.residuals[layer + 1])
        torch.testing.assert_close(delta, r.residuals[layer + 1] - r.residuals[layer], atol=1e-6, rtol=0)
        # Qwen2: the block writes attention + MLP to the residual
        torch.testing.assert_close(got[Site("attn", layer)] + got[Site("mlp", layer)], delta, atol=1e-5, rtol=1e-5)
        heads = torch.cat([got[Site("head", layer, h)] for h in range(d.n_heads)], dim=-1)
        o_proj = layer_part(tiny.model, layer, adapter_for(tiny.model).o_proj)
        with torch.inference_mode():
            torch.testing.assert_close(o_proj(heads), got[Site("attn", layer)], atol=1e-5, rtol=1e-5)


# ---- head ablation through the runner -------------------------------------------------------------------
@FEW
@given(layer=st.integers(0, 3), head=st.integers(0, 3), prompts=PROMPTS)
def test_runner_head_ablation_changes_only_that_slice(tiny, layer, head, prompts):
    d = dims(tiny.model)
    r = Runner(tiny.model, tiny.tokenizer, prompts)
    clean = torch.cat([r.record([Site("head", layer, h)])[Site("head", layer, h)] for h in range(d.n_heads)], -1)
    seen: list[torch.Tensor] = []

    def rec(module, args, kwargs, output):  # a forward hook sees o_proj's input after every pre-hook
        seen.append((args[0] if args else kwargs["input"]).detach().clone())

    o_proj = layer_part(tiny.model, layer, adapter_for(tiny.model).o_proj)
    r.clean_logprobs  # the clean pass runs before recording
    packings = []
    plan = packing.plan
    with (
        hooked([(o_proj, "forward", rec)]),
        patched(packing, "plan", lambda *a, **k: packings.append(plan(*a, **k)) or packings[-1]),
    ):
        r.logprobs([Variant("h", (Ablate(Site("head", layer, head)),))])
    # one variant: the chunks' rows are the prompt blocks in order, each chunk trimmed of the padding none of
    # its prompts needs, then packed; unpacked, each chunk is in the padded layout again
    order = torch.cat([idx for idx, _ in r.blocks()]).tolist()
    lo, hi = head * d.head_dim, (head + 1) * d.head_dim
    assert len(seen) == len(packings) and sum(pk.batch for pk in packings) == len(order)
    for pk, packed in zip(packings, seen):
        x = pk.unpack(packed)
        rows, order = order[: x.shape[0]], order[x.shape[0] :]
        ref, real = clean[rows][:, -x.shape[1] :], r.enc.attention_mask[rows][:, -x.shape[1] :].bool()
        assert real[:, 0].any()  # the first kept column is some prompt's first token
        assert torch.count_nonzero(packed[..., lo:hi]) == 0
        # the clean recording ran at full padded width, this chunk packed: fp32 kernels differ by ~1e-6
        torch.testing.assert_close(x[real][:, :lo], ref[real][:, :lo], atol=1e-5, rtol=0)
        torch.testing.assert_close(x[real][:, hi:], ref[real][:, hi:], atol=1e-5, rtol=0)


# ---- mean and resample ---------------------------------------------------------------------------------
@FEW
@given(data=st.data(), prompts=PROMPTS, reference=DISTINCT)
def test_mean_ablation_uses_the_reference_mean(tiny, data, prompts, reference):
    d = dims(tiny.model)
    site = data.draw(sites(d))
    r = Runner(tiny.model, tiny.tokenizer, prompts, reference_prompts=reference)
    # the mean over every real token of the reference prompts, each run alone (no padding at all)
    total, count = 0.0, 0
    for p in reference:
        alone = Runner(tiny.model, tiny.tokenizer, [p])
        act = alone.record([site])[site][0]
        total, count = total + act.double().sum(0), count + act.shape[0]
    want = (total / count).float()
    got = r.mean_activation(site)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    if set(prompts) != set(reference):
        own = Runner(tiny.model, tiny.tokenizer, prompts).mean_activation(site)
        assert not torch.allclose(own, got, atol=1e-4), "the mean came from the prompts, not the reference"
    lp = r.logprobs([Variant("mean", (Ablate(site, "mean"),))])
    manual = naive_logprobs(tiny.model, tiny.tokenizer, prompts, [Variant("m", (Ablate(site, "mean", want),))])
    assert max_diff(lp, manual) <= 1e-4


@FEW
@given(data=st.data(), prompts=DISTINCT, seed=st.integers(0, 1000))
def test_resample_never_uses_a_prompts_own_activations(tiny, data, prompts, seed):
    d = dims(tiny.model)
    site = data.draw(sites(d))
    r = Runner(tiny.model, tiny.tokenizer, prompts, seed=seed)
    acts = r.record([site])[site].clone()
    acts[~r.enc.attention_mask.bool()] = r.mean_activation(site)
    donors = r.resample_donors(site)
    assert donors.shape == acts.shape
    for i in range(len(prompts)):
        match = [j for j in range(len(prompts)) if torch.equal(donors[i], acts[j])]
        assert match and i not in match, f"prompt {i} got donors {match}"
    assert torch.equal(Runner(tiny.model, tiny.tokenizer, prompts, seed=seed).resample_donors(site), donors)
    resolved = r.resolve(Variant("rs", (Ablate(site, "resample"),)))
    assert torch.equal(resolved.interventions[0].value, donors)


def test_resample_donors_from_a_reference_set(tiny):
    site = Site("resid", 1)
    prompts, reference = ["hello", "ab", "x"], ["one two three", "four", "five six"]
    r = Runner(tiny.model, tiny.tokenizer, prompts, reference_prompts=reference, seed=3)
    ref = r.reference
    acts = ref.record([site])[site].clone()
    acts[~ref.enc.attention_mask.bool()] = r.mean_activation(site)
    donors = r.resample_donors(site)
    assert donors.shape == (len(prompts), r.enc.seq, r.dims.d_model)
    t = r.enc.seq
    for i in range(len(prompts)):  # right-aligned: the donor's last t positions
        assert any(torch.equal(donors[i], acts[j, -t:]) for j in range(len(reference)))


def test_resample_with_one_prompt_and_no_reference_is_refused(tiny, forward_counter):
    r = Runner(tiny.model, tiny.tokenizer, ["hello"])
    with forward_counter(tiny.model) as calls:
        with pytest.raises(AtlasError, match="reference_prompts"):
            r.logprobs([Variant("rs", (Ablate(Site("resid", 0), "resample"),))])
        assert calls == []


# ---- early exit ------------------------------------------------------------------------------------
@FEW
@given(layer=st.integers(0, 3), prompts=PROMPTS)
def test_exit_at_is_the_logit_lens_on_the_cached_residual(tiny, layer, prompts):
    model = tiny.model
    r = Runner(model, tiny.tokenizer, prompts)
    got = r.logprobs([Variant("exit", (ExitAt(layer),))])[0]
    with torch.inference_mode():
        lens = F.log_softmax(lm_head(model)(final_norm(model)(r.residuals[layer + 1][:, -1])).float(), -1)
    assert_lp_close(got, lens)  # the runner's LM head goes chunk by chunk (length buckets): other shapes
    with layer_window(model, 0, layer + 1):
        windowed = plain_logprobs(model, r.enc)
    assert_lp_close(got, windowed)
    # with an intervention below the exit the runner runs the window [site layer, exit]
    v = Variant("abl+exit", (Ablate(Site("mlp", 0)), ExitAt(layer)))
    assert window(r, v) == (0, layer + 1)
    assert_lp_close(r.logprobs([v]), naive_logprobs(model, tiny.tokenizer, prompts, [v]))


# ---- sweep statistics -----------------------------------------------------------------------------
def test_sweep_statistics_match_the_metrics_on_full_log_probs(tiny):
    prompts = ["hello world", "ab", "x = 1 +", "(("]
    r = Runner(tiny.model, tiny.tokenizer, prompts)
    variants = [Variant(f"L{i}", (Ablate(Site("resid", i)),)) for i in range(4)] + [Variant("clean")]
    targets = [5, 17, 200, 256]
    stats = r.sweep(variants, targets=targets, k=3)
    lp = r.logprobs(variants)
    ref = r.clean_logprobs
    assert stats.names == [v.name for v in variants]
    for vi in range(len(variants)):
        np.testing.assert_allclose(stats.kl[vi], kl_divergence(ref, lp[vi]).numpy(), atol=1e-6)
        np.testing.assert_array_equal(stats.argmax_match[vi], argmax_match(ref, lp[vi]).numpy())
        np.testing.assert_allclose(stats.topk_overlap[vi], topk_overlap(ref, lp[vi], 3).numpy())
        np.testing.assert_array_equal(stats.argmax[vi], lp[vi].argmax(-1).numpy())
        np.testing.assert_allclose(stats.target_prob[vi], lp[vi, range(4), targets].exp().numpy(), rtol=1e-6)
    np.testing.assert_allclose(stats.ref_target_prob, ref[range(4), targets].exp().numpy(), rtol=1e-6)
    assert np.all(stats.kl[:4] > 0) and np.all(stats.kl[4] == 0)
    # against another reference distribution: KL to itself is zero
    other = r.sweep(variants[:1], reference_logprobs=lp[0])
    assert np.all(other.kl <= 1e-6)


# ---- bad input: a clear error before any forward --------------------------------------------------------
def _bad_variants(d, n_prompts, seq):
    w = d.d_model
    return {
        "no variants": [],
        "not a variant": [Ablate(Site("resid", 0))],
        "layer out of range": [Variant("x", (Ablate(Site("resid", d.n_layers)),))],
        "head out of range": [Variant("x", (Ablate(Site("head", 1, d.n_heads)),))],
        "unknown site kind": [Variant("x", (Ablate(Site("neuron", 1)),))],
        "unknown site kind (mean)": [Variant("x", (Ablate(Site("neuron", 1), "mean"),))],
        "unknown mode": [Variant("x", (Ablate(Site("mlp", 1), "gaussian"),))],
        "direction of the wrong width": [Variant("x", (Steer(1, torch.zeros(w + 3), 1.0),))],
        "positions unknown": [Variant("x", (Steer(1, torch.zeros(w), 1.0, "first"),))],
        "patch positions unknown": [Variant("x", (Patch(Site("resid", 1), torch.zeros(n_prompts, seq, w), "mid"),))],
        "patch of the wrong width": [Variant("x", (Patch(Site("resid", 1), torch.zeros(n_prompts, seq, w - 1)),))],
        "patch of the wrong prompt count": [
            Variant("x", (Patch(Site("resid", 1), torch.zeros(n_prompts + 1, seq, w)),))
        ],
        "patch too short": [Variant("x", (Patch(Site("resid", 1), torch.zeros(n_prompts, seq - 1, w)),))],
        "resample donors of the wrong prompt count": [
            Variant("x", (Ablate(Site("resid", 1), "resample", torch.zeros(n_prompts - 1, seq, w)),))
        ],
        "two exits": [Variant("x", (ExitAt(1), ExitAt(2)))],
        "bad second variant": [
            Variant("ok", (Ablate(Site("resid", 0), "mean"),)),
            Variant("x", (Skip((d.n_layers,)),)),
        ],
    }


@pytest.mark.parametrize("case", list(_bad_variants(Dims(4, 4, 16, 64), 3, 7)))
@pytest.mark.parametrize("method", ["logprobs", "sweep"])
def test_bad_variants_raise_before_any_forward(tiny, case, method, forward_counter):
    prompts = ["hello", "ab", "x+y=1"]
    r = Runner(tiny.model, tiny.tokenizer, prompts)  # fresh: not even the clean pass has run
    variants = _bad_variants(r.dims, r.enc.n, r.enc.seq)[case]
    with forward_counter(tiny.model) as calls:
        with pytest.raises(AtlasError):
            getattr(r, method)(variants)
        assert calls == [], f"a forward ran before the error ({case})"
    assert count_hooks(tiny.model) == 0


@pytest.mark.parametrize("case", ["targets count", "target id", "reference count", "record site", "empty prompts"])
def test_bad_sweep_arguments_raise_before_any_forward(tiny, case, forward_counter):
    prompts = ["hello", "ab"]
    ok = [Variant("z", (Ablate(Site("resid", 0)),))]
    with forward_counter(tiny.model) as calls:
        with pytest.raises(AtlasError):
            if case == "empty prompts":
                Runner(tiny.model, tiny.tokenizer, [])
            r = Runner(tiny.model, tiny.tokenizer, prompts)
            if case == "targets count":
                r.sweep(ok, targets=[1])
            elif case == "target id":
                r.sweep(ok, targets=[1, 10**6])
            elif case == "reference count":
                r.sweep(ok, reference_logprobs=torch.zeros(3, 257))
            else:
                r.record([Site("head", 0, 99)])
        assert calls == []


def test_runner_restores_the_model_after_an_exception_mid_sweep(tiny):
    model = tiny.model
    r = Runner(model, tiny.tokenizer, ["hello", "ab"])
    clean = r.clean_logprobs.clone()
    types = decoder(model).config.layer_types

    def explode(module, args, kwargs, output):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        with hooked([(layers(model)[3], "forward", explode)]):
            r.logprobs([Variant("z", (Ablate(Site("resid", 2)), ExitAt(3)))])
    assert count_hooks(model) == 0
    assert len(layers(model)) == 4 and decoder(model).config.layer_types is types
    assert torch.equal(plain_logprobs(model, r.enc), plain_logprobs(model, encode(tiny.tokenizer, r.prompts)))
    assert max_diff(Runner(model, tiny.tokenizer, r.prompts).clean_logprobs, clean) == 0


# ---- padding -------------------------------------------------------------------------------------------
def test_sweep_rows_skip_padding_columns_no_prompt_needs(tiny):
    """A short-prompt bucket runs without the long prompt's padding: the decoder sees fewer columns."""
    prompts = ["a", "b", "x = 1 + 2 + 3 + 4 + 5 + 6"]
    r = Runner(tiny.model, tiny.tokenizer, prompts, memory_mb=0)  # one row per chunk
    r.clean_logprobs  # the clean pass (full width) runs before the hook
    widths: list[int] = []
    mlp = layer_part(tiny.model, 2, adapter_for(tiny.model).mlp)  # runs for this variant (it starts at layer 1)
    with hooked([(mlp, "forward", lambda m, args, kwargs, out: widths.append(out.shape[1]))]):
        r.logprobs([Variant("z", (Ablate(Site("resid", 0)), Ablate(Site("mlp", 1))))])
    assert sorted(widths) == sorted(r.enc.lengths) and max(r.enc.lengths) > min(r.enc.lengths)


def test_padded_sweep_chunks_equal_packed_ones(tiny, monkeypatch):
    """``PACK_TOKENS`` is a speed knob only: packed (several rows of back-to-back prompts, or every prompt in
    one row) and left-padded sweep chunks give the same log-probs."""
    import atlas_core.prompt_set as prompt_set

    prompts = ["a", "hello world", "x = 1 + 2 + 3 + 4 + 5", "(())", "def f(x): return x", "ab"]
    direction = torch.randn(dims(tiny.model).d_model, generator=torch.Generator().manual_seed(3))
    variants = [
        Variant("resid1", (Ablate(Site("resid", 1)),)),
        Variant("head", (Ablate(Site("head", 2, 1)),)),
        Variant("mlp-resample", (Ablate(Site("mlp", 0), "resample"),)),
        Variant("steer", (Steer(2, direction, 2.0),)),
        Variant("exit", (ExitAt(1),)),
    ]
    r = Runner(tiny.model, tiny.tokenizer, prompts)
    packed = r.logprobs(variants)
    for tokens in (0, 8, 4096):
        monkeypatch.setattr(prompt_set, "PACK_TOKENS", tokens)
        assert_lp_close(r.logprobs(variants), packed, f"PACK_TOKENS={tokens}")


# ---- what a run lends its runners: Sweeping -------------------------------------------------------------
class _Elsewhere:
    """A sweep backend that takes every sweep and runs it on a runner of its own (a stand-in for Ray)."""

    def __init__(self):
        self.swept: list[list[str]] = []

    def takes(self, runner) -> bool:
        return True

    def sweep(self, runner, variants, targets, k, reference_logprobs):
        self.swept.append([v.name for v in variants])
        return Runner(runner.model, runner.tokenizer, runner.prompts).sweep(variants, targets, k, reference_logprobs)


def test_a_runner_sweeps_where_its_sweeping_says_and_every_observer_sees_each_sweep(tiny):
    from atlas_core.runner import Sweeping

    prompts = ["a b c", "1 2 3 4"]
    variants = [Variant("L0", (Ablate(Site("resid", 0)),)), Variant("L1", (Ablate(Site("resid", 1)),))]
    sweeping = Sweeping()
    runner = Runner(tiny.model, tiny.tokenizer, prompts, sweeping=sweeping)
    seen: list[tuple[Runner, list[str]]] = []
    here = runner.sweep(variants)  # no observer yet: nothing seen
    backend = _Elsewhere()
    with sweeping.lent(observer=lambda r, vs, st: seen.append((r, [v.name for v in vs]))):
        runner.sweep(variants[:1])
        with sweeping.lent(backend=backend):
            there = runner.sweep(variants)
        runner.reference.sweep(variants[1:])  # the reference runner shares its parent's sweeping
    assert backend.swept == [["L0", "L1"]]
    assert [(r is runner, names) for r, names in seen] == [(True, ["L0"]), (True, ["L0", "L1"]), (True, ["L1"])]
    np.testing.assert_allclose(there.kl, here.kl, rtol=1e-6, atol=1e-9)
    runner.sweep(variants)
    assert len(seen) == 3 and sweeping.backend is None and sweeping.observers == []


def test_sweeping_lent_restores_every_field_even_when_the_block_raises(tmp_path):
    from atlas_core.checkpoints import Checkpoints
    from atlas_core.runner import Sweeping

    outer = Checkpoints(tmp_path / "outer")
    sweeping = Sweeping(checkpoints=outer)
    backend, observer = _Elsewhere(), (lambda r, vs, st: None)
    with pytest.raises(KeyboardInterrupt):
        with sweeping.lent(backend=backend, checkpoints=Checkpoints(tmp_path / "inner"), observer=observer):
            assert sweeping.backend is backend and sweeping.observers == [observer]
            with sweeping.lent(checkpoints=None):  # lending None takes the folder away for the inner block
                assert sweeping.checkpoints is None and sweeping.backend is backend
            assert sweeping.checkpoints.directory == tmp_path / "inner"
            raise KeyboardInterrupt
    assert sweeping.backend is None and sweeping.checkpoints is outer and sweeping.observers == []
