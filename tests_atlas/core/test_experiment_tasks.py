"""Whole experiments as Ray tasks (``atlas_core.experiment_tasks``).

The schedule (no Ray): every experiment runs once and after everything it reads; the ``on_worker`` ones (LoRA
training, by its spec) leave at once for a worker while the driver runs the rest; with no
worker to spare they wait for one, and with no pool at all the run order is the plain one. A hypothesis property
checks the order on random dependency graphs and random finishing orders.

End to end (a local Ray cluster; default tier, ~27 s): ``atlas run --ray`` sends LoRA training to a worker before
the driver's first experiment, LoRA training's record says which actor computed it,
and every record equals the plain local run's: bit for bit at one thread on both sides, the sharded sweeps within
the 1e-5 their batch composition moves them (as ``test_distributed_cli`` states). A worker killed while it trains
is restarted by Ray, and the retried experiment writes the same record (slow tier, ~31 s)."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atlas_core.experiment_tasks import Schedule, needed, run_schedule
from atlas_core.experiments import parse_experiments
from atlas_core.results import RecordStore
from atlas_core.spec import experiment as spec_of

ALL = parse_experiments("all")


@dataclass
class FakeRemote:
    """Workers that finish jobs in an order the test chooses (``pick``), logging every event."""

    workers: int
    log: list[tuple[str, str]]
    pick: random.Random = field(default_factory=lambda: random.Random(0))
    running: list[str] = field(default_factory=list)

    def spare(self) -> bool:
        return self.workers - len(self.running) >= 2

    def submit(self, job: str) -> None:
        self.running.append(job)
        self.log.append(("submit", job))

    def pending(self) -> int:
        return len(self.running)

    def reap(self, block: bool):
        if not self.running or not (block or self.pick.random() < 0.5):
            return []
        job = self.running.pop(self.pick.randrange(len(self.running)))
        return [(job, f"outcome of {job}")]


def schedule_of(names: list[str], on_worker=lambda n: spec_of(n).on_worker) -> Schedule[str]:
    return Schedule(names, lambda n: needed(n, names), on_worker)


def run(names: list[str], remote: FakeRemote | None, schedule: Schedule[str] | None = None):
    log: list[tuple[str, str]] = remote.log if remote is not None else []
    finished: dict[str, object] = {}

    def here(job: str) -> None:
        log.append(("here", job))

    def done(job: str, outcome: object) -> None:
        finished[job] = outcome
        log.append(("finished", job))

    run_schedule(schedule or schedule_of(names), here, done, remote)
    return log, finished


def completion(log) -> dict[str, int]:
    """Where each job's result became available: a job run here at its run, a remote one when it came back."""
    return {job: i for i, (what, job) in enumerate(log) if what in ("here", "finished")}


def test_the_specs_declare_which_experiments_run_on_a_worker():
    assert [n for n in ALL if spec_of(n).on_worker] == ["lora_training"]  # adapter ablation spreads its layers
    assert needed("transfer", ALL) == ["lora_training"] and needed("efficiency", ALL) == ["layer_ablation"]
    assert needed("efficiency", ["clean", "efficiency"]) == []  # reuses only what this run computes


def test_lora_training_leaves_for_a_worker_before_the_driver_starts():
    """With the specs' placement, and with adapter ablation (which needs the adapter) also sent to a worker."""
    log, finished = run(ALL, FakeRemote(workers=2, log=[]))
    assert log[0] == ("submit", "lora_training") and log[1] == ("here", "clean")
    assert finished == {"lora_training": "outcome of lora_training"}
    remote = FakeRemote(workers=2, log=[])
    log, finished = run(ALL, remote, schedule_of(ALL, on_worker=lambda n: n in ("lora_training", "adapter_ablation")))
    assert log[0] == ("submit", "lora_training") and log[1] == ("here", "clean")
    done = completion(log)
    assert sorted(done) == sorted(ALL)  # every experiment once
    assert done["lora_training"] < done["transfer"] and done["layer_ablation"] < done["efficiency"]
    submitted = [i for i, (what, job) in enumerate(log) if what == "submit" and job == "adapter_ablation"]
    assert submitted and done["lora_training"] < submitted[0]  # it reads the adapter: sent once it exists
    assert finished == {"lora_training": "outcome of lora_training", "adapter_ablation": "outcome of adapter_ablation"}


def test_without_a_pool_the_run_order_is_the_plain_one():
    log, finished = run(ALL, None)
    assert log == [("here", n) for n in ALL] and finished == {}


def test_one_worker_is_kept_for_the_sweeps():
    """With one actor nothing is sent (it must shard the driver's sweeps): all runs here, in order."""
    remote = FakeRemote(workers=1, log=[])
    log, _ = run(ALL, remote)
    assert log == [("here", n) for n in ALL]


def test_a_done_experiment_is_read_here_not_sent():
    remote = FakeRemote(workers=3, log=[])
    names = ["clean", "lora_training", "transfer"]
    sched = schedule_of(names, on_worker=lambda n: False)  # lora_training done already: read back here
    log, _ = run(names, remote, sched)
    assert log == [("here", n) for n in names]


@settings(max_examples=200, deadline=None)
@given(
    st.integers(2, 9).flatmap(
        lambda n: st.tuples(
            st.just(n),
            st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=12),
            st.lists(st.booleans(), min_size=n, max_size=n),
            st.integers(1, 4),
            st.integers(0, 2**16),
        )
    )
)
def test_every_job_runs_once_after_what_it_reads(case):
    """Random graphs (edges point back in run order, as the specs' order makes them), random workers and random
    finishing orders: each job completes exactly once, after every job it needs."""
    n, edges, remote_ok, workers, seed = case
    names = [f"j{i}" for i in range(n)]
    deps = {
        name: sorted({names[min(a, b)] for a, b in edges if max(a, b) == i and a != b}) for i, name in enumerate(names)
    }
    sched = Schedule(names, lambda j: deps[j], lambda j: remote_ok[names.index(j)])
    remote = FakeRemote(workers=workers, log=[], pick=random.Random(seed))
    log, _ = run(names, remote, sched)
    done = completion(log)
    assert sorted(done) == sorted(names) and len([e for e in log if e[0] in ("here", "finished")]) == n
    started = {job: i for i, (what, job) in reversed(list(enumerate(log))) if what in ("here", "submit")}
    for job in names:
        assert all(done[dep] < started[job] for dep in deps[job]), (job, deps[job], log)


# -- end to end: a local Ray cluster ---------------------------------------------------------------------------

RUN = ["--model", "tiny-qwen2", "--profile", "smoke", "--no-report"]
EXPERIMENTS = "clean,layer_ablation,lora_training,transfer,adapter_ablation"


def test_lora_training_runs_on_a_worker_with_the_local_result(tmp_path, atlas_cli, record_numbers):
    pytest.importorskip("ray", reason='the ray extra: pip install -e ".[ray]"')
    args = [*RUN, "--experiments", EXPERIMENTS]
    local = atlas_cli(tmp_path / "local", args=args)
    assert local.wait(timeout=300) == 0, local.stdout.read()
    proc = atlas_cli(tmp_path / "ray", "--ray", "--ray-workers", "2", args=args)
    log = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, log
    lines = [line for line in log.splitlines() if line.startswith("[atlas]")]
    sent = next(i for i, line in enumerate(lines) if "lora_training: running on Ray worker" in line)
    first_here = next(i for i, line in enumerate(lines) if "clean: running on" in line)
    assert sent < first_here, lines
    a, b = RecordStore(tmp_path / "local"), RecordStore(tmp_path / "ray")
    for key in EXPERIMENTS.split(","):
        ra, rb = a.load(key), b.load(key)
        assert ra.config_hash == rb.config_hash, key
        worker = rb.provenance.get("worker")
        if spec_of(key).on_worker:
            assert worker and worker.startswith("ray actor ") and f"actor {proc.pid} " not in worker, (key, worker)
        else:
            assert worker is None, key
        na, nb = record_numbers(ra.result), record_numbers(rb.result)
        timed = [k for k in na if "seconds" in k]
        exact = spec_of(key).on_worker  # computed whole, at one thread as the local run: the same floats
        bad = [
            k
            for k in na
            if k not in timed
            and not (na[k] == nb[k] or (exact is False and np.isclose(na[k], nb[k], rtol=1e-5, atol=1e-7)))
            and not (np.isnan(na[k]) and np.isnan(nb[k]))
        ]
        assert na.keys() == nb.keys() and not bad, (key, [(k, na[k], nb[k]) for k in bad[:5]])
    adapter = tmp_path / "ray" / "lora_adapter_seed0"
    assert (adapter / "atlas_meta.json").is_file() and os.listdir(adapter)


def test_the_adapter_travels_as_its_files_and_a_damaged_one_is_refused(tmp_path):
    """``adapter_files`` -> ``place_adapter``: the same checked adapter in another folder; a flipped byte on the
    way is refused (its hash), and the folder it was meant for is left as it was."""
    import json

    from atlas_core.adapters_lora import ADAPTER_CONFIG, adapter_files, place_adapter, read_meta
    from atlas_core.integrity import CorruptFile, sha256_file

    src = tmp_path / "trained"
    src.mkdir()
    (src / ADAPTER_CONFIG).write_text('{"r": 8}')
    (src / "adapter_model.safetensors").write_bytes(bytes(range(256)) * 4)
    hashes = {f.name: sha256_file(f) for f in sorted(src.iterdir())}
    (src / "atlas_meta.json").write_text(json.dumps({"key": "k", "files": hashes}))
    files = adapter_files(src)
    placed = place_adapter(tmp_path / "run" / "lora_adapter_seed0", files)
    assert read_meta(placed) == read_meta(src) and adapter_files(placed) == files
    assert place_adapter(placed, files) == placed  # the same adapter already there: kept

    damaged = dict(files)
    blob = bytearray(damaged["adapter_model.safetensors"])
    blob[7] ^= 1
    damaged["adapter_model.safetensors"] = bytes(blob)
    with pytest.raises(CorruptFile, match="damaged"):
        place_adapter(tmp_path / "other", damaged)
    assert not (tmp_path / "other").exists()


@pytest.mark.slow  # ~30 s of fault injection, beside test_distributed_cli's
def test_a_worker_killed_while_training_is_restarted_and_the_record_is_the_local_one(
    tmp_path, atlas_cli, record_numbers
):
    """SIGKILL of the actor process while it runs LoRA training (``ray::ExperimentWorker.run_job``): Ray restarts
    the actor and retries the experiment (``max_restarts``), which a new process computes to the local record."""
    psutil = pytest.importorskip("psutil")
    pytest.importorskip("ray", reason='the ray extra: pip install -e ".[ray]"')
    import signal
    import time

    args = ["--model", "tiny-qwen2", "--profile", "ci", "--no-report", "--experiments", "clean,lora_training"]
    local = atlas_cli(tmp_path / "local", args=args)
    assert local.wait(timeout=300) == 0, local.stdout.read()
    proc = atlas_cli(tmp_path / "ray", "--ray", "--ray-workers", "2", args=args, start_new_session=True)
    killed = None
    deadline = time.monotonic() + 240
    while killed is None and proc.poll() is None and time.monotonic() < deadline:
        for p in psutil.process_iter(["pid", "cmdline"]):
            cmd = " ".join(p.info["cmdline"] or [])
            if cmd.startswith("ray::ExperimentWorker.run_job") and p.pid not in (os.getpid(), proc.pid):
                try:  # only this test's cluster: its raylet descends from the driver's session
                    if os.getsid(p.pid) == proc.pid:
                        os.kill(p.pid, signal.SIGKILL)
                        killed = p.pid
                except ProcessLookupError:
                    pass
        time.sleep(0.002)
    log = proc.communicate(timeout=300)[0]
    assert killed is not None, "the worker finished before it could be killed:\n" + log
    assert proc.returncode == 0, log
    a, b = RecordStore(tmp_path / "local").load("lora_training"), RecordStore(tmp_path / "ray").load("lora_training")
    worker = b.provenance["worker"]
    assert worker.startswith("ray actor ") and f"actor {killed} " not in worker, (killed, worker)  # a new process
    na, nb = record_numbers(a.result), record_numbers(b.result)
    assert {k: v for k, v in na.items() if "seconds" not in k} == {k: v for k, v in nb.items() if "seconds" not in k}


@pytest.mark.slow
def test_a_worker_lost_for_good_hands_its_experiment_to_the_driver(tmp_path, record_numbers):
    """No restarts left (``max_restarts=0``): the actor SIGKILLed while it trains is gone, and the driver computes
    LoRA training itself, to the record a plain run writes (one thread everywhere)."""
    psutil = pytest.importorskip("psutil")
    pytest.importorskip("ray", reason='the ray extra: pip install -e ".[ray]"')
    import signal
    import threading
    import time

    import torch

    from atlas_core.distributed import RayConfig
    from atlas_core.orchestrate import RunPlan, run_plan

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    killed: list[int] = []
    stop = threading.Event()

    def kill_the_trainer() -> None:
        while not stop.is_set() and not killed:
            for child in psutil.Process().children(recursive=True):
                try:
                    if " ".join(child.cmdline()).startswith("ray::ExperimentWorker.run_job"):
                        os.kill(child.pid, signal.SIGKILL)
                        killed.append(child.pid)
                        break
                except (psutil.NoSuchProcess, ProcessLookupError):
                    pass
            time.sleep(0.002)

    def plan(out, ray=None) -> RunPlan:
        exps = ["clean", "lora_training"]
        return RunPlan("tiny-qwen2", exps, "ci", out, progress=False, report=False, ray=ray)

    try:
        run_plan(plan(tmp_path / "local"))
        watcher = threading.Thread(target=kill_the_trainer, daemon=True)
        watcher.start()
        p = plan(tmp_path / "ray", RayConfig(workers=2, threads=1, max_restarts=0))
        run_plan(p)
    finally:
        stop.set()
        torch.set_num_threads(threads)
    assert killed, "the worker finished before it could be killed"
    assert any("the driver computes its experiment" in line for line in p.log), p.log
    a, b = RecordStore(tmp_path / "local").load("lora_training"), RecordStore(tmp_path / "ray").load("lora_training")
    assert b.provenance.get("worker") is None  # computed here
    na, nb = record_numbers(a.result), record_numbers(b.result)
    assert {k: v for k, v in na.items() if "seconds" not in k} == {k: v for k, v in nb.items() if "seconds" not in k}
