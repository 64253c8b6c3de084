"""``atlas plan``: per experiment of a profile, the work, the memory per replica, the GPUs it takes, the
predicted time and, with a calibration run that measured memory, the predicted peak memory (``timing``), for any
Hugging Face config (built on the meta device). Every input is checked before any work."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from atlas_core import AtlasError
from atlas_core.plan.memory import Memory, dtype_bytes, experiment_memory, gpus_per_replica, parse_size, rows_per_chunk
from atlas_core.plan.models import Shape, resolve, stand_in_tokenizer
from atlas_core.plan.timing import Rate, RecordedRun, calibrate, calibrate_memory, predict_seconds, read_run
from atlas_core.plan.workload import ExperimentWork, PromptSet, prompt_set, workload
from atlas_core.profiles import Profile, get_profile

USABLE = 0.9  # share of a GPU's memory a replica plans to fill: a chosen margin (CUDA context, allocator), not measured


@dataclass(frozen=True)
class PlanRow:
    experiment: str
    variants: int
    tokens: int
    flop: int
    sharded_flop: int  # split over workers (the base model's sweeps)
    memory: Memory
    gpus_per_replica: int
    seconds: float
    rate: Rate
    unplanned_bytes: int | None = None  # the calibration run's measured peak minus its planned bytes (timing)

    @property
    def peak_bytes(self) -> int:
        """The predicted peak: the planned bytes plus the calibration's unplanned bytes (none without one)."""
        return self.memory.total + (self.unplanned_bytes or 0)


@dataclass(frozen=True)
class Plan:
    model: Shape
    profile: str
    dtype: str
    gpu_bytes: int
    usable: float
    workers: int
    chunk: int
    tokenizer: str  # whose tokenizer counted the prompts
    lora_steps: str  # where the LoRA step count comes from
    rows: tuple[PlanRow, ...]
    memory_source: str = "the plan's bytes alone (no calibration run with measured memory)"
    lora_step_count: int | None = None  # the LoRA steps the plan counted
    calibration: RecordedRun | None = None  # the run the rates (and unplanned bytes) came from

    @property
    def seconds(self) -> float:
        """The run's predicted wall time. One worker: the experiments one after another. Two or more (``atlas run
        --ray``, ``atlas_core.experiment_tasks``): the ``on_worker`` experiments (LoRA training) run on a worker of
        their own beside the experiments that do not read them, and those that do (transfer, adapter ablation) wait
        for them. The sweeps beside LoRA training then share one worker fewer than the rows count: a lower bound
        by that much."""
        if self.workers < 2:
            return sum(r.seconds for r in self.rows)
        from atlas_core.spec import experiment as spec_of

        names = {r.experiment for r in self.rows}
        away = {n for n in names if spec_of(n).on_worker}
        waits = set(away)
        for r in self.rows:  # run order: an experiment's inputs come before it
            spec = spec_of(r.experiment)
            if r.experiment not in away and waits & set(spec.requires + spec.reuses):
                waits.add(r.experiment)
        beside = sum(r.seconds for r in self.rows if r.experiment not in waits)
        after = sum(r.seconds for r in self.rows if r.experiment in waits - away)
        return max(beside, sum(r.seconds for r in self.rows if r.experiment in away)) + after


def _check(
    profile: str,
    gpu_memory: str,
    workers: int,
    flops_per_s: float | None,
    chunk: int | None,
    dtype: str,
    calibration: str | Path | None,
) -> tuple[Profile, int]:
    prof = get_profile(profile)
    gpu = parse_size(gpu_memory)
    dtype_bytes(dtype)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise AtlasError(f"--workers must be a whole number >= 1 (got {workers!r}): one worker is one model replica")
    if flops_per_s is not None and not flops_per_s > 0:
        raise AtlasError(
            f"--flops-per-s must be positive (got {flops_per_s!r}), e.g. 4e14; or leave it out to use "
            "the calibration run's rates or this machine's measured matmul peak"
        )
    if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1):
        raise AtlasError(f"--chunk must be a whole number of rows >= 1 (got {chunk!r})")
    if calibration is not None and not Path(calibration).is_dir():
        raise AtlasError(f"calibration run {calibration} is not a folder: pass a run folder or a committed baseline")
    return prof, gpu


def _rates(
    works: dict[str, ExperimentWork],
    flops_per_s: float | None,
    run: RecordedRun | None,
    cal_works: dict[str, ExperimentWork] | None,
    dtype: str,
) -> dict[str, Rate]:
    if flops_per_s is not None:
        return {name: Rate(flops_per_s, "--flops-per-s") for name in works}
    if run is not None and cal_works is not None:
        rates = calibrate(cal_works, run)
        if not rates:
            raise AtlasError(
                f"calibration run {run.folder} has no experiment this plan counts: pass a run of the "
                "profile's experiments, or --flops-per-s"
            )
        # an experiment the run lacks: the run's whole achieved rate (its planned FLOP over its seconds)
        flop = sum(cal_works[n].flop for n in rates)
        seconds = sum(run.experiments[n].wall_seconds for n in rates)
        whole = Rate(flop / seconds, f"{run.model} {run.profile} on {run.device}, whole run (experiment not in it)")
        return {name: rates.get(name, whole) for name in works}
    import torch

    from atlas_core.work import matmul_peak

    peak = matmul_peak("cpu", getattr(torch, dtype))["gflops"] * 1e9
    return {name: Rate(peak, "this machine's matmul peak (cpu): a lower bound on time", 1.0) for name in works}


def make_plan(
    model: str,
    profile: str = "full",
    *,
    gpu_memory: str = "141GB",
    workers: int = 1,
    flops_per_s: float | None = None,
    chunk: int | None = None,
    dtype: str = "bfloat16",
    calibration: str | Path | None = None,
    tokenizer: str | None = None,
    families: list[str] | None = None,
    usable: float = USABLE,
) -> Plan:
    """The plan of ``model`` at ``profile``. Rates: ``flops_per_s`` for every experiment, else each experiment's
    achieved rate in the ``calibration`` run, else this machine's measured matmul peak."""
    prof, gpu = _check(profile, gpu_memory, workers, flops_per_s, chunk, dtype, calibration)
    run = read_run(calibration) if calibration is not None else None
    pm = resolve(model)
    tok, tok_name = (pm.tokenizer, model) if pm.tokenizer is not None else stand_in_tokenizer(tokenizer)
    prompts = prompt_set(tok, prof, families)
    same_profile = run is not None and run.profile == prof.name and run.lora_losses is not None
    losses = run.lora_losses if same_profile and run is not None else None
    steps_from = (
        f"the calibration run's loss curve ({len(losses)} steps)"
        if losses is not None
        else f"the profile's maximum ({prof.lora_max_steps} steps)"
    )
    works = workload(pm.shape.flop, pm.shape.n_layers, pm.shape.n_heads, prompts, prof, losses)
    cal_works, unplanned, memory_source = None, {}, Plan.memory_source
    if run is not None:
        cal = resolve(run.model)
        cal_prof = get_profile(run.profile)
        cal_tok = cal.tokenizer if cal.tokenizer is not None else stand_in_tokenizer(tokenizer)[0]
        cal_prompts = prompt_set(cal_tok, cal_prof, families)
        if flops_per_s is None:
            cal_works = workload(
                cal.shape.flop, cal.shape.n_layers, cal.shape.n_heads, cal_prompts, cal_prof, run.lora_losses
            )
        # the calibration model's planned bytes, at the chunk its runner used, against its measured peaks
        cal_chunk = rows_per_chunk(cal.model, cal.shape, max(cal_prompts.all), cal_prof.memory_mb)
        cal_planned = {
            name: experiment_memory(
                name, cal.model, cal.shape, cal_prompts, run.dtype, cal_chunk, cal_prof.ablation_modes
            ).total
            for name in run.experiments
        }
        unplanned = calibrate_memory(cal_planned, run)
        if unplanned:
            devices = sorted({str(m.memory_device) for m in run.experiments.values() if m.peak_bytes is not None})
            memory_source = (
                f"planned bytes + what {run.model} {run.profile} measured beyond its own planned bytes "
                f"(peak {'process RSS' if devices == ['cpu'] else 'memory'} on {', '.join(devices)})"
            )
    rates = _rates(works, flops_per_s, run, cal_works, dtype)
    rows_chunk = chunk or rows_per_chunk(pm.model, pm.shape, max(prompts.all), prof.memory_mb)
    rows = []
    for name, w in works.items():
        mem = experiment_memory(name, pm.model, pm.shape, prompts, dtype, rows_chunk, prof.ablation_modes)
        rows.append(
            PlanRow(
                name,
                w.variants,
                w.tokens,
                w.flop,
                w.sharded_flop,
                mem,
                gpus_per_replica(mem.total, gpu, usable),
                predict_seconds(w, rates[name], workers),
                rates[name],
                unplanned.get(name),
            )
        )
    return Plan(
        pm.shape,
        prof.name,
        dtype,
        gpu,
        usable,
        workers,
        rows_chunk,
        tok_name,
        steps_from,
        tuple(rows),
        memory_source,
        prof.lora_max_steps if losses is None else len(losses),
        run,
    )


def lora_seconds_at(plan: Plan, model: str, losses: tuple[float, ...], tokenizer: str | None = None) -> float | None:
    """LoRA training's predicted seconds had the plan counted the recorded loss curve ``losses`` (its steps and
    confirmation passes) instead of its own, at the same rate: for a check against a run that trained another
    number of steps (when training stops is a measured value, not a shape: a plan takes the calibration's).
    None when the plan has no LoRA training row."""
    row = next((r for r in plan.rows if r.experiment == "lora_training"), None)
    if row is None:
        return None
    pm = resolve(model)
    tok = pm.tokenizer if pm.tokenizer is not None else stand_in_tokenizer(tokenizer)[0]
    prof = get_profile(plan.profile)
    s = pm.shape
    work = workload(s.flop, s.n_layers, s.n_heads, prompt_set(tok, prof), prof, losses)["lora_training"]
    return predict_seconds(work, row.rate, plan.workers)


def planned_work(
    model: str, profile: str, prompts_from: PromptSet | None = None, lora_losses: tuple[float, ...] | None = None
) -> dict[str, ExperimentWork]:
    """The work alone (no memory, no rates), for checks against metered runs."""
    prof = get_profile(profile)
    pm = resolve(model)
    if prompts_from is None:
        tok = pm.tokenizer if pm.tokenizer is not None else stand_in_tokenizer(None)[0]
        prompts_from = prompt_set(tok, prof)
    return workload(pm.shape.flop, pm.shape.n_layers, pm.shape.n_heads, prompts_from, prof, lora_losses)
