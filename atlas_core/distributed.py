"""Sweeps sharded over Ray actors (``atlas run --ray [ADDRESS]``), each actor holding a model replica.

Built above the runner: a ``RayPool`` (a context manager) lent as the backend of a run's ``runner.Sweeping``
receives from ``Runner.sweep`` every sweep of the pool's model. ``RayPool.sweep`` splits the variants still to
do into shards, runs each shard with the runner's own ``sweep`` inside an actor (one GPU per actor on a GPU
cluster, ``threads`` torch threads per actor on a CPU) and writes each finished shard's per-(variant, prompt)
arrays into the sweep's checkpoint slot, the same arrays and file a local sweep keeps, so a restarted driver
(or a local rerun) skips finished shards.
Faults: actors are restarted by Ray and their tasks retried (``max_restarts``/``max_task_retries``); a shard
whose actor is gone for good goes back on the queue for the remaining actors.

Ray is imported only when a pool is entered: without ``--ray`` Atlas stays a plain local tool.
"""

from __future__ import annotations

import math
import os
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from atlas_core import AtlasError
from atlas_core.runner import Runner


@dataclass(frozen=True)
class RayConfig:
    """Where and how wide to shard. ``address`` None starts a local cluster for the run and stops it after;
    otherwise it is passed to ``ray.init`` (``auto``, ``ray://host:10001``, ``host:6379``)."""

    address: str | None = None
    workers: int = 2
    threads: int = 1  # torch threads per actor (its CPU reservation on a CPU cluster)
    gpus_per_worker: float = 0.0  # 1 on a GPU cluster: one replica per GPU
    shard_variants: int | None = None  # variants per shard; default: about four shards per worker
    max_restarts: int = 2  # Ray restarts a dead actor this often and retries its tasks as often
    # each replica placed over its actor's devices as ``--device-map`` places the driver's (accelerate): "auto",
    # implied by more than one GPU per worker; ``max_memory`` as ``--max-memory`` ("0=20GiB,1=20GiB,cpu=60GiB")
    device_map: str | None = None
    max_memory: str | None = None

    def __post_init__(self):
        if self.workers < 1:
            raise AtlasError(f"--ray-workers must be at least 1 (got {self.workers})")
        if self.threads < 1:
            raise AtlasError(f"--ray-threads must be at least 1 (got {self.threads})")
        if self.gpus_per_worker < 0:
            raise AtlasError(f"gpus per worker must be 0 or more (got {self.gpus_per_worker})")
        if self.shard_variants is not None and self.shard_variants < 1:
            raise AtlasError(f"--ray-shard must be at least 1 variant (got {self.shard_variants})")
        if self.max_restarts < 0:
            raise AtlasError(f"max_restarts must be 0 or more (got {self.max_restarts})")
        if self.device_map not in (None, "auto"):
            raise AtlasError(f"--device-map {self.device_map!r}: only 'auto' is supported")
        if self.max_memory is not None and self.placement is None:
            raise AtlasError("--max-memory places a replica: add --device-map auto (or give each worker 2+ GPUs)")

    @property
    def placement(self) -> str | None:
        """How each actor places its replica: "auto" (over its devices) or None (whole on one device)."""
        return self.device_map or ("auto" if self.gpus_per_worker > 1 else None)


@dataclass(frozen=True)
class RunnerSpec:
    """What an actor needs to rebuild a driver's ``Runner`` on its own replica."""

    prompts: tuple[str, ...]
    memory_mb: int
    seed: int
    reference_prompts: tuple[str, ...] | None

    @classmethod
    def of(cls, runner) -> "RunnerSpec":
        ref = runner.reference_prompts
        return cls(tuple(runner.prompts), runner.memory_mb, runner.seed, None if ref is None else tuple(ref))


class SweepWorker:
    """The actor body: one model replica and a runner per prompt set (the clean pass runs once per actor)."""

    def __init__(
        self,
        model: str,
        device: str,
        dtype: str,
        threads: int,
        device_map: str | None = None,
        max_memory: str | None = None,
    ):
        from atlas_core.models import load
        from atlas_core.models.placement import parse_max_memory, place

        torch.set_num_threads(threads)
        self.lm = load(model, device="cpu" if device_map else device, dtype=dtype, progress=False)
        self.devices = [str(next(self.lm.model.parameters()).device)]
        if device_map:  # loaded on the CPU, then dispatched over this actor's devices (Ray sets which GPUs it sees)
            self.devices = place(self.lm.model, device_map, parse_max_memory(max_memory)).devices
        self._runners: dict[RunnerSpec, Runner] = {}

    def identity(self) -> tuple[str, int]:
        """(weights sha256, process id): the driver checks the replica is its model."""
        return self.lm.info.weights_sha256, os.getpid()

    def placed_on(self) -> list[str]:
        """The devices this replica spans (accelerate's device names: GPU indices, cpu, disk)."""
        return self.devices

    def apply(self, fn: Callable, payload, items: list) -> list:
        """``fn(lm, payload, items)`` on this replica (``RayPool.spread``)."""
        return fn(self.lm, payload, items)

    def sweep(self, spec: RunnerSpec, variants, targets, k, reference_logprobs):
        runner = self._runners.get(spec)
        if runner is None:
            runner = self._runners[spec] = Runner(
                self.lm.model,
                self.lm.tokenizer,
                list(spec.prompts),
                memory_mb=spec.memory_mb,
                seed=spec.seed,
                reference_prompts=spec.reference_prompts,
            )
        return runner.sweep(variants, targets=targets, k=k, reference_logprobs=reference_logprobs, progress=False)


def shards(indices: Sequence[int], size: int) -> list[list[int]]:
    """Consecutive runs of ``size`` indices (the last may be shorter)."""
    indices = list(indices)
    return [indices[i : i + size] for i in range(0, len(indices), size)]


@dataclass
class ShardEvent:
    """A finished shard, as the pool reports it to ``on_shard`` (tests kill workers or the driver here)."""

    index: int
    variants: list[int]
    worker: int  # position of the actor in ``RayPool.actors``


def result_of(ref):
    """``ray.get(ref)``, an ``AtlasError`` raised on the worker re-raised as itself (one ``atlas: error:`` line, as
    on the driver) rather than wrapped in Ray's ``RayTaskError``; a lost actor's ``RayActorError`` passes through."""
    import ray

    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, AtlasError):
            raise exc.cause from None
        raise


class RayPool:
    """Actors holding replicas of ``lm`` (loaded by each actor from ``model``), alive while entered. A
    ``runner.SweepBackend``: lent to a run's ``Sweeping`` (``sweeping.lent(backend=pool)``), the sweeps of
    ``lm.model`` are sharded over them."""

    def __init__(
        self,
        config: RayConfig,
        model: str,
        lm,
        on_shard: Callable[[ShardEvent], None] | None = None,
        worker: type = SweepWorker,
    ):
        self.config = config
        self.model = model
        self.lm = lm
        self.on_shard = on_shard
        self.worker = worker  # the actor class: SweepWorker, or a subclass that also runs whole experiments
        self.actors: list = []
        self.live: list[int] = []
        self.reserved: set[int] = set()  # actors lent to a whole experiment (``reserve``), out of the sweeps
        self.pids: list[int] = []
        self.placed: list[list[str]] = []  # the devices each actor's replica spans
        self.dispatched = 0  # shards sent to actors (a test reads how many a resumed run sent)
        self._started = False

    # ---- lifetime ---------------------------------------------------------------------------------------
    def __enter__(self) -> "RayPool":
        try:
            import ray
        except ImportError:
            raise AtlasError('--ray needs Ray: pip install -e ".[ray]"') from None
        cfg = self.config
        if not ray.is_initialized():
            if cfg.address is None:
                ray.init(
                    num_cpus=cfg.workers * cfg.threads,
                    num_gpus=None if cfg.gpus_per_worker else 0,
                    include_dashboard=False,
                    log_to_driver=False,
                    configure_logging=False,
                )
            else:
                ray.init(address=cfg.address, log_to_driver=False, configure_logging=False)
            self._started = True
        try:
            actor: Any = ray.remote(self.worker).options(
                num_cpus=cfg.threads,
                num_gpus=cfg.gpus_per_worker,
                max_restarts=cfg.max_restarts,
                max_task_retries=cfg.max_restarts,
            )
            device = "cuda" if cfg.gpus_per_worker else "cpu"
            self.actors = [
                actor.remote(self.model, device, self.lm.info.dtype, cfg.threads, cfg.placement, cfg.max_memory)
                for _ in range(cfg.workers)
            ]
            ids = ray.get([a.identity.remote() for a in self.actors])
            bad = {sha for sha, _ in ids if sha != self.lm.info.weights_sha256}
            if bad:
                raise AtlasError(
                    f"the Ray workers loaded {self.model!r} with weights {sorted(bad)}, not the driver's "
                    f"{self.lm.info.weights_sha256}: install the same model (same cache) on every node"
                )
            self.pids = [pid for _, pid in ids]
            self.placed = ray.get([a.placed_on.remote() for a in self.actors])
            self.live = list(range(len(self.actors)))
        except BaseException:
            self._close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._close()

    def _close(self) -> None:
        import ray

        for a in self.actors:
            try:
                ray.kill(a)
            except Exception:  # an actor already gone
                pass
        self.actors, self.live, self.reserved = [], [], set()
        if self._started:
            ray.shutdown()
            self._started = False

    # ---- actors lent out ---------------------------------------------------------------------------------
    def free(self) -> list[int]:
        """The live actors the sweeps may use (not reserved)."""
        return [w for w in self.live if w not in self.reserved]

    def reserve(self) -> int:
        """Take a free actor out of the sweeps' rotation (for a whole experiment) until ``release``."""
        free = self.free()
        if not free:
            raise AtlasError("no free Ray worker to reserve")
        self.reserved.add(free[0])
        return free[0]

    def release(self, worker: int) -> None:
        self.reserved.discard(worker)

    def drop(self, worker: int) -> None:
        """An actor gone for good (its restarts spent)."""
        self.release(worker)
        if worker in self.live:
            self.live.remove(worker)

    # ---- sharded sweeps --------------------------------------------------------------------------------
    def takes(self, runner) -> bool:
        """Whether ``runner`` sweeps this pool's model as loaded: a runner over an adapted copy (LoRA, a
        changed model) stays local, since the actors hold only the base weights."""
        if not self.free() or runner.model is not self.lm.model:
            return False
        return not any(type(m).__module__.startswith("peft.") for m in runner.model.modules())  # adapter injected

    def shard_size(self, n: int) -> int:
        return self.config.shard_variants or max(1, math.ceil(n / (4 * len(self.actors))))

    def sweep(self, runner, variants, targets, k, reference_logprobs):
        """``Runner.sweep`` of ``variants`` on the actors; same arrays, same checkpoint slot, same statistics
        (``Runner.stats`` on the driver)."""
        import ray

        nv = len(variants)
        arrays, slot = runner.saved(variants, targets, k, reference_logprobs)
        todo = [i for i in range(nv) if not arrays["done"][i].all()]
        spec = ray.put(RunnerSpec.of(runner))
        tgt = None if targets is None else [int(t) for t in targets]
        ref = None if reference_logprobs is None else ray.put(reference_logprobs.detach().float().cpu())

        def send(actor, rows: list[int]):
            return actor.sweep.remote(spec, [variants[i] for i in rows], tgt, k, ref)

        def got(si: int, rows: list[int], w: int, st) -> None:
            for name, values in (
                ("kl", st.kl),
                ("argmax_match", st.argmax_match),
                ("topk_overlap", st.topk_overlap),
                ("argmax", st.argmax),
                ("target_prob", st.target_prob),
            ):
                if name in arrays:
                    arrays[name][rows] = values
            arrays["done"][rows] = 1
            if slot is not None:
                slot.save(arrays, force=True)  # each finished shard is durable: a restarted driver skips it
            if self.on_shard is not None:
                self.on_shard(ShardEvent(si, rows, w))

        self._dispatch(shards(todo, self.shard_size(len(todo))), send, got, f"of {nv} variants", runner.progress)
        return runner.stats(variants, arrays, targets, reference_logprobs)

    def spread(self, fn: Callable, payload, items: Sequence) -> list:
        """``fn(lm, payload, chunk)`` on the free actors' replicas, ``items`` cut into one contiguous chunk per
        actor; its per-item results in item order. Work that is not a variant sweep of the base model (an adapted
        model's, measured layer by layer): ``fn`` is a module-level function, and its results are exactly what it
        returns on the driver at the same thread count. A chunk whose actor is lost for good goes to another."""
        import ray

        out: list = [None] * len(items)
        ref = ray.put(payload)

        def send(actor, idx: list[int]):
            return actor.apply.remote(fn, ref, [items[i] for i in idx])

        def got(_: int, idx: list[int], __: int, values) -> None:
            if len(values) != len(idx):
                raise AtlasError(f"{fn.__qualname__} returned {len(values)} results for {len(idx)} items")
            for i, value in zip(idx, values):
                out[i] = value

        size = max(1, math.ceil(len(items) / max(1, len(self.free()))))
        self._dispatch(shards(range(len(items)), size), send, got, f"of {len(items)} items", False)
        return out

    def _dispatch(self, chunks: list[list[int]], send: Callable, got: Callable, what: str, progress: bool) -> None:
        """Each chunk to a free actor (``send(actor, chunk)`` -> its task), ``got(index, chunk, actor, result)``
        as each finishes; a chunk whose actor is gone for good (restarts spent) goes back on the queue."""
        import ray
        from tqdm.auto import tqdm

        queue = deque(enumerate(chunks))
        idle = deque(self.free())
        inflight: dict = {}
        bar = tqdm(total=len(queue), desc="ray shards", unit="shard", disable=not progress, leave=False)
        while queue or inflight:
            while queue and idle:
                w = idle.popleft()
                si, rows = queue.popleft()
                inflight[send(self.actors[w], rows)] = (w, si, rows)
                self.dispatched += 1
            if not inflight:
                raise AtlasError(
                    f"every Ray worker died; {len(queue)} shard(s) {what} left undone "
                    "(their finished shards are saved: rerun to resume)"
                )
            (done,), _ = ray.wait(list(inflight), num_returns=1)
            w, si, rows = inflight.pop(done)
            try:
                result = result_of(done)
            except ray.exceptions.RayActorError:  # restarts exhausted: its shard goes to the others
                self.drop(w)
                queue.appendleft((si, rows))
                continue
            got(si, rows, w, result)
            idle.append(w)
            bar.update(1)
        bar.close()
