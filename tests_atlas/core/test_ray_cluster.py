"""``atlas run --ray ADDRESS`` on an existing two-node Ray cluster that the test starts on this machine: a head (2
CPUs) and a second node (1 CPU), each with its own raylet, and two one-thread actors, one per node. Default tier:
the module took 44 s on a shared 2-core machine (two clusters of ~5 s each, three tiny-qwen2 runs).

- The run spread over both nodes writes the plain local run's layer-ablation record (within the 1e-5 that
  shards of one variant move the sweeps from the local run's shared chunks; one torch thread on both sides), with the second node killed (SIGKILL of its raylet and store) once a shard is saved:
  Ray retries the lost actor's shard (``max_task_retries``) while the node is unreachable, then the pool sends
  it to the actor left on the head, and the record is still the local one.
- A driver (``RAY_ADDRESS`` and ``--ray auto``) killed with SIGKILL while connected to the cluster started no
  process of its own, its actors are gone from the cluster (their CPUs free again) and, once the test stops the
  cluster, no process of the cluster or of Atlas is left.

Every process the cluster starts carries a tag in its environment (``ATLAS_RAY_CLUSTER_TEST``, inherited from the
test through the raylets, and by the driver): that is how the test tells its own Ray processes from those of
other sessions on a shared machine. Each actor's node is its parent, the raylet that started it."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
import uuid
from dataclasses import dataclass, field

import numpy as np
import pytest

from atlas_core.results import RecordStore

ray = pytest.importorskip("ray", reason='the ray extra: pip install -e ".[ray]"')
psutil = pytest.importorskip("psutil")  # a dependency of Ray

ARGS = ["--model", "tiny-qwen2", "--experiments", "layer_ablation", "--profile", "full", "--no-report"]
TAG = "ATLAS_RAY_CLUSTER_TEST"
HEAD_CPUS, SECOND_CPUS = 2, 1  # two one-CPU actors, one per node; room on the head should Ray restart the second's


def ray_processes(tag: str | None = None) -> dict[int, str]:
    """Processes (pid -> command line) whose command line names Ray; with ``tag``, only those whose environment
    carries ``TAG=tag`` (this test's cluster and driver), the test process itself aside."""
    found = {}
    for p in psutil.process_iter(["pid", "cmdline", "environ"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "ray" not in cmd or p.info["pid"] == os.getpid():
            continue
        if tag is None or (p.info["environ"] or {}).get(TAG) == tag:
            found[p.info["pid"]] = cmd
    return found


def wait_for(check, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while not (got := check()):
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        time.sleep(0.1)
    return got


@dataclass
class TwoNodes:
    """The test's cluster: ``cluster.head_node`` and ``second``, the processes naming Ray before it started."""

    cluster: object
    second: object
    temp: str
    tag: str
    before: dict[int, str]
    down: list[str] = field(default_factory=list)

    @property
    def address(self) -> str:
        return self.cluster.address  # type: ignore[attr-defined]

    def raylet(self, node) -> int:
        return node.all_processes["raylet"][0].process.pid

    def actors(self) -> dict[int, str]:
        """The live ``SweepWorker``/``ExperimentWorker`` actors' processes, pid -> node ("head", "second")."""
        nodes = {self.raylet(self.cluster.head_node): "head"}  # type: ignore[attr-defined]
        if self.second is not None:
            nodes[self.raylet(self.second)] = "second"
        found = {}
        for pid, cmd in ray_processes(self.tag).items():
            if cmd.startswith(("ray::SweepWorker", "ray::ExperimentWorker")):
                try:
                    found[pid] = nodes.get(psutil.Process(pid).ppid(), "?")
                except psutil.NoSuchProcess:
                    pass
        return found

    def kill_second(self) -> None:
        self.cluster.remove_node(self.second, allow_graceful=False)  # type: ignore[attr-defined]
        self.second = None

    def shutdown(self) -> None:
        if self.down:
            return
        self.down.append("down")
        ray.shutdown()
        self.cluster.shutdown()  # type: ignore[attr-defined]
        shutil.rmtree(self.temp, ignore_errors=True)


@pytest.fixture
def two_nodes(monkeypatch):
    """A head and a second node, each its own raylet with its own CPUs, in a short temp dir of their own (Unix
    socket paths are limited to ~100 characters); the test process is connected as a driver of its own (it reads
    the cluster's free resources). Everything stops in the finalizer, whatever the test did."""
    from ray.cluster_utils import Cluster

    tag = uuid.uuid4().hex
    monkeypatch.setenv(TAG, tag)
    before = ray_processes()
    temp = tempfile.mkdtemp(prefix="atlas-ray-")
    cluster = Cluster()
    nodes = TwoNodes(cluster, None, temp, tag, before)
    try:
        cluster.add_node(num_cpus=HEAD_CPUS, include_dashboard=False, temp_dir=temp)  # the first node is the head
        nodes.second = cluster.add_node(num_cpus=SECOND_CPUS, temp_dir=temp)
        ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
        yield nodes
    finally:
        nodes.shutdown()


def first_shard(out, proc):
    """Waits until the run saved a shard; the run must still be going."""
    deadline = time.monotonic() + 240
    while not list(out.glob(".partial/*/sweep-*.safetensors")):
        assert proc.poll() is None, "the run ended before saving a shard:\n" + proc.stdout.read()
        assert time.monotonic() < deadline, "no shard saved in 240 s"
        time.sleep(0.005)


def test_run_over_two_nodes_survives_losing_one(two_nodes, tmp_path, atlas_cli, record_numbers):
    local = atlas_cli(tmp_path / "local", args=ARGS)
    assert local.wait(timeout=300) == 0, local.stdout.read()

    out = tmp_path / "ray"
    run = atlas_cli(out, "--ray", two_nodes.address, "--ray-workers", "2", "--ray-shard", "1", args=ARGS)
    first_shard(out, run)
    placed = two_nodes.actors()
    print(f"actors (pid: node) when the first shard was saved: {placed}")
    assert sorted(placed.values()) == ["head", "second"]
    saved = len(list(out.glob(".partial/*/sweep-*.safetensors")))
    two_nodes.kill_second()
    assert run.poll() is None and not (out / "layer_ablation.json").exists(), "the run ended before the kill"
    print(f"second node killed (raylet and store SIGKILLed, its workers end with them) after {saved} checkpoint(s)")
    wait_for(
        lambda: set(two_nodes.actors().values()) <= {"head"}, 30, "the second node's actor process is gone"
    )  # an orphan of the dead raylet would show as "?"
    seen = set()
    while run.poll() is None:  # Ray retries the lost shard; once retries are spent the pool sends it to the head
        seen.update(two_nodes.actors().items())
        time.sleep(0.05)
    log = run.stdout.read()
    assert run.returncode == 0, log
    print(f"actors (pid, node) seen after the kill: {sorted(seen)}")
    assert {node for _, node in seen} <= {"head"}

    a, b = RecordStore(tmp_path / "local").load("layer_ablation"), RecordStore(out).load("layer_ablation")
    assert a.config_hash == b.config_hash
    na, nb = record_numbers(a.result), record_numbers(b.result)
    assert na.keys() == nb.keys() and len(na) > 100
    # shards of one variant each, where the local run's variants share chunks (staggered entry): the same numbers
    # up to the rounding of other matmul shapes (a lost or doubled shard would differ in full)
    bad = [k for k in na if not (na[k] == nb[k] or np.isclose(na[k], nb[k], rtol=1e-5, atol=1e-7))]
    assert not bad, [(k, na[k], nb[k]) for k in bad[:5]]


def test_killed_driver_leaves_no_ray_process(two_nodes, tmp_path, atlas_cli, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", two_nodes.address)  # what `--ray auto` joins (not /tmp/ray's latest cluster)
    total = ray.cluster_resources()["CPU"]
    assert total == HEAD_CPUS + SECOND_CPUS
    cluster_own = ray_processes(two_nodes.tag)
    out = tmp_path / "ray"
    run = atlas_cli(out, "--ray", "auto", "--ray-workers", "2", "--ray-shard", "1", args=ARGS, start_new_session=True)
    first_shard(out, run)
    session = [p.pid for p in psutil.process_iter() if _sid(p.pid) == run.pid]
    actors = two_nodes.actors()
    print(f"driver {run.pid}: its session holds {session}; actors {actors}")
    assert session == [run.pid], "the driver of an existing cluster started processes of its own"
    assert sorted(actors.values()) == ["head", "second"]
    os.kill(run.pid, signal.SIGKILL)
    run.wait()

    # Ray kills a dead driver's (non-detached) actors: their processes end and their CPUs are free again
    wait_for(lambda: not two_nodes.actors(), 60, f"the killed driver's actors {actors} end")
    wait_for(lambda: ray.available_resources().get("CPU") == total, 60, "the cluster's CPUs are free again")
    assert not [p.pid for p in psutil.process_iter() if _sid(p.pid) == run.pid]
    new = {pid: cmd for pid, cmd in ray_processes(two_nodes.tag).items() if pid not in cluster_own}
    print(f"tagged Ray processes before the run: {len(cluster_own)}; after the killed driver, new: {new}")

    two_nodes.shutdown()
    wait_for(lambda: not ray_processes(two_nodes.tag), 30, "every process of the test's cluster ends")
    after = ray_processes()
    new = {pid: cmd for pid, cmd in after.items() if pid not in two_nodes.before}
    print(
        f"processes naming Ray before the cluster started: {len(two_nodes.before)}, after its shutdown: "
        f"{len(after)}; new since (other sessions' on a shared machine): {new}"
    )
    assert not [pid for pid in new if _env(pid).get(TAG) == two_nodes.tag]


def _sid(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None


def _env(pid: int) -> dict:
    try:
        return psutil.Process(pid).environ()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return {}
