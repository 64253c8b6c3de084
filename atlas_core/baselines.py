"""Committed baselines: the compact result records of reference runs under ``atlas_core/data/baselines/<run>/``.

``export_baseline`` copies a finished run's manifest and experiment records there as compact JSON (no
adapter weights, no HTML, no checkpoints), so the repository carries every number of the replication
(``atlas report --replication``) and the Coder-pair claims. ``seed_run`` copies them into an empty run
folder of the same name: ``atlas run`` then reuses each record whose config hash matches this code and
these weights, and recomputes the rest, so the hypothesis suite checks the baselines in CI without
redoing hours of CPU work.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from atlas_core import AtlasError
from atlas_core.data import BASELINES_DIR
from atlas_core.integrity import seal_doc
from atlas_core.results import RecordStore, atomic_write, atomic_write_text


def _compact(doc: dict) -> str:
    """Compact JSON, sealed with its content hash (``integrity.seal_doc``) as the run store writes records."""
    return json.dumps(seal_doc(doc), separators=(",", ":")) + "\n"


def _portable(obj, run_root: Path):
    """``obj`` with this machine's absolute paths made portable: a path inside the run folder relative to it
    (the LoRA adapter), one under the home folder as ``~/...`` (the model cache). They are provenance only;
    no number depends on them."""
    if isinstance(obj, dict):
        return {k: _portable(v, run_root) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_portable(v, run_root) for v in obj]
    if isinstance(obj, str) and obj.startswith("/"):
        p = Path(obj)
        for base, prefix in ((run_root.resolve(), ""), (Path.home().resolve(), "~/")):
            if p.is_relative_to(base) and p != base:
                return prefix + p.relative_to(base).as_posix()
    return obj


def export_baseline(run_dir: str | Path, into: str | Path = BASELINES_DIR) -> Path:
    """Write ``into/<run folder name>/``: the manifest and every experiment record of ``run_dir``, compact.
    Records are read back through ``RecordStore`` first, so a damaged run fails here, not in CI."""
    store = RecordStore(run_dir)
    if not store.root.is_dir():
        raise AtlasError(f"run folder {store.root} does not exist; make one with `atlas run --out {store.root}`")
    manifest = store.manifest()
    records = store.records()
    if not manifest or not records:
        raise AtlasError(
            f"run folder {store.root} holds no manifest or no experiment results; "
            f"finish it with `atlas run --out {store.root}` first"
        )
    missing = sorted(set(manifest.get("experiments", {})) - set(records))
    if missing:
        raise AtlasError(
            f"run folder {store.root}: the manifest lists {', '.join(missing)} but their records are "
            "missing; rerun `atlas run` on it"
        )
    screened = sorted(key for key, rec in records.items() if (rec.config.get("extra") or {}).get("screen"))
    if screened:  # a baseline is every head measured: a screened sweep leaves heads unmeasured
        raise AtlasError(
            f"run folder {store.root}: {', '.join(screened)} was screened (--screen); baselines are "
            "exhaustive: rerun it without --screen into another folder and export that"
        )
    dest = Path(into) / store.root.name
    dest.mkdir(parents=True, exist_ok=True)
    for stale in dest.glob("*.json"):  # an older export's records of experiments no longer in the run
        if stale.name != "manifest.json" and stale.stem not in records:
            stale.unlink()
    for key, rec in records.items():
        atomic_write_text(dest / f"{key}.json", _compact(_portable(rec.to_dict(), store.root)))
    atomic_write_text(dest / "manifest.json", _compact(_portable(manifest, store.root)))
    return dest


def seed_run(
    run_dir: str | Path,
    baselines: str | Path | None = BASELINES_DIR,
    *,
    dtype: str | None = None,
    families: list[str] | None = None,
) -> list[str]:
    """Copy the committed records of ``baselines/<run folder name>/`` into ``run_dir`` where it has none of
    its own; returns the record keys copied. A baseline of another dtype or set of task families than the
    run's (when given) is not copied: its records would not be reused, and a run folder holds one run."""
    if baselines is None:
        return []
    src = Path(baselines) / Path(run_dir).name
    if not src.is_dir():
        return []
    held = RecordStore(src).manifest()
    if dtype is not None and (held.get("model") or {}).get("dtype") not in (None, dtype):
        return []
    if families is not None and held.get("families") is not None and sorted(held["families"]) != sorted(families):
        return []
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    copied = []
    for p in sorted(src.glob("*.json")):
        if p.name != "manifest.json" and not (run_dir / p.name).exists():
            atomic_write(run_dir / p.name, lambda tmp, src=p: shutil.copyfile(src, tmp))  # never half a record
            copied.append(p.stem)
    return copied


def baseline_runs(baselines_dir: str | Path) -> list[Path]:
    """Run folders under ``baselines_dir``: every folder (itself included) holding a manifest.json."""
    root = Path(baselines_dir)
    if not root.is_dir():
        raise AtlasError(
            f"baselines folder {root} does not exist; pass the folder holding the committed runs "
            "(for example atlas_core/data/baselines)"
        )
    found = sorted({p.parent for p in root.rglob("manifest.json")})
    if not found:
        raise AtlasError(f"{root} holds no run folders (no manifest.json below it); commit runs there first")
    return found
