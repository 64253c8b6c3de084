"""The nine experiments of the study (plus the clean baseline), one module each.

Each module defines ``NAME``, ``SEED_DEPENDENT`` (repeated by ``--seeds``), ``REQUIRES`` (experiments
whose artifacts it reuses within a run, computed on demand if absent) and ``run(ctx) -> Result``, a
dataclass that serialises to JSON.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from atlas_core import AtlasError

EXPERIMENT_MODULES = {
    "clean": "clean",
    "layer_ablation": "layer_ablation",
    "mlp_ablation": "mlp_ablation",
    "head_ablation": "head_ablation",
    "steering": "steering",
    "knockout": "knockout",
    "lora_training": "lora_training",
    "transfer": "transfer",
    "adapter_ablation": "adapter_ablation",
    "efficiency": "efficiency",
}
EXPERIMENTS = tuple(EXPERIMENT_MODULES)


def parse_experiments(spec: str | list[str] | tuple[str, ...]) -> list[str]:
    """``all`` or a comma list; unknown names are an error that lists the known ones."""
    names = list(EXPERIMENTS) if spec in ("all", ["all"], ("all",)) else (
        [s.strip() for s in spec.split(",") if s.strip()] if isinstance(spec, str) else list(spec))
    if not names:
        raise AtlasError(f"no experiments selected; choose from: all, {', '.join(EXPERIMENTS)}")
    unknown = [n for n in names if n not in EXPERIMENT_MODULES]
    if unknown:
        raise AtlasError(f"unknown experiment(s) {', '.join(unknown)}; choose from: all, {', '.join(EXPERIMENTS)}")
    return [n for n in EXPERIMENTS if n in names]  # canonical order: artifacts flow forward


def module(name: str) -> ModuleType:
    parse_experiments([name])
    return importlib.import_module(f"atlas_core.experiments.{EXPERIMENT_MODULES[name]}")
