"""What every experiment receives: the loaded model, the task families, the profile, the seed, and a
shared runner over all family prompts (so the clean pass runs once per run, not once per experiment)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from atlas_core.metrics import Estimate, bootstrap
from atlas_core.models import LoadedModel
from atlas_core.profiles import Profile
from atlas_core.runner import Runner
from atlas_core.tasks import TaskFamily, target_token_id


@dataclass
class Context:
    lm: LoadedModel
    families: dict[str, TaskFamily]
    profile: Profile
    seed: int = 0
    out_dir: Path | None = None  # where artifacts (the LoRA adapter) are saved
    progress: bool = False
    shared: dict = field(default_factory=dict)  # typed results (by experiment) and artifacts handed on in a run
    drive: dict = field(default_factory=dict)  # experiment -> the task family it drives (steering, knockout)
    # head ablation's screen (``atlas_core.screening``: "atp"); None, the default at every profile: exhaustive
    screen: str | None = None

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
        return Runner(self.lm.model, self.lm.tokenizer, self.prompts, memory_mb=self.profile.memory_mb,
                      seed=self.seed, progress=self.progress)

    def estimate(self, values) -> Estimate:
        return bootstrap(np.asarray(values), n_boot=self.profile.n_boot, seed=self.seed)

    def per_family(self, matrix: np.ndarray) -> dict[str, np.ndarray]:
        """Split the prompt axis (last) of a [..., P] array by family."""
        return {name: matrix[..., sl] for name, sl in self.family_slices.items()}
