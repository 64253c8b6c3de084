"""``atlas run``: validate everything, load the model once, run the selected experiments in order,
write each result atomically as it finishes, skip those already done with the same config hash."""

from __future__ import annotations

import sys
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from filelock import Timeout

from atlas_core import AtlasError
from atlas_core.adapters_lora import place_adapter
from atlas_core.codehash import baseline_stands, fingerprint
from atlas_core.experiment_tasks import Computed, RemoteJob, RemoteJobs, Schedule, compute, needed, run_schedule
from atlas_core.experiments import lora_training, parse_experiments
from atlas_core.experiments.context import Context
from atlas_core.experiments.schema import load_result
from atlas_core.models import load, resolve_device
from atlas_core.models.loader import check_model_source, resolve_dtype
from atlas_core.models.registry import OFFLINE_MODELS, TINY_MODELS
from atlas_core.models.placement import parse_max_memory, place
from atlas_core.models.skeleton import skeleton
from atlas_core.profiles import get_profile
from atlas_core.spec import experiment as spec_of
from atlas_core.screening import check_screen
from atlas_core.results import ExperimentRecord, RecordStore, config_hash, now, record_key, unstructure, versions
from atlas_core.runner import Sweeping
from atlas_core.preflight import check_free, check_model_name, check_needed_families, check_writable_dir, locked_message
from atlas_core.run_records import (
    IDENTITY,
    config_diff,
    experiment_config,
    folder_identity,
    stored_identities,
    verified_codes,
)
from atlas_core.tasks import check_targets, load_families, max_positions

if TYPE_CHECKING:
    from atlas_core.distributed import RayConfig


@dataclass
class RunPlan:
    model: str
    experiments: list[str]
    profile: str
    out: Path
    seed: int = 0
    seeds: int = 1
    device: str | None = None
    dtype: str | None = None
    families: list[str] | None = None
    tasks: str | Path | None = None  # a folder of the user's <family>.json files, added to the built-in ones
    progress: bool = True
    report: bool = True
    compute: bool = True  # False: stored results only; a missing or stale one is an error, nothing runs
    ray: "RayConfig | None" = None  # shard sweeps over Ray actors (atlas_core.distributed); None: local
    device_map: str | None = None  # "auto": layers placed across devices by accelerate (models.placement)
    max_memory: str | None = None  # with device_map: "0=20GiB,cpu=60GiB"
    # True: an experiment another process is computing is waited for, then its record read (the pytest plugin,
    # whose xdist workers need the same experiments); False: refused at once, naming the lock (`atlas run`)
    wait: bool = False
    drive: dict[str, str] | None = None  # experiment -> the family it drives (steering, knockout); None: their default
    # head ablation screened by attribution patching, then verified exactly (atlas_core.screening): "atp"; None (the
    # default at every profile, and what baselines are made with): every head ablated exactly
    screen: str | None = None
    log: list[str] = field(default_factory=list)


@dataclass
class _Job:
    """One experiment at one seed: its record key, context, config and the record stored for it, if any."""

    name: str
    seed: int
    key: str
    ctx: Context
    config: dict
    config_hash: str
    stored: ExperimentRecord | None

    @property
    def code_stale(self) -> str | None:
        """Why the stored record's code no longer computes this experiment (None: it does; see codehash)."""
        if self.stored is None:
            return None
        return baseline_stands(self.name, self.stored.provenance.get("code"), verified_codes(self.name))

    @property
    def done(self) -> bool:
        """A stored record of this very config, made by code that computes what this code computes: reused."""
        return self.stored is not None and self.stored.config_hash == self.config_hash and self.code_stale is None


MAX_SEED = 2**63 - 1  # torch.manual_seed takes up to 2**64 - 1, a torch.Generator up to 2**63 - 1


def run_plan(plan: RunPlan) -> RecordStore:
    names = parse_experiments(plan.experiments)
    profile = get_profile(plan.profile)
    check_model_name(plan.model)
    _planted_defaults(plan)
    families = load_families(plan.families, n_items=profile.n_items, user_dir=plan.tasks)
    if plan.seeds < 1:
        raise AtlasError(f"--seeds must be at least 1 (got {plan.seeds})")
    if not (0 <= plan.seed and plan.seed + plan.seeds - 1 <= MAX_SEED):
        raise AtlasError(
            f"--seed {plan.seed}{f' with --seeds {plan.seeds}' if plan.seeds > 1 else ''}: seeds run from 0 "
            f"to {MAX_SEED} (what torch and numpy accept); pass a seed in that range"
        )
    if plan.max_memory is not None and plan.device_map is None:
        raise AtlasError(
            "--max-memory is given without --device-map, the flag it belongs to: add --device-map auto "
            "or drop --max-memory"
        )
    check_needed_families(names, families, plan.drive)
    check_screen(plan.screen, names)
    if plan.device_map is not None and plan.device_map != "auto":
        raise AtlasError(f"--device-map {plan.device_map!r}: only 'auto' is supported")
    if plan.device_map and plan.ray is not None:  # each actor places its replica as the driver places its own
        plan.ray = replace(plan.ray, device_map=plan.device_map, max_memory=plan.max_memory)
    max_memory = parse_max_memory(plan.max_memory)
    _preflight(plan, names)
    dtype = resolve_dtype(plan.dtype, torch.device("cpu") if plan.device_map else resolve_device(plan.device))
    named = plan.model in OFFLINE_MODELS or plan.model in TINY_MODELS or not Path(plan.model).expanduser().exists()
    check_folder_owner(
        plan,
        RecordStore(plan.out),
        {
            "model": plan.model if named else None,
            "profile": profile.name,
            "dtype": str(dtype).removeprefix("torch."),
            "families": sorted(families),
        },
    )
    if not plan.compute and plan.model in OFFLINE_MODELS:  # stored results only: the weights are not needed
        lm = skeleton(plan.model, device=plan.device, dtype=plan.dtype)
    elif plan.device_map:  # loaded on the CPU, then dispatched: accelerate moves each layer where it goes
        lm = load(plan.model, device="cpu", dtype=plan.dtype, progress=plan.progress)
        placed = place(lm.model, plan.device_map, max_memory)
        _say(plan, f"[atlas] {lm.info.name} placed across {', '.join(placed.devices)} (--device-map auto)")
    else:
        lm = load(plan.model, device=plan.device, dtype=plan.dtype, progress=plan.progress)
    if lm.tokenizer is not None:  # a skeleton (stored results only) has none, and runs nothing
        check_targets(families, lm.tokenizer, lm.info.name, max_positions(lm.model))
    store = RecordStore(plan.out)  # created only once the model loaded: a failed load leaves no folder
    check_folder_owner(plan, store, folder_identity(lm.info.to_dict(), profile.name, families))
    sweeping = Sweeping()  # one for the run: every context's runners sweep where it says
    ctx = Context(
        lm,
        families,
        profile,
        seed=plan.seed,
        out_dir=store.root,
        progress=plan.progress,
        drive=dict(plan.drive or {}),
        screen=plan.screen,
        sweeping=sweeping,
    )
    jobs: list[_Job] = []
    for name in names:
        seeds = [plan.seed + i for i in range(plan.seeds)] if spec_of(name).seed_dependent else [plan.seed]
        for seed in seeds:
            key = record_key(name, seed, plan.seed)
            run_ctx = (
                ctx
                if seed == plan.seed
                else Context(
                    lm,
                    families,
                    profile,
                    seed=seed,
                    out_dir=store.root,
                    progress=plan.progress,
                    drive=dict(plan.drive or {}),
                    screen=plan.screen,
                    sweeping=sweeping,
                )
            )
            cfg = experiment_config(name, run_ctx, seed, plan.seed)
            jobs.append(_Job(name, seed, key, run_ctx, cfg, config_hash(cfg), store.load(key)))
    if not plan.compute:
        stale = [job for job in jobs if not job.done]
        if stale:
            raise AtlasError(_stored_only_error(plan, store.root, stale))
    store.root.mkdir(parents=True, exist_ok=True)
    with ExitStack() as held:
        _lock_pending(plan, store, jobs, held)
        pool = None
        if plan.ray is not None and not all(job.done for job in jobs):
            from atlas_core.distributed import RayPool
            from atlas_core.experiment_tasks import ExperimentWorker

            pool = held.enter_context(RayPool(plan.ray, plan.model, lm, worker=ExperimentWorker))
            held.enter_context(sweeping.lent(backend=pool))
            where = sorted({d for devices in pool.placed for d in devices})
            _say(
                plan,
                f"[atlas] sweeps sharded over {plan.ray.workers} Ray worker(s) "
                f"({plan.ray.address or 'a local cluster'}; replicas placed across {', '.join(where)})",
            )
        run_info = {
            "model": lm.info.to_dict(),
            "profile": profile.to_dict(),
            "versions": versions(),
            "families": {n: f.sha256 for n, f in families.items()},
        }

        def start(manifest: dict) -> None:
            manifest.setdefault("created", now())
            manifest.update({**run_info, "updated": now()})
            manifest.setdefault("experiments", {})

        store.update_manifest(start)
        _run_jobs(plan, store, jobs, pool)
    if plan.report:
        from atlas_core.report import write_report

        path = write_report(store.root)
        _say(plan, f"[atlas] report: {path}")
    return store


def _planted_defaults(plan: RunPlan) -> None:
    """A planted model runs on its own task families, and steering and knockout drive its planted ones,
    unless the plan names others."""
    from atlas_core.models.planted_build import run_defaults

    defaults = run_defaults(plan.model)
    if defaults is None:
        return
    if plan.tasks is None:
        plan.tasks = defaults["tasks"]
        if plan.families is None:
            plan.families = defaults["families"]
    if plan.drive is None:
        plan.drive = defaults["drive"]


def _preflight(plan: RunPlan, names: list[str]) -> None:
    """Everything that can fail without the model, checked before it loads: the output folder is a
    writable folder, the device exists, the model source is readable, the stored records parse, and no
    other run holds the lock of an experiment that has no record yet (unless ``plan.wait``)."""
    check_writable_dir(Path(plan.out), "--out")
    resolve_device(plan.device)
    check_model_source(plan.model)
    store = RecordStore(plan.out)
    for name in names:
        seeds = range(plan.seed, plan.seed + plan.seeds) if spec_of(name).seed_dependent else [plan.seed]
        missing = [seed for seed in seeds if store.load(record_key(name, seed, plan.seed)) is None]  # damaged: raises
        if missing and plan.compute and store.root.is_dir() and not plan.wait:
            check_free(store, name, missing)


def check_folder_owner(plan: RunPlan, store: RecordStore, run: dict) -> None:
    """A run folder belongs to one model (name and weights hash), one profile, one dtype and one set of task
    families: a run of another one into it is refused before any work, naming both and the fix."""
    if not store.root.is_dir():
        return
    for where, held in stored_identities(store):
        differ = [k for k in IDENTITY if run.get(k) is not None and held.get(k) is not None and run[k] != held[k]]
        if differ:

            def show(ident: dict) -> str:
                return ", ".join(f"{k} {','.join(ident[k]) if k == 'families' else ident[k]}" for k in differ)

            from atlas_core.runs import run_path

            raise AtlasError(
                f"run folder {store.root} holds another run ({where}: {show(held)}) than this one "
                f"({show(run)}); a run folder holds one model, profile, dtype and set of task families: "
                f"write this run to another --out (e.g. {run_path(plan.model, plan.profile)})"
            )


# -- locks: one per experiment (every seed of it), held from before the first experiment to the end of the run


def _lock_pending(plan: RunPlan, store: RecordStore, jobs: list[_Job], held: ExitStack) -> None:
    """Lock every experiment this run will compute, before any work, one lock per experiment whatever the
    number of seeds. Without ``plan.wait`` a lock held elsewhere fails at once (a second `atlas run` does not
    duplicate hours of work or race the write). With it, the run waits for the holder, then re-reads the
    records: what the holder finished is reused, not recomputed. Locks are taken in name order, so two waiting
    processes never hold one each of two locks they both need."""
    names = sorted({job.name for job in jobs if not job.done})
    waited = False
    for name in names:
        lock = store.lock(name)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            if not plan.wait:
                raise AtlasError(locked_message(store, name, lock)) from None
            _say(plan, f"[atlas] {name}: another process is computing it ({lock.lock_file}); waiting for it")
            lock.acquire()
            waited = True
        held.callback(lock.release)
    if waited:  # what the holders finished meanwhile is read back, as if it had been stored before this run
        for job in jobs:
            if not job.done:
                job.stored = store.load(job.key)


def _run_jobs(plan: RunPlan, store: RecordStore, jobs: list[_Job], pool) -> None:
    """Every job, each after the jobs whose results it reads; with a Ray pool of two or more actors, the
    ``on_worker`` experiments run whole on a reserved actor beside the driver's jobs (``experiment_tasks``)."""
    results: dict[int, dict[str, object]] = {}  # seed -> experiment -> typed result, computed or stored
    by_key = {(job.name, job.seed): job for job in jobs}
    names = list(dict.fromkeys(job.name for job in jobs))

    def needs(job: _Job) -> list[_Job]:
        found = [by_key.get((dep, job.seed)) or by_key.get((dep, plan.seed)) for dep in needed(job.name, names)]
        return [dep for dep in found if dep is not None]

    def keep(job: _Job, result: object) -> None:
        results.setdefault(job.seed, {})[job.name] = result

    def here(job: _Job) -> None:
        keep(job, _run_job(plan, store, job, _visible(results, job.seed, plan.seed)))

    def payload(job: _Job) -> RemoteJob:
        ctx, reads = job.ctx, needed(job.name, names)
        return RemoteJob(
            job.name,
            job.key,
            job.seed,
            ctx.families,
            ctx.profile,
            str(store.root),
            str(_partial(plan, store, job)),
            dict(ctx.drive),
            ctx.screen,
            {n: r for n, r in _visible(results, job.seed, plan.seed).items() if n in reads},
        )

    def fallback(job: _Job) -> tuple[Computed, None]:
        results_in = _visible(results, job.seed, plan.seed)
        return compute(job.ctx, spec_of(job.name), job.key, results_in, _partial(plan, store, job)), None

    def finished(job: _Job, outcome: tuple[Computed, dict[str, bytes] | None]) -> None:
        computed, adapter = outcome
        if adapter is not None:  # a worker on another node: the adapter comes to the run folder with the record
            job.ctx.artifacts.lora_adapter_dir = place_adapter(lora_training.adapter_dir(job.ctx), adapter)
        keep(job, _write(plan, store, job, computed))

    remote = None
    if pool is not None and len(pool.live) >= 2:
        remote = RemoteJobs(pool, payload, fallback, lambda msg: _say(plan, msg))
    on_worker = lambda job: spec_of(job.name).on_worker and not job.done  # noqa: E731
    run_schedule(Schedule(jobs, needs, on_worker), here, finished, remote)


def _visible(results: dict[int, dict[str, object]], seed: int, run_seed: int) -> dict[str, object]:
    """The results a job at ``seed`` may read: its own seed's, over the run seed's (a seed-independent
    experiment runs at the run seed only)."""
    return {**results.get(run_seed, {}), **results.get(seed, {})}


def _run_job(plan: RunPlan, store: RecordStore, job: _Job, results: dict[str, object]) -> object:
    """Run one experiment here with the ``results`` it may read, write its record and add it to the manifest;
    returns its typed result (a reused record's, read back, when it is done already)."""
    if job.done and job.stored is not None:
        _say(plan, f"[atlas] {job.key}: done already (config {job.config_hash}), skipped")
        return load_result(job.name, job.stored.result)
    _say(plan, f"[atlas] {job.key}: running on {job.ctx.lm.info.name} ({job.ctx.profile.name} profile)")
    return _write(plan, store, job, compute(job.ctx, spec_of(job.name), job.key, results, _partial(plan, store, job)))


def _partial(plan: RunPlan, store: RecordStore, job: _Job) -> Path:
    """The experiment's checkpoint folder (``RUN/.partial/``), other configs' debris cleared."""
    partial = store.partial_dir(job.key, job.config_hash)
    store.clear_partial(job.key, keep=partial)
    if partial.is_dir():
        _say(plan, f"[atlas] {job.key}: resuming from the sweeps and training state saved in {partial}")
    return partial


def _write(plan: RunPlan, store: RecordStore, job: _Job, done: Computed) -> object:
    """Write ``done``'s record and its manifest entry, clear its checkpoints; returns its typed result."""
    key, chash, lm = job.key, job.config_hash, job.ctx.lm
    wall = done.run_seconds + done.prior_seconds  # earlier attempts' time, up to their last save
    finished = now()  # one instant: the record and its manifest entry must agree
    prov = {
        "model": lm.info.to_dict(),
        "seed": job.seed,
        "profile": job.ctx.profile.name,
        "versions": versions(),
        "task_sha256": {n: f.sha256 for n, f in job.ctx.families.items()},
        "wall_seconds": round(wall, 3),
        "resumed_after_seconds": round(done.prior_seconds, 3),
        "torch_threads": done.torch_threads,
        "code": fingerprint(job.name),
        "work": done.work,
        "finished": finished,
    }
    if done.worker is not None:
        prov["worker"] = done.worker
    store.write(ExperimentRecord(job.name, job.seed, job.config, chash, prov, unstructure(done.result)))

    def add_entry(manifest: dict) -> None:  # another `atlas run` may be adding its own entries meanwhile
        manifest.setdefault("experiments", {})[key] = {
            "config_hash": chash,
            "wall_seconds": round(wall, 3),
            "finished": finished,
        }
        manifest["updated"] = finished

    store.update_manifest(add_entry)
    store.clear_partial(key)
    _say(
        plan,
        f"[atlas] {key}: finished in {wall:.1f}s{' on ' + done.worker if done.worker else ''} -> {store.path(key)}",
    )
    return done.result


def _stored_only_error(plan: RunPlan, root: Path, stale: list[_Job]) -> str:
    lines = []
    for job in stale:
        if job.stored is None:
            lines.append(f"  {job.key}: no stored result")
        elif job.stored.config_hash == job.config_hash:
            lines.append(f"  {job.key}: the stored result is stale ({job.code_stale})")
        else:
            diff = config_diff(job.stored.config, unstructure(job.config))  # tuples as the stored JSON lists
            lines.append(
                f"  {job.key}: the stored result is stale (its config differs in {', '.join(diff) or 'its hash'})"
            )
    exps = ",".join(dict.fromkeys(job.name for job in stale))
    return (
        f"stored results only, and {len(stale)} of the needed results in {root} cannot be reused:\n"
        + "\n".join(lines)
        + f"\ncompute them with `atlas run --model {plan.model} --profile {plan.profile} "
        f"--experiments {exps} --out {root}`"
    )


def _say(plan: RunPlan, msg: str) -> None:
    plan.log.append(msg)
    if plan.progress:
        print(msg, file=sys.stderr, flush=True)
