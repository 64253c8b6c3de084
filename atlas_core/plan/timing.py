"""Achieved FLOP/s and unplanned memory from measured runs, and predicted times and peak memory.

A calibration run is a run folder (or a committed baseline) of one model at one profile: per experiment, its wall
seconds, and where the run metered it (``provenance.work``) the FLOP it counted, the machine's matmul peak and the
experiment's measured peak memory (``work.memory``: on CPU the process's peak RSS, on CUDA the allocator's peak;
records made before the memory metering have none: unknown). The plan counts the calibration model's FLOP at that
profile (``workload``) and divides: the achieved FLOP/s of each experiment on that machine. A prediction for
another model divides its FLOP by that rate; sharded work (the base model's sweeps) also by the number of workers.
Where the run timed its decoder forwards apart (``work.forward_seconds``), the rate is split in two: the decoder
layers' forward FLOP over those seconds, and the rest of the FLOP (the LM head, training's backward) over the rest
of the wall seconds (which also hold the metrics, hooks and optimizer steps between forwards). The head's share
of the FLOP shrinks as a model grows (its d_model x vocab against the layers' weights), and it runs far below
the layers' rate, so one rate for both overestimates a larger model (on Coder-0.5B -> 1.5B at the ci profile:
1.06-1.24 with one rate, 1.02-1.23 split, README).

Peak memory is calibrated the same way, per experiment, but additively: the plan's bytes (``memory``: weights,
caches, one chunk's activation budget, LoRA state) are what the model's size sets; what the measured peak holds
beyond them, or short of them, does not grow with the model in the same way: the process's runtime (python,
torch, the tokenizer, the task data: about 0.5 GB on CPU, none on CUDA, where the allocator counts tensors
only), the part of the activation budget a chunk leaves unused (the budget is the profile's ``memory_mb`` for
every model, and so, roughly, is its unused part), the weights' pages never touched (safetensors of the run's
dtype are memory-mapped: the input embedding's rows of tokens no prompt holds never become resident), and the
heap an earlier experiment left to the process (a peak is measured from the RSS at the experiment's start).
So ``unplanned = measured peak - planned bytes`` of each calibration experiment (both of the calibration
model), and the predicted peak of another model's experiment is its planned bytes plus that. The error this
leaves is the change of those terms with the model: the untouched embedding rows grow with vocab x d_model, the
carried heap with the earlier experiments' sizes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from atlas_core import AtlasError
from atlas_core.plan.workload import ExperimentWork
from atlas_core.results import RecordStore


@dataclass(frozen=True)
class Measured:
    """One experiment of a recorded run."""

    experiment: str
    wall_seconds: float
    metered_flop: int | None  # provenance.work.flop where the run metered it
    peak_gflops: float | None  # the recording machine's matmul peak, where recorded
    peak_bytes: int | None = None  # provenance.work.memory.peak_bytes: the measured peak; None: unknown
    start_bytes: int | None = None  # the memory at the experiment's start (the same measure)
    memory_device: str | None = None  # where the peak was measured (cpu: process RSS; cuda:N: allocator)
    load: float | None = None  # the machine's 1-minute load average, mean of the experiment's start and end
    forward_seconds: float | None = None  # provenance.work.forward_seconds: inside decoder forwards

    def load_text(self) -> str:
        return f"{self.load:.1f}" if self.load is not None else "-"


@dataclass(frozen=True)
class RecordedRun:
    folder: str
    model: str
    profile: str
    dtype: str
    device: str
    experiments: dict[str, Measured]
    lora_losses: tuple[float, ...] | None  # the LoRA loss curve (steps and confirmation passes)


def read_run(folder: str | Path) -> RecordedRun:
    """A run folder's per-experiment measurements (records read through ``RecordStore``, checked)."""
    root = Path(folder)
    if not (root / "manifest.json").is_file():
        raise AtlasError(
            f"calibration run {root} has no manifest.json: pass a run folder (reports/runs/...) or a "
            "committed baseline (atlas_core/data/baselines/<run>)"
        )
    store = RecordStore(root)
    records = store.records()
    if not records:
        raise AtlasError(f"calibration run {root} holds no records: run `atlas run` into it first")
    out, losses, model = {}, None, None
    for rec in records.values():
        prov = rec.provenance
        model = model or prov["model"]
        w = prov.get("work") or {}
        mem = w.get("memory") or {}  # older records: no memory measured (unknown)
        ends = [v[0] for v in ((w.get("load") or {}).get(k) for k in ("start", "end")) if v]  # older: none
        out[rec.experiment] = Measured(
            rec.experiment,
            float(prov["wall_seconds"]),
            w.get("flop"),
            w.get("peak_gflops"),
            mem.get("peak_bytes"),
            mem.get("start_bytes"),
            mem.get("device"),
            sum(ends) / len(ends) if ends else None,
            w.get("forward_seconds"),
        )
        if rec.experiment == "lora_training":
            losses = tuple(float(v) for v in rec.result["loss_curve"])
    profile = next(iter(records.values())).provenance["profile"]
    assert model is not None  # every record carries its model
    return RecordedRun(str(root), model["name"], profile, model["dtype"], model["device"], out, losses)


@dataclass(frozen=True)
class Rate:
    """The FLOP/s an experiment is predicted at, and where it comes from."""

    flops_per_s: float  # the whole experiment's: its FLOP over its seconds
    source: str
    fraction_of_peak: float | None = None
    # where the calibration timed its decoder forwards apart (``work.forward_seconds``): the decoder layers'
    # forward FLOP over those seconds, and the rest (LM head, training's backward, what runs between forwards)
    # over the rest of the seconds
    forward_flops_per_s: float | None = None
    rest_flops_per_s: float | None = None


def calibrate(planned: dict[str, ExperimentWork], run: RecordedRun) -> dict[str, Rate]:
    """Per experiment of ``run``: its planned FLOP over its measured wall seconds."""
    rates = {}
    for name, m in run.experiments.items():
        if name not in planned or m.wall_seconds <= 0 or planned[name].flop <= 0:
            continue
        w = planned[name]
        achieved = w.flop / m.wall_seconds
        frac = achieved / (m.peak_gflops * 1e9) if m.peak_gflops else None
        fwd = rest = None
        fs = m.forward_seconds
        if fs is not None and 0 < fs < m.wall_seconds and 0 < w.forward_flop < w.flop:
            fwd, rest = w.forward_flop / fs, (w.flop - w.forward_flop) / (m.wall_seconds - fs)
        rates[name] = Rate(achieved, f"{run.model} {run.profile} on {run.device}", frac, fwd, rest)
    return rates


def calibrate_memory(planned: dict[str, int], run: RecordedRun) -> dict[str, int]:
    """Per experiment of ``run`` that measured its peak: the measured peak bytes minus ``planned[name]``, the
    calibration model's planned bytes (the memory the plan does not count; see the module docstring)."""
    return {
        name: m.peak_bytes - planned[name]
        for name, m in run.experiments.items()
        if name in planned and m.peak_bytes is not None
    }


def predict_seconds(work: ExperimentWork, rate: Rate, workers: int) -> float:
    """Seconds of ``work`` at ``rate``: its sharded parts split over ``workers`` replicas, the rest serial. With
    split rates, a part's decoder-forward FLOP at the forward rate and its other FLOP (LM head, backward) at the
    rest's: their shares differ between models (the head's FLOP grows with d_model x vocab, the layers' with
    d_model x width x layers), and so do their rates (a vocab-wide head over few rows, and the metrics and
    softmax beside it, run far below the layers' matmul rate)."""
    total = 0.0
    for p in work.parts:
        if rate.forward_flops_per_s is not None and rate.rest_flops_per_s is not None:
            seconds = p.forward_flop / rate.forward_flops_per_s + (p.flop - p.forward_flop) / rate.rest_flops_per_s
        else:
            seconds = p.flop / rate.flops_per_s
        total += seconds / workers if p.sharded else seconds
    return total


@dataclass(frozen=True)
class Check:
    """A prediction beside a measurement of the same quantity (seconds: ``compare``; bytes: ``compare_memory``)."""

    experiment: str
    predicted: float
    measured: float

    @property
    def ratio(self) -> float:
        return self.predicted / self.measured

    def within(self, tolerance: float) -> bool:
        return abs(self.ratio - 1.0) <= tolerance


def compare(predicted: dict[str, float], measured: RecordedRun) -> list[Check]:
    """Predicted seconds beside each measured experiment's wall seconds."""
    return [
        Check(name, predicted[name], m.wall_seconds)
        for name, m in measured.experiments.items()
        if name in predicted and m.wall_seconds > 0
    ]


def compare_memory(predicted: dict[str, int], measured: RecordedRun) -> list[Check]:
    """Predicted peak bytes beside the experiments of ``measured`` that recorded their peak memory (older records
    did not: left out)."""
    return [
        Check(name, predicted[name], m.peak_bytes)
        for name, m in measured.experiments.items()
        if name in predicted and m.peak_bytes
    ]
