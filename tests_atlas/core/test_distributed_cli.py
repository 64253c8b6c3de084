"""``atlas run --ray`` end to end (slow tier: local cluster starts): a driver killed (SIGKILL) mid-run
resumes from the shards it saved and writes the same layer-ablation record as a plain local run; every
experiment run with --ray writes the local run's numbers."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from atlas_core.results import RecordStore

pytest.importorskip("ray", reason='the ray extra: pip install -e ".[ray]"')
pytestmark = pytest.mark.slow

ARGS = ["--model", "tiny-qwen2", "--experiments", "layer_ablation", "--profile", "full", "--no-report"]
ALL = ["--model", "tiny-qwen2", "--experiments", "all", "--profile", "smoke", "--no-report"]


def test_driver_killed_mid_run_resumes_to_the_local_result(tmp_path, atlas_cli, record_numbers):
    local = atlas_cli(tmp_path / "local", args=ARGS)
    assert local.wait(timeout=300) == 0, local.stdout.read()

    out = tmp_path / "ray"
    first = atlas_cli(out, "--ray", "--ray-shard", "1", args=ARGS, start_new_session=True)
    deadline = time.monotonic() + 240
    while not list(out.glob(".partial/*/sweep-*.safetensors")):
        assert first.poll() is None, "the run ended before saving a shard:\n" + first.stdout.read()
        assert time.monotonic() < deadline
        time.sleep(0.005)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    time.sleep(1)
    try:  # Ray's dashboard and runtime-env agents outlive a SIGKILLed driver (its session): end them
        os.killpg(first.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    saved = sorted(p.name for p in out.glob(".partial/*/sweep-*.safetensors"))
    print(f"driver killed after saving {saved}")
    assert not (out / "layer_ablation.json").exists() and not RecordStore(out).load("layer_ablation")

    second = atlas_cli(out, "--ray", "--ray-shard", "1", args=ARGS)
    log = second.communicate(timeout=300)[0]
    assert second.returncode == 0, log
    resumed = [line for line in log.splitlines() if "resuming from" in line]
    print(resumed[0])
    assert resumed

    a, b = RecordStore(tmp_path / "local").load("layer_ablation"), RecordStore(out).load("layer_ablation")
    assert a.config_hash == b.config_hash
    na, nb = record_numbers(a.result), record_numbers(b.result)
    assert na.keys() == nb.keys() and len(na) > 100
    bad = [k for k in na if not np.isclose(na[k], nb[k], rtol=1e-5, atol=1e-7)]
    assert not bad, [(k, na[k], nb[k]) for k in bad[:5]]


def test_every_experiment_with_ray_equals_local(tmp_path, atlas_cli, record_numbers):
    """All nine experiments (smoke profile): every number of every record is the local run's, timings
    aside; the sweeps of the base model go to the actors, LoRA training and the adapted model's stay local."""
    runs = {}
    for name, extra in (("local", []), ("ray", ["--ray"])):
        proc = atlas_cli(tmp_path / name, *extra, args=ALL)
        log = proc.communicate(timeout=300)[0]
        assert proc.returncode == 0, log
        runs[name] = RecordStore(tmp_path / name)
    assert "ray shards" in log
    for key in (
        "clean",
        "layer_ablation",
        "mlp_ablation",
        "head_ablation",
        "steering",
        "knockout",
        "lora_training",
        "transfer",
        "adapter_ablation",
        "efficiency",
    ):
        a, b = runs["local"].load(key), runs["ray"].load(key)
        assert a.config_hash == b.config_hash, key
        na, nb = record_numbers(a.result), record_numbers(b.result)
        timed = [k for k in na if "seconds" in k or "speedup" in k]  # measured wall time, not a result
        bad = [k for k in na if k not in timed and not np.isclose(na[k], nb[k], rtol=1e-5, atol=1e-7)]
        assert na.keys() == nb.keys() and not bad, (key, [(k, na[k], nb[k]) for k in bad[:5]])
