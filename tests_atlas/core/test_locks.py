"""Experiment locks: one per experiment (every seed of it), failing at once for `atlas run` and waited for by the
pytest plugin (``RunPlan.wait``), whose xdist workers need the same experiments: one computes, the others read."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

import atlas_core.orchestrate as orchestrate
from atlas_core import AtlasError
from atlas_core.orchestrate import RunPlan, run_plan
from atlas_core.results import RecordStore

REPO = Path(__file__).resolve().parents[2]


def plan(out, experiments, **kw) -> RunPlan:
    return RunPlan(
        model="tiny-qwen2",
        experiments=experiments,
        profile="smoke",
        out=out,
        device="cpu",
        families=["copying", "arithmetic"],
        progress=False,
        report=False,
        **kw,
    )


def _open_locks(root: Path) -> int:
    """How many of this process's file descriptors are open on the run folder's lock files."""
    fds = Path("/proc/self/fd")
    return sum(1 for fd in fds.iterdir() if ".locks" in os.path.realpath(fd) and str(root) in os.path.realpath(fd))


def test_many_seeds_take_one_lock_per_experiment_not_one_per_seed(tmp_path, monkeypatch):
    """`--seeds 1000000` opened (and held) a lock file per seed until "Too many open files". Now a run holds
    one lock per experiment whatever the number of seeds, and leaves one lock file for it."""
    out = tmp_path / "run"
    held = []
    real = orchestrate.spec_of

    def fake_train(ctx):  # the seeds' records are what is under test here, not LoRA training
        held.append(_open_locks(out))
        return {"seed": ctx.seed}

    monkeypatch.setattr(
        orchestrate, "spec_of", lambda n: replace(real(n), run=fake_train) if n == "lora_training" else real(n)
    )
    run_plan(plan(out, ["lora_training"], seeds=40))
    assert len(list(out.glob("lora_training*.json"))) == 40
    assert set(held) == {1}, held  # one lock held while each seed ran
    locks = sorted(p.name for p in (out / ".locks").iterdir())
    assert locks == ["lora_training.lock", "manifest.lock"], locks


def test_a_held_experiment_is_waited_for_and_its_record_read_instead_of_recomputed(tmp_path):
    """With ``wait`` (the plugin), a run needing an experiment another process is computing waits for it,
    then reads the record it wrote: the experiment is computed once. Without it (`atlas run`), the run
    fails at once naming the lock."""
    out = tmp_path / "run"
    run_plan(plan(out, ["clean"]))
    holder_code = (
        "import sys; sys.path.insert(0, sys.argv[2])\n"
        "from atlas_core.results import RecordStore\n"
        "from atlas_core.orchestrate import RunPlan, run_plan\n"
        "from pathlib import Path\n"
        "out = Path(sys.argv[1]); lock = RecordStore(out).lock('layer_ablation'); lock.acquire()\n"
        "print('held', flush=True); sys.stdin.readline()\n"
        "p = RunPlan(model='tiny-qwen2', experiments=['clean', 'layer_ablation'], profile='smoke', out=out,"
        " device='cpu', families=['copying', 'arithmetic'], progress=False, report=False)\n"
        "run_plan(p); lock.release(); print('computed' if any('layer_ablation: running' in m for m in p.log)"
        " else 'not computed', flush=True)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", holder_code, str(out), str(REPO)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(AtlasError, match="layer_ablation is being computed by another atlas run"):
            run_plan(plan(out, ["clean", "layer_ablation"]))  # atlas run: refused at once
        waiting = plan(out, ["clean", "layer_ablation"], wait=True)
        worker = threading.Thread(target=run_plan, args=(waiting,))
        worker.start()
        deadline = time.monotonic() + 60
        while not any("waiting for it" in m for m in waiting.log) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert any("layer_ablation: another process is computing it" in m for m in waiting.log), waiting.log
        holder.stdin.write("go\n")
        holder.stdin.flush()
        worker.join(timeout=120)
        assert not worker.is_alive()
        assert holder.stdout.readline().strip() == "computed"
    finally:
        holder.communicate("")
    assert not any("layer_ablation: running" in m for m in waiting.log), waiting.log  # read, not recomputed
    assert any("layer_ablation: done already" in m for m in waiting.log), waiting.log
    assert set(RecordStore(out).manifest()["experiments"]) == {"clean", "layer_ablation"}
