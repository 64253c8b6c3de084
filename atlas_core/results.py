"""Result records and the run store.

A run folder holds one JSON file per experiment (``<experiment>.json``, or ``<experiment>.seed<N>.json``
for repeated seeds) plus ``manifest.json``. Each file is written atomically (temporary file in the
same folder, then ``os.replace``) when its experiment finishes, so an interrupted run loses nothing
already finished and a re-run skips every experiment whose config hash matches.

Several ``atlas run`` processes may share a folder: each holds an OS file lock (``filelock``, released
by the OS if the process dies, so no lock goes stale) on every experiment it is about to compute, and
one on the manifest while it reads, merges and rewrites it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import numpy as np
from filelock import FileLock

SCHEMA = 1


def to_jsonable(obj: Any) -> Any:
    """Dataclasses, numpy arrays and scalars, tuples and paths into plain JSON types."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def canonical(obj: Any) -> str:
    return json.dumps(to_jsonable(obj), sort_keys=True, separators=(",", ":"))


def config_hash(config: dict) -> str:
    return hashlib.sha256(canonical(config).encode()).hexdigest()[:16]


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("atlas-interp", "torch", "transformers", "peft", "safetensors", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "absent"
    return out


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[str], None]) -> Path:
    """Have ``write(tmp)`` fill a temp file beside ``path``, then rename it over ``path``: a reader sees the old
    file or the whole new one, never a part. The file gets the usual mode (0666 less the umask), not mkstemp's
    0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    """``atomic_write`` of a text file."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


@dataclass
class ExperimentRecord:
    experiment: str
    seed: int
    config: dict
    config_hash: str
    provenance: dict
    result: dict
    schema: int = SCHEMA

    @property
    def key(self) -> str:
        return record_key(self.experiment, self.seed, self.config.get("base_seed", self.seed))

    def to_dict(self) -> dict:
        return to_jsonable(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ExperimentRecord":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def record_key(experiment: str, seed: int, base_seed: int) -> str:
    return experiment if seed == base_seed else f"{experiment}.seed{seed}"


class RunStore:
    """One run folder: atomic per-experiment records, resumable by config hash."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def partial_dir(self, key: str, config_hash: str) -> Path:
        """Where an unfinished experiment keeps its sweep checkpoints (see ``atlas_core.checkpoints``)."""
        return self.root / ".partial" / f"{key}-{config_hash}"

    def clear_partial(self, key: str, keep: Path | None = None) -> None:
        """Remove ``key``'s checkpoint folders (all but ``keep``: those of an older config are stale)."""
        base = self.root / ".partial"
        for d in base.glob(f"{key}-*") if base.is_dir() else ():
            if d != keep and d.name[len(key) + 1:].isalnum():
                shutil.rmtree(d, ignore_errors=True)
        if base.is_dir() and not any(base.iterdir()):
            base.rmdir()

    def load(self, key: str) -> ExperimentRecord | None:
        p = self.path(key)
        if not p.is_file():
            return None
        return ExperimentRecord.from_dict(json.loads(p.read_text()))

    def write(self, record: ExperimentRecord) -> Path:
        p = self.path(record.key)
        atomic_write_text(p, json.dumps(record.to_dict(), indent=1))
        return p

    def records(self) -> dict[str, ExperimentRecord]:
        out = {}
        for p in sorted(self.root.glob("*.json")):
            if p.name == "manifest.json":
                continue
            rec = ExperimentRecord.from_dict(json.loads(p.read_text()))
            out[rec.key] = rec
        return out

    def lock(self, name: str) -> FileLock:
        """The folder's lock called ``name`` (``.locks/<name>.lock``); the caller acquires it."""
        locks = self.root / ".locks"
        locks.mkdir(parents=True, exist_ok=True)
        return FileLock(str(locks / f"{name}.lock"))

    def update_manifest(self, update: Callable[[dict], None]) -> dict:
        """Read the manifest, apply ``update`` to it and write it back, under the manifest lock, so two
        processes adding entries at once keep both."""
        with self.lock("manifest"):
            manifest = self.manifest()
            update(manifest)
            self.write_manifest(manifest)
        return manifest

    def manifest(self) -> dict:
        p = self.root / "manifest.json"
        return json.loads(p.read_text()) if p.is_file() else {}

    def write_manifest(self, manifest: dict) -> None:
        atomic_write_text(self.root / "manifest.json", json.dumps(to_jsonable(manifest), indent=1))


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
