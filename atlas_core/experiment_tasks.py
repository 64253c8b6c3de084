"""Whole experiments as Ray tasks (``atlas run --ray``): the run's experiments scheduled by the dependencies their
specs declare, the serial ones on a worker of their own while the driver's sweeps are sharded over the others.

Which experiment runs where is declared once, in its spec: ``on_worker`` (LoRA training, whose steps are serial at
batch size 1) runs whole on one Ray actor, reserved for it; everything else runs on the driver, whose base-model
sweeps the pool shards over the actors not reserved (transfer's patched sweep among them), and adapter ablation
spreads its layers over them, each actor attaching the adapter to its own replica (``RayPool.spread``). An experiment starts once every experiment it ``requires`` or ``reuses`` in this run has
its result, so LoRA training starts with the run and the base-model sweeps run beside it; transfer waits for the
adapter. At least one actor always stays for the sweeps: with one worker everything runs on the driver.

A worker computes an experiment exactly as the driver would (:func:`compute`: the same ``run_experiment``, the
same checkpoints folder, metered the same way) and hands back the typed result; the driver writes the record in
the run folder's format. The trained LoRA adapter travels as its files (a worker on another node may not share
the run folder), checked by its hashes on arrival. Results equal a local run's: bit for bit where the worker's
thread count is the driver's; otherwise LoRA training, the one experiment whose result accumulates thousands of
reductions, drifts within the tolerance the tests state. Resuming is as local: an experiment's checkpoints live
in ``RUN/.partial/`` (on a node that shares the folder), and a finished one is a record.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import torch

from atlas_core.adapters_lora import adapter_files
from atlas_core.checkpoints import Checkpoints
from atlas_core.distributed import SweepWorker, result_of
from atlas_core.experiments import run_experiment
from atlas_core.experiments import lora_training
from atlas_core.experiments.context import Context
from atlas_core.integrity import NonFiniteMetric
from atlas_core.profiles import Profile
from atlas_core.spec import ExperimentSpec
from atlas_core.spec import experiment as spec_of
from atlas_core.tasks import TaskFamily
from atlas_core.work import matmul_peak, metering


@dataclass
class Computed:
    """One experiment computed: its typed result and what its record's provenance says of the computation."""

    result: Any
    work: dict  # ``Work.record``: FLOP, tokens, achieved rate
    run_seconds: float  # this attempt
    prior_seconds: float  # earlier attempts, up to their last save
    torch_threads: int
    worker: str | None = None  # "ray actor <pid> on <host>" when a worker computed it; None: the driver


def compute(ctx: Context, spec: ExperimentSpec, key: str, results: dict[str, Any], partial: Path) -> Computed:
    """Run experiment ``spec`` on ``ctx`` with the ``results`` it may read, its sweeps and training saving to
    (and resuming from) ``partial``, metered; nothing is written but the checkpoints."""
    param = next(ctx.lm.model.parameters())
    peak = matmul_peak(param.device, param.dtype)
    t0 = time.perf_counter()
    ck = Checkpoints(partial)
    with ctx.sweeping.lent(checkpoints=ck), metering(ctx.lm.model) as work:
        try:
            result = run_experiment(spec, ctx, results)
        except NonFiniteMetric as exc:  # nothing is stored; the message gains the experiment's name
            raise NonFiniteMetric(f"{key}: {exc}") from None
    run_s = time.perf_counter() - t0
    return Computed(result, work.record(run_s, peak), run_s, ck.prior_seconds, torch.get_num_threads())


@dataclass(frozen=True)
class RemoteJob:
    """What a worker needs to compute one experiment of the driver's run as the driver would."""

    name: str
    key: str
    seed: int
    families: dict[str, TaskFamily]
    profile: Profile
    out_dir: str
    partial: str
    drive: dict[str, str]
    screen: str | None
    results: dict[str, Any]  # the typed results it declares it reads (its artifacts: none, see ``spec``)


class ExperimentWorker(SweepWorker):
    """A ``SweepWorker`` that also computes whole experiments (``run_job``) on its replica. A context per
    (run folder, seed, profile, families) is kept, so the clean pass runs once per actor and seed."""

    def __init__(self, model: str, device: str, dtype: str, threads: int, device_map=None, max_memory=None):
        super().__init__(model, device, dtype, threads, device_map, max_memory)
        self._contexts: dict[tuple, Context] = {}

    def run_job(self, job: RemoteJob) -> tuple[Computed, dict[str, bytes] | None]:
        """Compute ``job``; returns it with the adapter's files when it trained one (None otherwise)."""
        ident = (job.out_dir, job.seed, job.profile, tuple(f.sha256 for f in job.families.values()))
        ctx = self._contexts.get(ident)
        if ctx is None:
            ctx = self._contexts[ident] = Context(
                self.lm, dict(job.families), job.profile, seed=job.seed, out_dir=Path(job.out_dir), progress=False
            )
        ctx.drive, ctx.screen = dict(job.drive), job.screen
        computed = compute(ctx, spec_of(job.name), job.key, job.results, Path(job.partial))
        computed.worker = f"ray actor {os.getpid()} on {socket.gethostname()}"
        trained = ctx.artifacts.lora_adapter_dir if job.name == lora_training.NAME else None
        return computed, None if trained is None else adapter_files(trained)


J = TypeVar("J")


class Remote(Protocol[J]):
    """Where the scheduler sends ``on_worker`` experiments (``RemoteJobs``; a fake in the tests)."""

    def spare(self) -> bool:
        """Whether a worker can take one more experiment now (one always stays for the sweeps)."""
        ...

    def submit(self, job: J) -> None: ...

    def pending(self) -> int: ...

    def reap(self, block: bool) -> list[tuple[J, Any]]:
        """The experiments finished since the last call, with their outcomes (``block``: wait for one)."""
        ...


@dataclass
class Schedule(Generic[J]):
    """The run's experiments in run order, with what each reads and whether it runs on a worker."""

    jobs: Sequence[J]
    needs: Callable[[J], list[J]]  # the jobs of this run whose results it reads (declared requires and reuses)
    on_worker: Callable[[J], bool]  # runs whole on a worker (declared, and not done already)


def run_schedule(
    schedule: Schedule[J],
    here: Callable[[J], None],
    finished: Callable[[J, Any], None],
    remote: Remote[J] | None,
) -> None:
    """Run every job once, each after the jobs it needs. ``on_worker`` jobs go to ``remote`` as soon as they are
    ready and a worker is spare, and ``finished(job, outcome)`` records each when it comes back; every other
    job runs ``here`` (the driver), in run order among those ready. Without ``remote`` everything runs here in
    run order. While no worker can be spared and none is busy, ``on_worker`` jobs run here too, in run order."""
    pending = list(schedule.jobs)
    done: set[int] = set()

    def ready(job: J) -> bool:
        return all(id(dep) in done for dep in schedule.needs(job))

    def record(outcomes: list[tuple[J, Any]]) -> None:
        for job, outcome in outcomes:
            finished(job, outcome)
            done.add(id(job))

    def run_here(job: J) -> None:
        pending.remove(job)
        here(job)
        done.add(id(job))

    while pending:
        if remote is not None:
            record(remote.reap(block=False))
            for job in [j for j in pending if schedule.on_worker(j) and ready(j)]:
                if not remote.spare():
                    break
                pending.remove(job)
                remote.submit(job)
        # with no worker to spare and none busy (one actor, or the others lost), on_worker jobs run here in order
        idle = remote is None or not (remote.spare() or remote.pending())
        local = [j for j in pending if ready(j) and (idle or not schedule.on_worker(j))]
        if local:
            run_here(local[0])
        elif remote is not None and remote.pending():
            record(remote.reap(block=True))
        else:  # unreachable while needs point back in run order: the first job runs here rather than hang
            run_here(pending[0])
    while remote is not None and remote.pending():
        record(remote.reap(block=True))


class RemoteJobs(Generic[J]):
    """``on_worker`` experiments on the actors of a ``RayPool`` of ``ExperimentWorker``: each reserves an actor
    (taken out of the sweeps' rotation) until it comes back. ``payload(job)`` builds the ``RemoteJob`` at
    submission, when the results it reads exist; an actor lost for good (its restarts spent) hands its job to
    ``fallback`` (the driver computes it, resuming from its checkpoints)."""

    def __init__(
        self, pool, payload: Callable[[J], RemoteJob], fallback: Callable[[J], Any], say: Callable[[str], None]
    ):
        self.pool = pool
        self.payload = payload
        self.fallback = fallback
        self.say = say
        self._running: dict[Any, tuple[J, int]] = {}  # ObjectRef -> (job, actor)

    def spare(self) -> bool:
        return len(self.pool.free()) >= 2

    def submit(self, job: J) -> None:
        actor = self.pool.reserve()
        payload = self.payload(job)
        self._running[self.pool.actors[actor].run_job.remote(payload)] = (job, actor)
        self.say(f"[atlas] {payload.key}: running on Ray worker {actor} beside the driver's sweeps")

    def pending(self) -> int:
        return len(self._running)

    def reap(self, block: bool) -> list[tuple[J, Any]]:
        import ray

        if not self._running:
            return []
        ready, _ = ray.wait(
            list(self._running), num_returns=1 if block else len(self._running), timeout=None if block else 0
        )
        out = []
        for ref in ready:
            job, actor = self._running.pop(ref)
            self.pool.release(actor)
            try:
                out.append((job, result_of(ref)))
            except ray.exceptions.RayActorError:  # its restarts are spent: the driver computes it
                self.pool.drop(actor)
                self.say(f"[atlas] Ray worker {actor} is gone; the driver computes its experiment, resuming it")
                out.append((job, self.fallback(job)))
        return out


def needed(job_name: str, names: Sequence[str]) -> list[str]:
    """The experiments among ``names`` (this run's) whose results ``job_name`` reads: what it waits for."""
    spec = spec_of(job_name)
    return [n for n in spec.requires + spec.reuses if n in names]
