"""Sharding benchmark (``atlas_core.distributed``) on Qwen2.5-Coder-0.5B, CPU fp32, the 40 task-family prompts:
the layer sweep (zero-ablate the residual after each of the 24 layers) on one Ray actor at two torch threads
vs two actors at one thread each, on the same local cluster shape (2 CPUs), in this process. Each sweep is
timed cold (the actor's first: its clean pass included, which every actor repeats) and warm (the same
sweep again). Speed is reported in ``benchmark.extra_info``, never asserted; both sharded results are
checked against the local sweep per (variant, prompt), so a fast wrong path cannot pass."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch

from atlas_core.distributed import RayConfig, RayPool
from atlas_core.interventions import Ablate, Variant
from atlas_core.runner import Runner, Sweeping
from atlas_core.sites import Site
from atlas_core.tasks import load_families

pytestmark = [pytest.mark.real_model, pytest.mark.slow]
pytest.importorskip("ray", reason='the ray extra: pip install -e ".[ray]"')

PROMPTS = [item.prompt for fam in load_families(n_items=5).values() for item in fam.items]
MODEL = "qwen2.5-coder-0.5b-instruct"


def _timed_sweeps(config: RayConfig, lm, variants) -> tuple[dict, object]:
    t0 = time.perf_counter()
    with RayPool(config, MODEL, lm) as pool:
        up = time.perf_counter() - t0
        times = []
        for _ in range(2):  # cold, then warm
            t = time.perf_counter()
            stats = Runner(lm.model, lm.tokenizer, PROMPTS, sweeping=Sweeping(backend=pool)).sweep(variants)
            times.append(time.perf_counter() - t)
        shards = pool.dispatched
    return {
        "startup_s": round(up, 2),
        "cold_s": round(times[0], 2),
        "warm_s": round(times[1], 2),
        "shards": shards,
    }, stats


def test_bench_ray_one_actor_two_threads_vs_two_actors_one_thread(benchmark, coder05):
    n = coder05.model.config.num_hidden_layers
    variants = [Variant(f"L{layer}", (Ablate(Site("resid", layer)),)) for layer in range(n)]
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        local = Runner(coder05.model, coder05.tokenizer, PROMPTS).sweep(variants)
    finally:
        torch.set_num_threads(threads)

    def both():
        one, a = _timed_sweeps(RayConfig(workers=1, threads=2, shard_variants=6), coder05, variants)
        two, b = _timed_sweeps(RayConfig(workers=2, threads=1, shard_variants=6), coder05, variants)
        return one, two, a, b

    one, two, a, b = benchmark.pedantic(both, rounds=1, iterations=1)
    for got in (a, b):  # sharded equals local, per variant and prompt, on Coder-0.5B
        np.testing.assert_allclose(got.kl, local.kl, rtol=1e-4, atol=1e-6)
        assert (got.argmax == local.argmax).mean() > 0.99
    benchmark.group = "ray-sharding"
    benchmark.extra_info.update(
        {
            "one_actor_two_threads": one,
            "two_actors_one_thread": two,
            "ratio_cold": round(one["cold_s"] / two["cold_s"], 3),
            "ratio_warm": round(one["warm_s"] / two["warm_s"], 3),
            "max_abs_kl_diff": float(max(np.abs(a.kl - local.kl).max(), np.abs(b.kl - local.kl).max())),
            "argmax_equal": float(min((a.argmax == local.argmax).mean(), (b.argmax == local.argmax).mean())),
            "prompts": len(PROMPTS),
            "variants": n,
            "loadavg_1m": round(os.getloadavg()[0], 2),
        }
    )
    print(benchmark.extra_info)
