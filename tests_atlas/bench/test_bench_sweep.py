"""Benchmarks on Qwen2.5-Coder-0.5B, CPU fp32, 40 short prompts. Every ratio is measured in this process,
in the same test, and stored in ``benchmark.extra_info`` (speed is reported, never asserted; the
results are checked for agreement so a fast wrong path cannot pass).

1. Hook path overhead: the stock forward with a no-op hook on every layer's residual vs the plain stock
   forward over the same batch (aim: <= 1.03x).
2. Full layer-ablation sweep (zero-ablate the residual after every layer): ``Runner`` (clean pass +
   batched, prefix-reusing, last-position-only sweep) vs the naive loop (one hooked stock forward per
   variant over all positions, plus a clean forward for the reference) (aim: >= 3x).
3. The same sweep with nnsight (optional: skipped when it is not installed), one trace per variant
   zeroing ``model.model.layers[L].output``.
"""
from __future__ import annotations

import statistics
import time

import pytest
import torch

from atlas_core.interventions import Ablate, Noop, Variant, intervene
from atlas_core.metrics import kl_divergence
from atlas_core.runner import Runner, encode, naive_logprobs, plain_logprobs
from atlas_core.sites import Site, dims

pytestmark = [pytest.mark.real_model, pytest.mark.slow]

_SUBJECTS = ["France", "Italy", "Spain", "Japan", "Egypt", "Canada", "Brazil", "Kenya"]
_TEMPLATES = ["The capital of {} is", "{} is a country in", "The language of {} is", "People from {} are",
              "The flag of {} has"]
PROMPTS = [t.format(s) for t in _TEMPLATES for s in _SUBJECTS]  # 40 prompts, 5-7 tokens each
assert len(PROMPTS) == 40
P_ATOL = 1e-5  # probabilities agree across paths in fp32 (see tests_atlas/core/test_properties_real.py)


def layer_variants(n_layers: int) -> list[Variant]:
    return [Variant(f"L{layer}", (Ablate(Site("resid", layer)),)) for layer in range(n_layers)]


def test_bench_hook_overhead(benchmark, coder05):
    """A no-op hook on every layer vs the plain forward, interleaved round by round (order alternating)
    so that load drift on a shared CPU hits both alike."""
    model, enc = coder05.model, encode(coder05.tokenizer, PROMPTS)
    n = dims(model).n_layers
    noops = [Noop(Site("resid", layer)) for layer in range(n)]

    def plain():
        return plain_logprobs(model, enc)

    def hooked():
        with intervene(model, noops):
            return plain_logprobs(model, enc)

    assert torch.equal(plain(), hooked())  # warm-up, and the hooks change nothing
    times: dict[str, list[float]] = {"plain": [], "hooked": []}
    flip = [False]

    def one_round():
        order = [("hooked", hooked), ("plain", plain)] if flip[0] else [("plain", plain), ("hooked", hooked)]
        flip[0] = not flip[0]
        for name, fn in order:
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)

    benchmark.group = "hook-overhead"
    benchmark.pedantic(one_round, rounds=6, iterations=1)
    p_min, h_min = min(times["plain"]), min(times["hooked"])
    p_med, h_med = statistics.median(times["plain"]), statistics.median(times["hooked"])
    benchmark.extra_info.update({
        "prompts": len(PROMPTS), "layers_hooked": n, "rounds": len(times["plain"]),
        "plain_min_s": round(p_min, 4), "hooked_min_s": round(h_min, 4),
        "plain_median_s": round(p_med, 4), "hooked_median_s": round(h_med, 4),
        "overhead_ratio_min": round(h_min / p_min, 4), "overhead_ratio_median": round(h_med / p_med, 4),
        "aim": "<= 1.03",
    })
    print(f"\nhook overhead: plain {p_min:.3f}s hooked {h_min:.3f}s (min of {len(times['plain'])}); "
          f"ratio min {h_min / p_min:.3f}, median {h_med / p_med:.3f}")


def _runner_sweep(model, tokenizer, variants):
    runner = Runner(model, tokenizer, PROMPTS)
    stats = runner.sweep(variants)
    return runner, stats


def test_bench_layer_sweep_runner_vs_naive(benchmark, coder05):
    model, tok = coder05.model, coder05.tokenizer
    variants = layer_variants(dims(model).n_layers)

    # the naive loop: a clean forward for the reference + one hooked full forward per variant
    t0 = time.perf_counter()
    clean = plain_logprobs(model, encode(tok, PROMPTS))
    naive = naive_logprobs(model, tok, PROMPTS, variants)
    naive_kl = torch.stack([kl_divergence(clean, lp) for lp in naive])
    naive_s = time.perf_counter() - t0

    runner_times: list[float] = []

    def timed():
        t = time.perf_counter()
        out = _runner_sweep(model, tok, variants)
        runner_times.append(time.perf_counter() - t)
        return out

    benchmark.group = "layer-sweep"
    runner, stats = benchmark.pedantic(timed, rounds=2, iterations=1)
    runner_s = min(runner_times)

    swept = runner.logprobs(variants[::6])  # spot-check agreement (outside the timing)
    assert (swept.exp() - naive[::6].exp()).abs().max().item() <= P_ATOL
    assert abs(stats.kl - naive_kl.numpy()).max() <= 1e-3 * max(1.0, float(naive_kl.max()))

    benchmark.extra_info.update({
        "prompts": len(PROMPTS), "variants": len(variants), "naive_s": round(naive_s, 3),
        "runner_min_s": round(runner_s, 3), "runner_rounds_s": [round(t, 3) for t in runner_times],
        "speedup_vs_naive": round(naive_s / runner_s, 3), "aim": ">= 3",
    })
    print(f"\nlayer sweep ({len(variants)} layers x {len(PROMPTS)} prompts): naive {naive_s:.2f}s, "
          f"runner {runner_s:.2f}s, speedup {naive_s / runner_s:.2f}x")


def test_bench_layer_sweep_runner_vs_nnsight(benchmark, coder05):
    nnsight = pytest.importorskip("nnsight")
    from nnsight import TransformersModel

    model, tok = coder05.model, coder05.tokenizer
    n = dims(model).n_layers
    variants = layer_variants(n)
    enc = encode(tok, PROMPTS)
    inputs = {"input_ids": enc.input_ids, "attention_mask": enc.attention_mask, "position_ids": enc.position_ids}
    wrapped = TransformersModel(model, task="text-generation", tokenizer=tok)

    def nnsight_sweep() -> torch.Tensor:
        clean = plain_logprobs(model, enc)
        out = []
        with torch.inference_mode():
            for layer in range(n):
                with wrapped.trace(inputs, use_cache=False):
                    wrapped.model.layers[layer].output[:] = 0
                    last = wrapped.output.logits[:, -1].save()
                out.append(torch.log_softmax(last.float(), -1))
        lps = torch.stack(out)
        kl_divergence(clean[None], lps)
        return lps

    nnsight_times: list[float] = []

    def timed():
        t = time.perf_counter()
        lps = nnsight_sweep()
        nnsight_times.append(time.perf_counter() - t)
        return lps

    benchmark.group = "layer-sweep"
    lps = benchmark.pedantic(timed, rounds=1, iterations=1)
    nnsight_s = min(nnsight_times)

    t0 = time.perf_counter()
    runner, _ = _runner_sweep(model, tok, variants)
    runner_s = time.perf_counter() - t0

    check = runner.logprobs(variants[::6])
    assert (check.exp() - lps[::6].exp()).abs().max().item() <= P_ATOL, "nnsight and the runner disagree"

    benchmark.extra_info.update({
        "nnsight_version": nnsight.__version__, "prompts": len(PROMPTS), "variants": n,
        "nnsight_s": round(nnsight_s, 3), "runner_s": round(runner_s, 3),
        "speedup_vs_nnsight": round(nnsight_s / runner_s, 3),
    })
    print(f"\nlayer sweep: nnsight {nnsight.__version__} {nnsight_s:.2f}s, runner {runner_s:.2f}s, "
          f"speedup {nnsight_s / runner_s:.2f}x")
