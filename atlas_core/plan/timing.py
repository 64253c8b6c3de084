"""Achieved FLOP/s from measured runs, and predicted times.

A calibration run is a run folder (or a committed baseline) of one model at one profile: per experiment, its wall
seconds, and where the run metered it (``provenance.work``) the FLOP it counted and the machine's matmul peak. The
plan counts the calibration model's FLOP at that profile (``workload``) and divides: the achieved FLOP/s of each
experiment on that machine. A prediction for another model divides its FLOP by that rate; sharded work (the
base model's sweeps) also by the number of workers.
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
        out[rec.experiment] = Measured(rec.experiment, float(prov["wall_seconds"]), w.get("flop"), w.get("peak_gflops"))
        if rec.experiment == "lora_training":
            losses = tuple(float(v) for v in rec.result["loss_curve"])
    profile = next(iter(records.values())).provenance["profile"]
    assert model is not None  # every record carries its model
    return RecordedRun(str(root), model["name"], profile, model["dtype"], model["device"], out, losses)


@dataclass(frozen=True)
class Rate:
    """The FLOP/s an experiment is predicted at, and where it comes from."""

    flops_per_s: float
    source: str
    fraction_of_peak: float | None = None


def calibrate(planned: dict[str, ExperimentWork], run: RecordedRun) -> dict[str, Rate]:
    """Per experiment of ``run``: its planned FLOP over its measured wall seconds."""
    rates = {}
    for name, m in run.experiments.items():
        if name not in planned or m.wall_seconds <= 0 or planned[name].flop <= 0:
            continue
        achieved = planned[name].flop / m.wall_seconds
        frac = achieved / (m.peak_gflops * 1e9) if m.peak_gflops else None
        rates[name] = Rate(achieved, f"{run.model} {run.profile} on {run.device}", frac)
    return rates


def predict_seconds(work: ExperimentWork, rate: Rate, workers: int) -> float:
    """Seconds of ``work`` at ``rate``: its sharded part split over ``workers`` replicas, the rest serial."""
    serial = work.flop - work.sharded_flop
    return (serial + work.sharded_flop / workers) / rate.flops_per_s


@dataclass(frozen=True)
class Check:
    """A prediction beside a measurement."""

    experiment: str
    predicted_s: float
    measured_s: float

    @property
    def ratio(self) -> float:
        return self.predicted_s / self.measured_s

    def within(self, tolerance: float) -> bool:
        return abs(self.ratio - 1.0) <= tolerance


def compare(predicted: dict[str, float], measured: RecordedRun) -> list[Check]:
    return [
        Check(name, predicted[name], m.wall_seconds)
        for name, m in measured.experiments.items()
        if name in predicted and m.wall_seconds > 0
    ]
