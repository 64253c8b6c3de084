"""What every experiment receives: the loaded model, the task families, the profile, the seed, a shared
runner over all family prompts (so the clean pass runs once per run, not once per experiment), the results
of the experiments it declares it reads, and the run's artifacts.

Who owns what: the orchestrator owns results. An experiment returns its result; ``run_experiment`` hands an
experiment only the results its spec's ``requires`` and ``reuses`` name, as ``ctx.results``, and never
keeps what the experiment returns. The state that is not a result lives in :class:`Artifacts`, one field
per artifact, each written by one owner named beside it.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from atlas_core.metrics import Estimate, bootstrap
from atlas_core.models import LoadedModel
from atlas_core.profiles import Profile
from atlas_core.runner import Runner, Sweeping
from atlas_core.tasks import TaskFamily, target_token_id


@dataclass
class DirectionCache:
    """The skill directions steering and knockout share, and the runners they come from (``directions``)."""

    items: dict[str, Runner] = field(default_factory=dict)  # family -> runner over its item prompts
    contrast: dict[str, Runner] = field(default_factory=dict)  # family -> runner over its contrast prompts
    vectors: dict[tuple[str, int], torch.Tensor] = field(default_factory=dict)  # (family, layer) -> [d]


@dataclass
class Artifacts:
    """A context's shared state that is not a result, one owner per field."""

    # lora_training.run: the folder of the adapter trained in this run (transfer and adapter ablation read it)
    lora_adapter_dir: Path | None = None
    # lora_training.adapter_dir, through Context.temporary_dir: where adapters go when the run has no out dir
    lora_tmp: Path | None = None
    # directions: the item and contrast runners and the skill directions steering and knockout share
    directions: DirectionCache | None = None


@dataclass
class Context:
    lm: LoadedModel
    families: dict[str, TaskFamily]
    profile: Profile
    seed: int = 0
    out_dir: Path | None = None  # where artifacts (the LoRA adapter) are saved
    progress: bool = False
    # the typed results of the experiments this one declares it reads (set by ``run_experiment``)
    results: dict[str, Any] = field(default_factory=dict)
    artifacts: Artifacts = field(default_factory=Artifacts)
    # where the sweeps of every runner built from this context run, save and are observed (one per run)
    sweeping: Sweeping = field(default_factory=Sweeping)
    drive: dict = field(default_factory=dict)  # experiment -> the task family it drives (steering, knockout)
    # head ablation's screen (``atlas_core.screening``: "atp"); None, the default at every profile: exhaustive
    screen: str | None = None

    def temporary_dir(self, prefix: str) -> Path:
        """A fresh temporary folder that lives as long as this context (removed when it is collected, or at
        exit): artifacts a run without an out dir still hands from one experiment to the next."""
        path = Path(tempfile.mkdtemp(prefix=prefix))
        weakref.finalize(self, shutil.rmtree, path, True)
        return path

    def driven_family(self, experiment: str, default: str) -> str:
        """The family ``experiment`` drives in this run: the run's choice, else the experiment's default."""
        return self.drive.get(experiment, default)

    @cached_property
    def prompts(self) -> list[str]:
        return [it.prompt for fam in self.families.values() for it in fam.items]

    @cached_property
    def family_slices(self) -> dict[str, slice]:
        out, i = {}, 0
        for name, fam in self.families.items():
            out[name] = slice(i, i + len(fam.items))
            i += len(fam.items)
        return out

    @cached_property
    def targets(self) -> list[int]:
        return [target_token_id(self.lm.tokenizer, it.target) for fam in self.families.values() for it in fam.items]

    @cached_property
    def runner(self) -> Runner:
        return Runner(
            self.lm.model,
            self.lm.tokenizer,
            self.prompts,
            memory_mb=self.profile.memory_mb,
            seed=self.seed,
            progress=self.progress,
            sweeping=self.sweeping,
        )

    def estimate(self, values) -> Estimate:
        return bootstrap(np.asarray(values), n_boot=self.profile.n_boot, seed=self.seed)

    def per_family(self, matrix: np.ndarray) -> dict[str, np.ndarray]:
        """Split the prompt axis (last) of a [..., P] array by family."""
        return {name: matrix[..., sl] for name, sl in self.family_slices.items()}
