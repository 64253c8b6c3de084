"""The committed baseline runs as ``docs/REPLICATION.md`` reads them: each run with its finding
statistics and the study model of its architecture and depth (its role), in column order, and the
(small, large) pair the verdicts compare."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from atlas_core.baselines import baseline_runs
from atlas_core.profiles import PROFILES
from atlas_core.report import cells
from atlas_core.report.compare_page import model_size
from atlas_core.report import sections as S
from atlas_core.report.data import ReportedRun
from atlas_core.report.study import ROLES, Study
from atlas_core.verdicts import Stat


@dataclass(eq=False)
class Baseline:
    """One committed run with its finding statistics and the study model it stands beside (if any)."""

    run: ReportedRun
    card: dict
    role: str | None = None

    @property
    def stats(self) -> dict[str, Stat]:
        return self.run.stats

    @property
    def label(self) -> str:
        return f"{self.run.name} ({self.card['profile']})"

    @property
    def n_layers(self) -> int:
        return int(self.run.n_layers or 0)

    def has(self, key: str) -> bool:
        return self.run.has(key)

    def result(self, key: str) -> Any:
        """Record ``key``'s typed result."""
        return self.run.typed(key)

    def layer(self, layer: int | None) -> str:
        return cells.layer(layer, self.n_layers)

    def stat(self, name: str, kind: str = "auto") -> str:
        return cells.est(self.stats.get(name), kind)

    def n_items(self, key: str) -> Any:
        return self.run.records[key].config.get("n_items")

    def prompts_per_family(self) -> str:
        """``12``, ``3–12`` or ``all``: the prompts per family its experiments ran on."""
        values = {self.n_items(k) for k, rec in self.run.records.items() if k == rec.experiment}
        nums = sorted(v for v in values if isinstance(v, int))
        text = (str(nums[0]) if len(nums) == 1 else f"{nums[0]}–{nums[-1]}") if nums else ""
        return ", ".join(t for t in (text, "all" if None in values else "") if t) or cells.NONE


@dataclass
class Doc:
    """What every part of the document reads: the study, the runs (in column order) and the pair."""

    study: Study
    baselines: list[Baseline]
    pair: tuple[Baseline, Baseline] | None = None


def load_baselines(baselines_dir: str | Path, study: Study) -> list[Baseline]:
    """The baseline runs, the study's architecture first, smaller models first; each run whose
    architecture and depth match a study model gets that role."""
    out = []
    for root in baseline_runs(baselines_dir):
        run = ReportedRun(root)
        out.append(Baseline(run, S.model_card(run)))
    arch = {role: (study[role]["architecture"], study.n_layers(role)) for role in ROLES}
    for b in out:
        b.role = next((r for r, a in arch.items() if a == (b.run.model.get("architecture"), b.n_layers)), None)
    return sorted(out, key=lambda b: (b.role is None, model_size(b.run), b.run.name, _profile_rank(b)))


def _profile_rank(b: Baseline) -> int:
    names = list(PROFILES)
    return names.index(b.card["profile"]) if b.card["profile"] in names else -1


def pair(baselines: Sequence[Baseline]) -> tuple[Baseline, Baseline] | None:
    """The (small, large) runs standing beside the study's two models: for each, the run of the
    highest profile (then the most experiments); ``None`` when either is missing."""
    picked = []
    for role in ROLES:
        cands = [b for b in baselines if b.role == role]
        if not cands:
            return None
        picked.append(max(cands, key=lambda b: (_profile_rank(b), len(b.run.records), b.run.name)))
    return picked[0], picked[1]


def load_doc(baselines_dir: str | Path, study: Study) -> Doc:
    """The study beside the runs under ``baselines_dir``, with their pair."""
    baselines = load_baselines(baselines_dir, study)
    return Doc(study, baselines, pair(baselines))
