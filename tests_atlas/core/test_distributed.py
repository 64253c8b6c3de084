"""Sweeps sharded over Ray actors (``atlas_core.distributed``) on a local cluster of two one-thread actors:
sharded equals local per (variant, prompt); a worker killed mid-sweep is restarted by Ray (or, restarts
spent, its shard goes to the other worker) and the sweep completes with the same result; a driver
interrupted mid-sweep resumes from the checkpoint slot and sends only the unfinished shards. One local
cluster serves the module (starting it costs ~13 s here)."""

from __future__ import annotations

import os
import re
import signal

import numpy as np
import pytest

from atlas_core import AtlasError
from atlas_core.checkpoints import Checkpoints
from atlas_core.distributed import RayConfig, RayPool, shards
from atlas_core.interventions import Ablate, Steer, Variant
from atlas_core.models import load
from atlas_core.runner import Runner, Sweeping
from atlas_core.sites import Site

ray = pytest.importorskip("ray", reason='the ray extra: pip install -e ".[ray]"')

PROMPTS = ["The capital of Italy is ", "1 + 2 =", "def f(x):", "copy: a b c ->", "[1, [2, 3"]
TARGETS = [5, 6, 7, 8, 9]
FIELDS = ("kl", "argmax_match", "topk_overlap", "argmax", "target_prob", "ref_target_prob")


class Interrupt(KeyboardInterrupt):
    pass


@pytest.fixture(scope="module")
def lm():
    return load("tiny-qwen2", device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def pool(lm):
    with RayPool(RayConfig(workers=2, threads=1, shard_variants=3, max_restarts=1), "tiny-qwen2", lm) as p:
        yield p


def on_ray(lm, pool, **kwargs) -> Runner:
    """A runner whose sweeps the pool shards (as every runner of an `atlas run --ray` is lent it)."""
    return Runner(lm.model, lm.tokenizer, PROMPTS, sweeping=Sweeping(backend=pool), **kwargs)


def variants(lm):
    import torch

    d = lm.model.config.hidden_size
    out = [
        Variant(f"{kind}/{mode}/L{layer}", (Ablate(Site(kind, layer), mode),))
        for kind in ("resid", "mlp")
        for mode in ("zero", "mean", "resample")
        for layer in range(4)
    ]
    out += [
        Variant(f"head/zero/L{layer}H{h}", (Ablate(Site("head", layer, h), "zero"),))
        for layer in range(4)
        for h in (0, 1)
    ]
    vec = torch.randn(d, generator=torch.Generator().manual_seed(0))
    out += [Variant(f"steer/L{layer}", (Steer(layer, vec, 4.0),)) for layer in (1, 2)]
    return out


def assert_same(a, b, rtol=1e-5, atol=1e-7):
    assert a.names == b.names
    for f in FIELDS:
        x, y = getattr(a, f), getattr(b, f)
        if x is None or y is None:
            assert x is None and y is None, f
            continue
        if x.dtype.kind in "biu":
            bad = np.argwhere(x != y)
        else:
            bad = np.argwhere(~np.isclose(x, y, rtol=rtol, atol=atol))
        assert not len(bad), f"{f} differs at (variant, prompt) {bad[:5].tolist()}"


@pytest.fixture(scope="module")
def local(lm):
    runner = Runner(lm.model, lm.tokenizer, PROMPTS)
    return runner.sweep(variants(lm), targets=TARGETS)


def test_shards_cover_every_variant_once():
    assert shards(range(10), 3) == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    assert sum(shards(range(7), 7), []) == list(range(7))


def test_sharded_equals_local_per_variant_and_prompt(lm, pool, local):
    runner = on_ray(lm, pool)
    before = pool.dispatched
    sharded = runner.sweep(variants(lm), targets=TARGETS)
    assert pool.dispatched - before == len(shards(range(len(local.names)), 3)) > 2
    assert_same(local, sharded)


def test_a_wrong_shard_spec_is_caught(lm, pool, local):
    """The comparison bites: a driver runner seeded differently sends that seed to the actors, whose
    resample donors then differ; the check names the field and the (variant, prompt) cells."""
    sharded = on_ray(lm, pool, seed=1).sweep(variants(lm), targets=TARGETS)
    with pytest.raises(AssertionError, match=r"kl differs at \(variant, prompt\)") as err:
        assert_same(local, sharded)
    print(err.value)
    rows = {int(r) for r in np.argwhere(~np.isclose(local.kl, sharded.kl, rtol=1e-5, atol=1e-7))[:, 0]}
    assert rows and all("/resample/" in local.names[r] for r in rows)


def test_runner_over_another_or_adapted_model_stays_local(lm, pool):
    other = load("tiny-qwen2", device="cpu", dtype="float32")
    assert pool.takes(Runner(lm.model, lm.tokenizer, PROMPTS))
    assert not pool.takes(Runner(other.model, other.tokenizer, PROMPTS))
    from peft import LoraConfig, inject_adapter_in_model

    inject_adapter_in_model(LoraConfig(r=2, target_modules=["q_proj"]), other.model)  # in place, as peft does
    runner = Runner(other.model, other.tokenizer, PROMPTS)
    pool.lm, saved = other, pool.lm
    try:
        assert not pool.takes(runner)  # the actors hold the base weights only: an adapted model stays local
    finally:
        pool.lm = saved


def test_driver_interrupted_mid_sweep_resumes_with_only_unfinished_shards(lm, pool, local, tmp_path):
    vs = variants(lm)
    total = len(shards(range(len(vs)), 3))
    seen = []

    def stop_after_two(ev):
        seen.append(ev.index)
        if len(seen) == 2:
            raise Interrupt()

    pool.on_shard = stop_after_two
    sweeping = Sweeping(backend=pool)
    try:
        with sweeping.lent(checkpoints=Checkpoints(tmp_path)), pytest.raises(Interrupt):
            Runner(lm.model, lm.tokenizer, PROMPTS, sweeping=sweeping).sweep(vs, targets=TARGETS)
        pool.on_shard = None
        ray.get([a.identity.remote() for a in pool.actors])  # the interrupted shards' tasks drain
        before = pool.dispatched
        with sweeping.lent(checkpoints=Checkpoints(tmp_path)):
            resumed = Runner(lm.model, lm.tokenizer, PROMPTS, sweeping=sweeping).sweep(vs, targets=TARGETS)
    finally:
        pool.on_shard = None
    sent = pool.dispatched - before
    print(f"driver interrupted after {len(seen)} of {total} shards; the resumed driver sent {sent}")
    assert sent == total - 2
    assert_same(local, resumed)


def test_adapter_ablation_is_spread_over_the_replicas_with_the_local_result(lm, pool, smoke_ctx):
    """The adapted model's per-layer measurement, cut into one chunk of layers per actor (``RayPool.spread``),
    gives the driver's arrays bit for bit (one thread everywhere), and the actors did the work."""
    from atlas_core.experiments import adapter_ablation, lora_training

    ctx = smoke_ctx(lm)
    lora_training.run(ctx)
    local = adapter_ablation.run(ctx)
    before = pool.dispatched
    with ctx.sweeping.lent(backend=pool):
        spread = adapter_ablation.run(ctx)
    # one chunk per free actor: both, in module order (the kill test below leaves one live)
    assert pool.dispatched - before == len(pool.free()) >= 1
    assert [k.value for k in spread.kl] == [k.value for k in local.kl] and spread.norm == local.norm
    assert spread.pearson == local.pearson and spread.top_layers == local.top_layers


def test_worker_killed_mid_sweep_is_restarted_then_its_shards_go_elsewhere(lm, pool, local):
    """Kill worker 1 while it has a shard in flight (when worker 0 reports one): Ray restarts it and retries
    the shard (its one restart); kill it again in the next sweep: restarts spent, its shard goes back on
    the queue and worker 0 finishes the sweep. Same result both times."""
    killed = []

    def kill_worker_1(ev):
        if not killed and ev.worker == 0:
            os.kill(pool.pids[1], signal.SIGKILL)
            killed.append(pool.pids[1])

    pool.on_shard = kill_worker_1
    try:
        restarted = on_ray(lm, pool).sweep(variants(lm), targets=TARGETS)
        new_pid = ray.get(pool.actors[1].identity.remote())[1]
        print(f"killed worker 1 (pid {killed[0]}) mid-sweep; Ray restarted it as pid {new_pid}")
        assert killed and new_pid != killed[0] and pool.live == [0, 1]
        assert_same(local, restarted)

        pool.pids[1] = new_pid
        killed.clear()
        again = on_ray(lm, pool).sweep(variants(lm), targets=TARGETS)
    finally:
        pool.on_shard = None
    print(f"killed worker 1 (pid {killed[0]}) again: restarts spent, live workers now {pool.live}")
    assert pool.live == [0]
    assert_same(local, again)


def test_a_non_finite_kl_is_an_error_on_the_ray_path(lm, pool, tmp_path):
    """Ray sweeps go through the same statistics as local ones: a NaN KL raises, whether an actor measured it or
    the driver reloaded it from the checkpoint slot with every shard done (no actor runs)."""
    import torch

    from atlas_core.integrity import NonFiniteMetric
    from atlas_core.interventions import Patch

    runner = on_ray(lm, pool)
    nan = torch.full_like(runner.residuals[2], float("nan"))
    before = pool.dispatched
    with pytest.raises(NonFiniteMetric, match=r"KL is nan for variant 'poisoned'"):
        runner.sweep([Variant("fine", ()), Variant("poisoned", (Patch(Site("resid", 1), nan),))], targets=TARGETS)
    assert pool.dispatched > before

    vs = variants(lm)[:4]
    with runner.sweeping.lent(checkpoints=Checkpoints(tmp_path)):  # the slot an interrupted run left, all done
        arrays, slot = runner.saved(vs, TARGETS, 5, None)
        arrays["kl"][2, 1] = float("nan")
        arrays["done"][:] = 1
        assert slot is not None and slot.save(arrays, force=True)
    before = pool.dispatched
    want = re.escape(f"KL is nan for variant {vs[2].name!r}, prompt {PROMPTS[1]!r}")
    with runner.sweeping.lent(checkpoints=Checkpoints(tmp_path)), pytest.raises(NonFiniteMetric, match=want):
        runner.sweep(vs, targets=TARGETS)
    assert pool.dispatched == before


def test_bad_ray_config_fails_before_work(tmp_path, capsys):
    from atlas_core.cli import main

    base = [
        "run",
        "--model",
        "tiny-qwen2",
        "--experiments",
        "clean",
        "--profile",
        "smoke",
        "--out",
        str(tmp_path / "r"),
    ]
    assert main(base + ["--ray", "--ray-workers", "0"]) == 2
    assert "--ray-workers must be at least 1" in capsys.readouterr().err
    assert main(base + ["--ray", "--max-memory", "cpu=1GB"]) == 2
    assert "--max-memory is given without --device-map" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    with pytest.raises(AtlasError, match="--ray-workers must be at least 1"):
        RayConfig(workers=0)
    with pytest.raises(AtlasError, match="--ray-shard must be at least 1"):
        RayConfig(shard_variants=0)
    with pytest.raises(AtlasError, match="add --device-map auto"):
        RayConfig(max_memory="cpu=1GB")
    assert RayConfig(gpus_per_worker=2).placement == "auto" and RayConfig(gpus_per_worker=1).placement is None


def test_no_ray_import_without_ray(tmp_path):
    """Atlas stays a plain local tool: a whole `atlas run` without --ray never imports Ray."""
    import subprocess
    import sys

    code = (
        "import sys; from atlas_core.cli import main; "
        f"rc = main(['run', '--model', 'tiny-qwen2', '--experiments', 'clean', '--profile', 'smoke', "
        f"'--no-report', '--out', {str(tmp_path / 'run')!r}]); "
        "assert rc == 0 and 'ray' not in sys.modules, sorted(m for m in sys.modules if m.split('.')[0] == 'ray')[:3]"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    # the check bites: the same run with Ray imported on the way fails, naming the modules
    bad = subprocess.run(
        [sys.executable, "-c", "import ray; " + code], capture_output=True, text=True, timeout=120, env=env
    )
    assert bad.returncode != 0 and "AssertionError: ['ray'" in bad.stderr, bad.stderr[-2000:]
    print(bad.stderr.strip().splitlines()[-1])
