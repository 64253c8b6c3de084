"""The golden check: a small fixed slice of every experiment on a real model, recomputed and compared
value by value with a committed record.

The slice is the nine experiments (and the clean pass) run through their own ``run`` functions at
``GOLDEN_PROFILE``: one prompt per task family (so each family's mean is that prompt's value), two head
layers, two steering strengths, every ablation mode, four seeded LoRA steps. While it runs, every
``Runner.sweep`` is recorded per variant and prompt (KL, target probability, argmax), and the LoRA loss
curve and each result's numbers are kept, so a changed definition shows up as the exact variant and
prompt whose value moved.

Rewrite the record (``atlas golden write``) only for a deliberate change of an experiment's definition,
with the reason in the commit: the record is what "the experiments still compute what they computed"
means. Each experiment's entry also lists the code fingerprints (:mod:`atlas_core.codehash`) known to
reproduce it; the stale-baseline rule reads them (:func:`atlas_core.codehash.baseline_stands`).
"""

from __future__ import annotations

import json
import math
import tempfile
from contextlib import contextmanager
from functools import lru_cache
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np

from atlas_core import AtlasError
from atlas_core.codehash import UNRECORDED, fingerprint
from atlas_core.data import GOLDEN_DIR
from atlas_core.experiments.schema import added, load_result, migrate
from atlas_core.profiles import Profile
from atlas_core.spec import experiment

if TYPE_CHECKING:
    from atlas_core.runner import Runner, Sweeping, SweepStats

GOLDEN_MODEL = "qwen2.5-coder-0.5b-instruct"
FORMAT = 1

GOLDEN_PROFILE = Profile(
    "golden",
    n_items=1,
    head_layers=2,
    ablation_modes=("zero", "mean", "resample"),
    steer_strengths=(-2.0, 0.0, 2.0),
    steer_layers=2,
    lora_items=1,
    lora_max_steps=4,
    lora_target_loss=0.01,
    n_boot=50,
    memory_mb=512,
    timing_repeats=1,
)

# Tolerances (fp32 on a CPU): each experiment's relative one is declared in its spec (``golden_rel``, set from
# the measurement in ``atlas_core.spec``), plus an absolute floor below which two fp32 forwards of different
# batch shapes legitimately differ (KL of a near-identity variant is ~1e-7 nats, and its relative error is
# meaningless).
ABS = {"kl": 1e-6, "target_prob": 1e-6}
# Each experiment declares its own relative tolerance and absolute floor on result fields
# (``ExperimentSpec.golden_rel``/``golden_abs``, with the measurement that sets them): LoRA-derived values
# (the loss curve, transfer, adapter ablation) go through four optimizer steps whose fp32 rounding compounds.
# Result fields that are measurements of time or paths, not of the model.
NOT_COMPARED = {"seconds", "speedup", "train_seconds", "adapter_dir", "notes", "load_seconds"}


@dataclass
class SweepRecord:
    """One ``Runner.sweep`` call: its variants, prompts and per (variant, prompt) values."""

    variants: list[str]
    prompts: list[str]
    kl: list[list[float]]
    argmax: list[list[int]]
    target_prob: list[list[float]] | None = None


@dataclass
class ExperimentSlice:
    sweeps: list[SweepRecord]
    result: dict
    codes: list[str] = field(default_factory=list)


@contextmanager
def recording_sweeps(sweeping: Sweeping) -> Iterator[list[SweepRecord]]:
    """Record every sweep of the runners that share ``sweeping`` inside the block (an observer lent to it)."""
    log: list[SweepRecord] = []

    def record(runner: Runner, variants, stats: SweepStats) -> None:
        log.append(
            SweepRecord(
                variants=list(stats.names),
                prompts=list(runner.prompts),
                kl=_rounded(stats.kl),
                argmax=stats.argmax.astype(int).tolist(),
                target_prob=None if stats.target_prob is None else _rounded(stats.target_prob),
            )
        )

    with sweeping.lent(observer=record):
        yield log


def _rounded(a) -> list:
    return [[float(f"{v:.9g}") for v in row] for row in np.asarray(a, dtype=np.float64)]


def compute(
    lm, experiments: list[str] | None = None, progress: bool = False, shared: dict | None = None
) -> dict[str, ExperimentSlice]:
    """Run the golden slice of ``experiments`` (default: all, in order) on a loaded model. ``shared``: the
    stored results (JSON form) of experiments not rerun, handed on as a run hands on stored records (head
    ablation and efficiency read the layer ablation's)."""
    from atlas_core.experiments import parse_experiments, run_experiment
    from atlas_core.experiments.context import Context
    from atlas_core.spec import experiment as spec_of
    from atlas_core.results import unstructure
    from atlas_core.tasks import load_families

    names = parse_experiments(experiments or "all")
    families = load_families(n_items=GOLDEN_PROFILE.n_items)
    out: dict[str, ExperimentSlice] = {}
    with tempfile.TemporaryDirectory(prefix="atlas-golden-") as tmp:
        ctx = Context(lm, families, GOLDEN_PROFILE, seed=0, out_dir=Path(tmp), progress=progress)
        results = {n: load_result(n, r) for n, r in (shared or {}).items()}
        for name in names:
            with recording_sweeps(ctx.sweeping) as log:
                results[name] = run_experiment(spec_of(name), ctx, results)
            out[name] = ExperimentSlice(sweeps=log, result=unstructure(results[name]), codes=[fingerprint(name)])
    return out


# ----------------------------------------------------------------------------------------------
# the record


def golden_path(model: str = GOLDEN_MODEL, root: Path | None = None) -> Path:
    return (root or GOLDEN_DIR) / f"{model}.json"


def read(path: Path) -> dict[str, ExperimentSlice]:
    """The record at ``path`` (cached while the file is unchanged)."""
    if not path.is_file():
        raise AtlasError(f"no golden record at {path}; write one with `atlas golden write`")
    stat = path.stat()
    return {
        name: ExperimentSlice(s.sweeps, s.result, list(s.codes))
        for name, s in _read(path, stat.st_mtime_ns, stat.st_size).items()
    }


def golden_schema() -> dict:
    """The one declaration of the golden record's shape (JSON Schema): per experiment its sweeps (variants,
    prompts and per variant x prompt values), its result and the code fingerprints that reproduce it."""
    from atlas_core.validation import OBJECT, STRING

    def grid(cell):
        return {"type": "array", "items": {"type": "array", "items": cell}}

    sweep = {
        "type": "object",
        "additionalProperties": False,
        "required": ["variants", "prompts", "kl", "argmax"],
        "properties": {
            "variants": {"type": "array", "items": STRING},
            "prompts": {"type": "array", "items": STRING},
            "kl": grid({"type": "number"}),
            "argmax": grid({"type": "integer"}),
            "target_prob": {**grid({"type": "number"}), "type": ["array", "null"]},
        },
    }
    entry = {
        "type": "object",
        "additionalProperties": False,
        "required": ["sweeps", "result", "codes"],
        "properties": {
            "sweeps": {"type": "array", "items": sweep},
            "result": OBJECT,
            "codes": {"type": "array", "items": STRING},
        },
    }
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["format", "experiments"],
        "properties": {
            "format": {"const": FORMAT},
            "model": STRING,
            "profile": OBJECT,
            "experiments": {"type": "object", "additionalProperties": entry},
        },
    }


FIX = "restore it from git (`git checkout -- atlas_core/data/golden`) or rewrite it with `atlas golden write`"


@lru_cache(maxsize=4)
def _read(path: Path, mtime_ns: int, size: int) -> dict[str, ExperimentSlice]:
    from atlas_core.validation import check

    try:
        data = json.loads(path.read_text())
    except (ValueError, OSError) as exc:
        raise AtlasError(f"golden record {path} is unreadable ({exc}); {FIX}") from None
    check(data, golden_schema, f"golden record {path}", FIX)
    return {
        name: ExperimentSlice(
            sweeps=[SweepRecord(**s) for s in e["sweeps"]], result=e["result"], codes=list(e["codes"])
        )
        for name, e in data["experiments"].items()
    }


def write(path: Path, slices: dict[str, ExperimentSlice], model: str) -> Path:
    from atlas_core.results import atomic_write_text, unstructure

    data = {
        "format": FORMAT,
        "model": model,
        "profile": GOLDEN_PROFILE.to_dict(),
        "experiments": {name: unstructure(s) for name, s in slices.items()},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, json.dumps(data, indent=1, sort_keys=False) + "\n")


def merge_codes(old: dict[str, ExperimentSlice], new: dict[str, ExperimentSlice]) -> dict[str, ExperimentSlice]:
    """The new record. An experiment whose values still match the old record keeps the old values (the
    reference does not drift by rounding from write to write) and its list of code fingerprints, plus the
    current one: code that reproduces the same numbers is the same experiment, so baselines made by any of
    it still stand. One whose values moved starts afresh with the current code alone."""
    out = {}
    for name, s in new.items():
        prior = old.get(name)
        if prior is not None and not compare_slice(name, prior, s):
            s = ExperimentSlice(prior.sweeps, migrate(name, prior.result), list(dict.fromkeys(prior.codes + s.codes)))
        out[name] = s
    return out


# ----------------------------------------------------------------------------------------------
# comparison


@dataclass(frozen=True)
class Mismatch:
    experiment: str
    where: str  # "sweep 2 'resid/zero/L3' prompt 'The capital of...' kl", or a result field path
    expected: object
    got: object
    excess: float = math.inf  # |difference| in units of its tolerance (> 1); inf where equality is required

    def __str__(self) -> str:
        return f"{self.experiment}: {self.where}: golden {self.expected!r}, now {self.got!r}"


def excess(a: float, b: float, rel: float, abs_: float) -> float:
    """|a - b| in units of the tolerance ``rel * max(|a|, |b|) + abs_``: within it at <= 1. The measure that
    sets the tolerances (thread counts, ``fixtures/golden/thread_deviation.py``) and that shows a mutation far
    outside them."""
    if math.isnan(a) or math.isnan(b):
        return 0.0 if math.isnan(a) and math.isnan(b) else math.inf
    return abs(a - b) / (rel * max(abs(a), abs(b)) + abs_)


def compare_slice(name: str, want: ExperimentSlice, got: ExperimentSlice, above: float = 1.0) -> list[Mismatch]:
    """Every value of ``got`` more than ``above`` tolerances from ``want`` (1: the check's mismatches; 0:
    every value that differs at all, to measure how close a computation comes)."""
    spec = experiment(name)
    rel = spec.golden_rel
    out: list[Mismatch] = []
    if len(want.sweeps) != len(got.sweeps):
        out.append(Mismatch(name, "number of sweeps", len(want.sweeps), len(got.sweeps)))
    for si, (w, g) in enumerate(zip(want.sweeps, got.sweeps)):
        if w.variants != g.variants or w.prompts != g.prompts:
            out.append(
                Mismatch(
                    name,
                    f"sweep {si} variants/prompts",
                    (w.variants[:4], w.prompts[:2]),
                    (g.variants[:4], g.prompts[:2]),
                )
            )
            continue
        for metric in ("kl", "target_prob", "argmax"):
            wm, gm = getattr(w, metric), getattr(g, metric)
            if (wm is None) != (gm is None):
                out.append(Mismatch(name, f"sweep {si} {metric} recorded", wm is not None, gm is not None))
                continue
            if wm is None:
                continue
            for vi, variant in enumerate(w.variants):
                for pi, prompt in enumerate(w.prompts):
                    a, b = wm[vi][pi], gm[vi][pi]
                    x = (0.0 if a == b else math.inf) if metric == "argmax" else excess(a, b, rel, ABS[metric])
                    if x > above:
                        out.append(
                            Mismatch(name, f"sweep {si} variant {variant!r} prompt {prompt!r} {metric}", a, b, x)
                        )
    # results compare in the current schema: fields a later schema removed are not expected of new code, and
    # fields it added (None in a record that predates them) are not expected of the record
    a, b = migrate(name, want.result), migrate(name, got.result)
    for f in added(name):
        if a.get(f) is None:
            a.pop(f, None), b.pop(f, None)
    out += _compare_tree(name, "result", a, b, rel, spec.golden_abs, above)
    return out


def _compare_tree(name: str, path: str, a, b, rel: float, abs_: float, above: float) -> list[Mismatch]:
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [Mismatch(name, f"{path} keys", sorted(a), sorted(b))]
        return [
            m
            for k in a
            if k not in NOT_COMPARED
            for m in _compare_tree(name, f"{path}.{k}", a[k], b[k], rel, abs_, above)
        ]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [Mismatch(name, f"{path} length", len(a), len(b))]
        return [
            m for i, (x, y) in enumerate(zip(a, b)) for m in _compare_tree(name, f"{path}[{i}]", x, y, rel, abs_, above)
        ]
    if isinstance(a, float) or isinstance(b, float):
        x = math.inf if a is None or b is None else excess(float(a), float(b), rel, abs_)
        return [Mismatch(name, path, a, b, x)] if x > above else []
    return [] if a == b else [Mismatch(name, path, a, b)]


def check(lm, path: Path | None = None, experiments: list[str] | None = None, progress: bool = False) -> list[Mismatch]:
    """Recompute the slice of ``experiments`` (default: every one in the record) and compare it with the
    record; returns every mismatch (empty: the experiments compute what they computed)."""
    want = read(path or golden_path(lm.info.name))
    names = experiments or list(want)
    missing = [n for n in names if n not in want]
    if missing:
        raise AtlasError(f"the golden record has no {', '.join(missing)}; rewrite it with `atlas golden write`")
    got = compute(lm, names, progress=progress, shared={n: s.result for n, s in want.items() if n not in names})
    return [m for n in names for m in compare_slice(n, want[n], got[n])]


def unverified_code(path: Path | None = None, model: str = GOLDEN_MODEL) -> dict[str, str]:
    """Experiments whose current code fingerprint the record does not list: experiment -> fingerprint."""
    want = read(path or golden_path(model))
    return {n: fingerprint(n) for n, s in want.items() if fingerprint(n) not in s.codes}


__all__ = [
    "GOLDEN_MODEL",
    "GOLDEN_PROFILE",
    "UNRECORDED",
    "Mismatch",
    "check",
    "compute",
    "compare_slice",
    "excess",
    "golden_path",
    "merge_codes",
    "read",
    "recording_sweeps",
    "unverified_code",
    "write",
]
