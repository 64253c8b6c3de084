"""One reader of a run folder, and the one rule that names run folders.

:class:`StoredRun` reads what ``atlas run`` wrote into a folder once: the manifest (rebuilt from the
records when damaged, as ``RecordStore.manifest`` does) and every record (base seed and extra seeds, each
checked as ``RecordStore.records`` checks it). The model's facts, the profile and the finding statistics are
derived from those. The claims (:func:`load_run`), the HTML report (``report.data.ReportedRun`` adds its
provenance pointers on top), the replication document and the pytest plugin all read runs through it.

Results are reached through :meth:`StoredRun.result` alone, so a typed loader can later stand behind that
one method.

:func:`run_path` is where a model's run at a profile lives: ``atlas run``'s default ``--out``, the plugin's
run store and the committed baselines all name folders ``<model>-<profile>``.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

from atlas_core import AtlasError
from atlas_core.experiments.schema import load_result
from atlas_core.results import ExperimentRecord, RecordStore
from atlas_core.verdicts import Stat, model_statistics, relative_depth

RUNS_DIR = Path("reports/runs")  # atlas run's default parent folder, relative to where it runs


def run_path(model: str, profile: str, runs: str | Path = RUNS_DIR) -> Path:
    """The folder of ``model``'s run at ``profile`` under ``runs``: ``<model>-<profile>``, a hub id's ``/``
    written ``_`` so that the name is one folder."""
    return Path(runs) / f"{model.replace('/', '_')}-{profile}"


class StoredRun:
    """A run folder as stored: its manifest and records, read once, with the facts derived from them."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise AtlasError(
                f"run folder {self.root} does not exist; make one with "
                f"`atlas run --out {self.root}` (or pass the folder a run wrote)"
            )
        store = RecordStore(self.root)
        self._typed: dict[str, Any] = {}
        self.records: dict[str, ExperimentRecord] = store.records()  # by key: `steering`, `steering.seed1`
        self.manifest: dict = store.manifest()
        if not self.records and not self.manifest:
            raise AtlasError(
                f"{self.root} holds no atlas results (no manifest.json, no experiment records); "
                f"run `atlas run --out {self.root}` first"
            )

    @property
    def lost(self) -> list[str]:
        """Record keys the manifest lists as finished whose records are not in the folder."""
        return sorted(k for k in (self.manifest.get("experiments") or {}) if k not in self.records)

    def require_records(self) -> None:
        """An AtlasError when the manifest lists finished experiments whose records are gone: the folder is
        incomplete, and anything read from it would claim results it does not hold."""
        if self.lost:
            raise AtlasError(
                f"run folder {self.root}: its manifest lists {len(self.lost)} finished experiment(s) "
                f"whose records are missing ({', '.join(self.lost)}); recompute them with "
                f"`atlas run --experiments {','.join(dict.fromkeys(k.split('.')[0] for k in self.lost))} "
                f"--out {self.root}`"
            )

    # -- facts ---------------------------------------------------------------------------------------
    @property
    def model(self) -> dict:
        """The model's facts (name, n_layers, d_model, weights_sha256, ...): the manifest's, else a record's."""
        if self.manifest.get("model"):
            return self.manifest["model"]
        return next((r.provenance["model"] for r in self.records.values() if r.provenance.get("model")), {})

    @property
    def name(self) -> str:
        return str(self.model.get("name") or self.root.name)

    @property
    def n_layers(self) -> int | None:
        n = self.model.get("n_layers")
        if n is None and self.has("layer_ablation"):
            n = self.typed("layer_ablation").n_layers
        return int(n) if n is not None else None

    @property
    def profile(self) -> str | None:
        """The profile's name: the manifest's, else the first record's provenance; None when neither says."""
        name = (self.manifest.get("profile") or {}).get("name")
        return name or next((r.provenance["profile"] for r in self.records.values() if "profile" in r.provenance), None)

    def depth(self, layer: Any) -> float | None:
        """``layer``'s relative depth (:func:`atlas_core.verdicts.relative_depth`); None without a layer or
        without the model's depth."""
        if layer is None or self.n_layers is None:
            return None
        return relative_depth(layer, self.n_layers)

    # -- results -------------------------------------------------------------------------------------
    @property
    def experiments(self) -> list[str]:
        """The experiments with a base-seed record (what the statistics are computed from)."""
        return [k for k, r in self.records.items() if k == r.experiment]

    def has(self, key: str) -> bool:
        return key in self.records

    def typed(self, key: str) -> Any:
        """The result of record ``key`` as the type its experiment produces
        (:func:`atlas_core.experiments.schema.load_result`)."""
        if key not in self._typed:
            self._typed[key] = load_result(self.records[key].experiment, self.records[key].result)
        return self._typed[key]

    def extra_seeds(self, experiment: str) -> list[str]:
        """The keys of ``experiment``'s records at seeds other than the base seed."""
        return sorted(k for k in self.records if k.startswith(experiment + ".seed"))

    @property
    def results(self) -> dict[str, Any]:
        """Each experiment's base-seed result, typed, by experiment name."""
        return {k: self.typed(k) for k in self.experiments}

    @cached_property
    def stats(self) -> dict[str, Stat]:
        """The finding statistics (:func:`atlas_core.verdicts.model_statistics`), computed on first use."""
        return model_statistics(self.results, self.require_n_layers())

    def require_n_layers(self) -> int:
        """The model's depth, or an AtlasError saying the run folder lacks it."""
        if self.n_layers is None:
            raise AtlasError(f"run folder {self.root}: its manifest lacks the model's facts (n_layers)")
        return self.n_layers


def load_run(run_dir: str | Path) -> StoredRun:
    """A run folder whose finding statistics can be computed (base-seed results and the model's depth), or
    an AtlasError naming the fix."""
    run = StoredRun(run_dir)
    if not run.experiments:
        raise AtlasError(f"run folder {run.root} holds no experiment results; run `atlas run --out {run.root}`")
    run.require_n_layers()
    return run
