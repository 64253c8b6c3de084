"""Benchmarks on Qwen2.5-Coder-0.5B, CPU fp32, 40 task-family prompts. Every ratio is measured in this process,
in the same test, and stored in ``benchmark.extra_info`` (speed is reported, never asserted; the results
are checked for agreement so that a fast wrong path cannot pass).

1. Hook path overhead: the stock forward with a no-op hook on every layer's residual vs the plain stock
   forward over the same batch (aim: <= 1.03x).
2. Full layer-ablation sweep (zero-ablate the residual after every layer): ``Runner`` (clean pass, then
   prefix-reusing, packed, last-position-only forwards) vs the naive loop (one hooked stock forward per
   variant over all positions, plus a clean forward for the reference) (aim: >= 3x), with the bound: the
   ratio of the FLOP the two paths execute (``atlas_core.work``), and each path's GFLOP/s, also as a fraction
   of the fp32 matmul peak measured in this process just before and after the sweep (the better of the two:
   ``work.measure_peak``, the calibration's kernel), so that the fraction reads against what the cores did then.
3. The same sweep with nnsight (optional: skipped when it is not installed), one trace per variant
   zeroing ``model.model.layers[L].output``.
4. The runner's sweep with packed vs left-padded chunks, alone and beside a one-thread matmul loop in another
   process (load: torch threads + 1).

Measurement design for a shared CPU: the paths being compared are interleaved in small steps (one
forward, or one chunk's worth of layer variants, at a time, the order alternating), so a burst of load from
another process hits both alike; each path's time is the sum of its steps. ``Runner.sweep`` fills each chunk
with consecutive layer variants (staggered entry: each variant's rows join the forward at its own start
layer), so timing ``runner.sweep`` on one chunk's variants at a time (``rows_per_chunk // prompts`` of them)
runs the same forwards as one ``runner.sweep(all variants)`` call, and the naive loop runs the same variants
in the same step. ``benchmark`` times one whole interleaved round (both paths); the per-path seconds and the
ratio are in ``extra_info``, with the load average and thread count seen.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager

import numpy as np
import pytest
import torch

from atlas_core.forward import encode, naive_logprobs, plain_logprobs
from atlas_core.interventions import Ablate, Noop, Variant, intervene
from atlas_core.metrics import kl_divergence
from atlas_core.runner import Runner
from atlas_core.sites import Site, dims
from atlas_core.tasks import load_families
from atlas_core.work import Work, measure_peak, metering

pytestmark = [pytest.mark.real_model, pytest.mark.slow]

# The atlas's own workload: the first five prompts of each of the eight task families (4-20 tokens; the
# naive loop pads them, the runner packs them).
PROMPTS = [item.prompt for fam in load_families(n_items=5).values() for item in fam.items]
assert len(PROMPTS) == 40
P_ATOL = 1e-5  # probabilities agree across paths in fp32 (see tests_atlas/core/test_properties_real.py)


def layer_variants(n_layers: int) -> list[Variant]:
    return [Variant(f"L{layer}", (Ablate(Site("resid", layer)),)) for layer in range(n_layers)]


def _environment() -> dict:
    return {"torch_threads": torch.get_num_threads(), "loadavg_1m": round(os.getloadavg()[0], 2)}


def metered(model, fn, work: Work):
    """``fn`` with its forwards' work (atlas_core.work) added to ``work``."""

    def run():
        with metering(model) as w:
            fn()
        work.add(w)

    return run


def _interleave(steps: list[dict[str, callable]]) -> dict[str, list[float]]:
    """Run each step's callables back to back, alternating their order step by step; seconds per call."""
    times: dict[str, list[float]] = {name: [] for name in steps[0]}
    for i, step in enumerate(steps):
        items = list(step.items())
        for name, fn in items if i % 2 == 0 else items[::-1]:
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def test_bench_hook_overhead(benchmark, coder05):
    """A no-op hook on every layer's residual vs the plain stock forward, 40 prompts."""
    model, enc = coder05.model, encode(coder05.tokenizer, PROMPTS)
    n = dims(model).n_layers
    noops = [Noop(Site("resid", layer)) for layer in range(n)]

    def plain():
        return plain_logprobs(model, enc)

    def hooked():
        with intervene(model, noops):
            return plain_logprobs(model, enc)

    assert torch.equal(plain(), hooked())  # warm-up, and the hooks change nothing
    rounds = 10
    env0 = _environment()
    times = benchmark.pedantic(
        lambda: _interleave([{"plain": plain, "hooked": hooked}] * rounds), rounds=1, iterations=1
    )
    ratios = [h / p for h, p in zip(times["hooked"], times["plain"])]
    p_min, h_min = min(times["plain"]), min(times["hooked"])
    benchmark.group = "hook-overhead"
    benchmark.extra_info.update(
        {
            "prompts": len(PROMPTS),
            "layers_hooked": n,
            "pairs": rounds,
            "plain_s": [round(t, 4) for t in times["plain"]],
            "hooked_s": [round(t, 4) for t in times["hooked"]],
            "overhead_ratio_median_of_pairs": round(statistics.median(ratios), 4),
            "overhead_ratio_of_mins": round(h_min / p_min, 4),
            "overhead_ratio_of_sums": round(sum(times["hooked"]) / sum(times["plain"]), 4),
            "aim": "<= 1.03",
            "before": env0,
            "after": _environment(),
        }
    )
    print(
        f"\nhook overhead over {rounds} interleaved pairs: plain min {p_min:.3f}s, hooked min {h_min:.3f}s; "
        f"ratio median-of-pairs {statistics.median(ratios):.3f}, of mins {h_min / p_min:.3f}, "
        f"of sums {sum(times['hooked']) / sum(times['plain']):.3f}"
    )


class _RunnerPath:
    """The runner's sweep, split into one chunk's variants per step so it can be interleaved (the same forwards
    as one whole sweep; see the module docstring)."""

    def __init__(self, model, tok, variants):
        self.model, self.tok, self.variants = model, tok, variants
        self.runner = Runner(model, tok, PROMPTS)
        per = max(1, self.runner.rows_per_chunk() // len(PROMPTS))
        self.steps = [list(range(i, min(i + per, len(variants)))) for i in range(0, len(variants), per)]
        self.kl: dict[int, np.ndarray] = {}

    def clean(self):
        self.runner.clean_logprobs  # the clean pass: residuals at every layer + clean log-probs

    def variant_step(self, step):
        def run():
            kl = self.runner.sweep([self.variants[i] for i in step]).kl
            self.kl.update(zip(step, kl))

        return run


def _sweep_steps(runner_path: _RunnerPath, other_clean, other_variants, other="naive"):
    """The clean step, then one step per runner chunk: the runner's sweep of its variants, and ``other`` on the
    same variants (``other_variants(indices)``)."""
    steps = [{"runner": runner_path.clean, other: other_clean}]
    steps += [{"runner": runner_path.variant_step(s), other: other_variants(s)} for s in runner_path.steps]
    return steps


def test_bench_layer_sweep_runner_vs_naive(benchmark, coder05):
    model, tok = coder05.model, coder05.tokenizer
    n = dims(model).n_layers
    variants = layer_variants(n)
    enc = encode(tok, PROMPTS)
    runner_path = _RunnerPath(model, tok, variants)
    naive: dict = {"lp": {}, "kl": {}}

    def naive_clean():
        naive["clean"] = plain_logprobs(model, enc)

    def naive_variants(step):
        def run():
            for i in step:
                lp = naive_logprobs(model, tok, PROMPTS, [variants[i]])[0]
                naive["lp"][i], naive["kl"][i] = lp, kl_divergence(naive["clean"], lp).numpy()

        return run

    env0 = _environment()
    peaks = [measure_peak(torch.device("cpu"), torch.float32)["gflops"]]
    work = {"runner": Work(), "naive": Work()}
    steps = [
        {k: metered(model, fn, work[k]) for k, fn in step.items()}
        for step in _sweep_steps(runner_path, naive_clean, naive_variants)
    ]
    times = benchmark.pedantic(lambda: _interleave(steps), rounds=1, iterations=1)
    runner_s, naive_s = sum(times["runner"]), sum(times["naive"])
    peaks.append(measure_peak(torch.device("cpu"), torch.float32)["gflops"])

    spot = list(range(0, n, 6))
    swept = runner_path.runner.logprobs([variants[i] for i in spot])  # agreement, outside the timing
    assert (swept.exp() - torch.stack([naive["lp"][i] for i in spot]).exp()).abs().max().item() <= P_ATOL
    runner_kl = np.stack([runner_path.kl[i] for i in range(n)])
    naive_kl = np.stack([naive["kl"][i] for i in range(n)])
    assert np.abs(runner_kl - naive_kl).max() <= 1e-3 * max(1.0, naive_kl.max())

    # the bound: the speedup if both paths ran their matmuls at one rate, i.e. the ratio of the FLOP each
    # executes (atlas_core.work); the useful FLOP (real tokens, causal pairs) is the same sweep for both
    bound = work["naive"].executed_flop / work["runner"].executed_flop
    speedup = naive_s / runner_s
    rates = {
        k: {
            "useful_gflops": round(work[k].flop / t / 1e9, 2),
            "executed_gflops": round(work[k].executed_flop / t / 1e9, 2),
            "executed_over_useful": round(work[k].executed_flop / work[k].flop, 3),
            "useful_of_peak": round(work[k].flop / t / 1e9 / max(peaks), 3),
        }
        for k, t in (("runner", runner_s), ("naive", naive_s))
    }
    benchmark.group = "layer-sweep"
    benchmark.extra_info.update(
        {
            "bound_flop_ratio": round(bound, 3),
            "fraction_of_bound": round(speedup / bound, 3),
            "rates": rates,
            "fp32_peak_gflops_before_after": peaks,
            "prompts": len(PROMPTS),
            "variants": n,
            "runner_s": round(runner_s, 3),
            "naive_s": round(naive_s, 3),
            "runner_clean_pass_s": round(times["runner"][0], 3),
            "naive_clean_forward_s": round(times["naive"][0], 3),
            "variants_per_step": [len(step) for step in runner_path.steps],
            "runner_per_step_s": [round(t, 3) for t in times["runner"][1:]],
            "naive_per_step_s": [round(t, 3) for t in times["naive"][1:]],
            "speedup_vs_naive": round(naive_s / runner_s, 3),
            "aim": ">= 3",
            "before": env0,
            "after": _environment(),
        }
    )
    print(
        f"\nlayer sweep ({n} layers x {len(PROMPTS)} prompts, interleaved): naive {naive_s:.2f}s, "
        f"runner {runner_s:.2f}s, speedup {speedup:.2f}x; bound (executed FLOP ratio) {bound:.2f}x, "
        f"{100 * speedup / bound:.0f}% of it; useful GFLOP/s runner {rates['runner']['useful_gflops']}, "
        f"naive {rates['naive']['useful_gflops']} (runner {100 * rates['runner']['useful_of_peak']:.1f}% of the fp32 "
        f"peak measured here, {max(peaks):.1f}); executed/useful runner "
        f"{rates['runner']['executed_over_useful']}, naive {rates['naive']['executed_over_useful']}"
    )


def test_bench_layer_sweep_runner_vs_nnsight(benchmark, coder05):
    nnsight = pytest.importorskip("nnsight")
    from nnsight import TransformersModel

    model, tok = coder05.model, coder05.tokenizer
    n = dims(model).n_layers
    variants = layer_variants(n)
    enc = encode(tok, PROMPTS)
    inputs = {"input_ids": enc.input_ids, "attention_mask": enc.attention_mask, "position_ids": enc.position_ids}
    wrapped = TransformersModel(model, task="text-generation", tokenizer=tok)
    runner_path = _RunnerPath(model, tok, variants)
    nns: dict = {"lp": {}, "kl": {}}

    def nnsight_clean():
        with torch.inference_mode(), wrapped.trace(inputs, use_cache=False):
            last = wrapped.output.logits[:, -1].save()
        nns["clean"] = torch.log_softmax(last.float(), -1)

    def nnsight_variants(step):
        def run():
            for layer in step:
                with torch.inference_mode(), wrapped.trace(inputs, use_cache=False):
                    wrapped.model.layers[layer].output[:] = 0
                    last = wrapped.output.logits[:, -1].save()
                lp = torch.log_softmax(last.float(), -1)
                nns["lp"][layer], nns["kl"][layer] = lp, kl_divergence(nns["clean"], lp).numpy()

        return run

    env0 = _environment()
    times = benchmark.pedantic(
        lambda: _interleave(_sweep_steps(runner_path, nnsight_clean, nnsight_variants, other="nnsight")),
        rounds=1,
        iterations=1,
    )
    runner_s, nnsight_s = sum(times["runner"]), sum(times["nnsight"])

    spot = list(range(0, n, 6))
    check = runner_path.runner.logprobs([variants[i] for i in spot])
    got = torch.stack([nns["lp"][i] for i in spot])
    assert (check.exp() - got.exp()).abs().max().item() <= P_ATOL, "nnsight and the runner disagree"

    benchmark.group = "layer-sweep"
    benchmark.extra_info.update(
        {
            "nnsight_version": nnsight.__version__,
            "prompts": len(PROMPTS),
            "variants": n,
            "runner_s": round(runner_s, 3),
            "nnsight_s": round(nnsight_s, 3),
            "speedup_vs_nnsight": round(nnsight_s / runner_s, 3),
            "before": env0,
            "after": _environment(),
        }
    )
    print(
        f"\nlayer sweep (interleaved): nnsight {nnsight.__version__} {nnsight_s:.2f}s, runner {runner_s:.2f}s, "
        f"speedup {nnsight_s / runner_s:.2f}x"
    )


# A competing process for the packing comparison under load: one thread of matmuls, so that with the sweep's
# own threads the machine's load is one more than its torch threads (3 on the 2-core CI machine).
_BUSY = "import torch\ntorch.set_num_threads(1)\na = torch.randn(512, 512)\nwhile True:\n    a @ a\n"


@contextmanager
def _competing(load: str):
    """``load`` "busy": a one-thread matmul loop in another process for the block; "quiet": nothing."""
    if load == "quiet":
        yield
        return
    proc = subprocess.Popen([sys.executable, "-c", _BUSY])
    try:
        time.sleep(2.0)  # its start (torch's import) is over before the timing
        yield
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("load", ["quiet", "busy"])
def test_bench_packing(benchmark, coder05, monkeypatch, load):
    """The whole 24-layer sweep in one ``Runner.sweep`` call, its chunks packed (``PACK_TOKENS``, the default)
    vs left-padded (``PACK_TOKENS = 0``), alternating, one runner; alone ("quiet") and with a one-thread
    matmul loop in another process ("busy"), so that how each degrades under load is measured side by side.
    (Bucketing prompts by length, the other way to cut padding, measured 0.75x the padded chunks here: the
    runner packs instead.)"""
    import atlas_core.prompt_set as prompt_set

    model, tok = coder05.model, coder05.tokenizer
    variants = layer_variants(dims(model).n_layers)
    runner = Runner(model, tok, PROMPTS)
    runner.clean_logprobs
    out: dict = {}
    work = {"packed": Work(), "padded": Work()}

    def sweep(name, tokens):
        def run():
            monkeypatch.setattr(prompt_set, "PACK_TOKENS", tokens)
            out[name] = runner.sweep(variants).kl

        return metered(model, run, work[name])

    step = {"packed": sweep("packed", prompt_set.PACK_TOKENS), "padded": sweep("padded", 0)}
    with _competing(load):
        env0 = _environment()
        times = benchmark.pedantic(lambda: _interleave([step] * 2), rounds=1, iterations=1)
        env1 = _environment()
    np.testing.assert_allclose(out["packed"], out["padded"], rtol=1e-3, atol=1e-4)  # same sweep, other shapes
    pk, pd = sum(times["packed"]), sum(times["padded"])
    flop = {k: {"executed_over_useful": round(w.executed_flop / w.flop, 3)} for k, w in work.items()}
    benchmark.group = f"packing-{load}"
    benchmark.extra_info.update(
        {
            "prompts": len(PROMPTS),
            "variants": len(variants),
            "packed_s": round(pk, 3),
            "padded_s": round(pd, 3),
            "speedup": round(pd / pk, 3),
            "flop": flop,
            "load": load,
            "before": env0,
            "after": env1,
        }
    )
    print(
        f"\nwhole sweep x2 ({load}, load {env0['loadavg_1m']} -> {env1['loadavg_1m']}): padded {pd:.2f}s, packed {pk:.2f}s, ratio {pd / pk:.2f}x; executed/useful FLOP "
        f"padded {flop['padded']['executed_over_useful']}, packed {flop['packed']['executed_over_useful']}"
    )
