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

import hashlib
import json
import math
import os
import platform
import re
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path, PurePath
from typing import Any, Callable, TypeVar, get_origin

import cattrs
import numpy as np
from filelock import FileLock

from atlas_core.integrity import CorruptFile, read_sealed_json, seal_doc

SCHEMA = 4  # the version of the record format and of the result types (experiments.schema), written with each
# record; it lives here, below the experiments, so that storage imports nothing above it
_NAME = re.compile(r"[A-Za-z0-9_]{1,64}")  # an experiment name or config hash read back from a file
SCHEMAS_READ = tuple(range(1, SCHEMA + 1))  # record formats this code reads (older ones migrate on reading)
T = TypeVar("T")
RECORD_FIX = "delete it and rerun atlas run to recompute that experiment"


def record_schema() -> dict:
    """The one declaration of an experiment record's envelope (JSON Schema). Its ``result`` is checked against
    the experiment's result type where it is read (``experiments.schema.load_result``)."""
    from atlas_core.validation import INTEGER, OBJECT

    name = {"type": "string", "pattern": f"^{_NAME.pattern}$"}
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["experiment", "seed", "config", "config_hash", "provenance", "result"],
        "properties": {
            "experiment": name,
            "seed": INTEGER,
            "config": OBJECT,
            "config_hash": name,
            "provenance": OBJECT,
            "result": OBJECT,
            "schema": {"enum": list(SCHEMAS_READ)},
        },
    }


def manifest_schema() -> dict:
    """The one declaration of a run folder's manifest (JSON Schema): the run's facts and one entry per record."""
    from atlas_core.validation import STRING

    when = {"type": ["string", "null"]}
    entry = {
        "type": "object",
        "additionalProperties": False,
        "required": ["config_hash"],
        "properties": {
            "config_hash": {"type": "string", "pattern": f"^{_NAME.pattern}$"},
            "wall_seconds": {"type": ["number", "null"]},
            "finished": when,
        },
    }
    facts = {"type": ["object", "null"]}
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "experiments": {"type": "object", "additionalProperties": entry},
            "created": STRING,
            "updated": STRING,
            "rebuilt": STRING,
            "model": facts,
            "profile": facts,
            "versions": {"type": ["object", "null"], "additionalProperties": STRING},
            "families": {"type": ["object", "null"], "additionalProperties": STRING},
        },
    }


def read_manifest(path: Path) -> dict:
    """A manifest file, checked against :func:`manifest_schema`; a damaged one is a ``CorruptFile`` naming the
    field (``RecordStore.manifest`` then rebuilds it from the records)."""
    from atlas_core.validation import check

    manifest = read_sealed_json(path, "")
    check(
        manifest,
        manifest_schema,
        path,
        "it is rebuilt from the records when read through the run store",
        error=CorruptFile,
    )
    return manifest


def _scalar(v: Any) -> Any:
    """A number as JSON holds it: numpy scalars as Python ones, NaN and infinities as null (undefined)."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _is_sequence(t: Any) -> bool:
    return t in (list, tuple) or get_origin(t) in (list, tuple, Sequence)


def _is_mapping(t: Any) -> bool:
    return t is dict or get_origin(t) in (dict, Mapping)


@lru_cache(maxsize=1)
def converter() -> cattrs.Converter:
    """The one converter between typed values (results, records, configs) and their JSON form: what
    :func:`unstructure` writes, :func:`structure` reads back.

    Out: dataclasses as objects of their fields (names unchanged, so a field path is a JSON pointer), lists,
    tuples and arrays as lists, mapping keys as strings, numpy scalars as Python ones, undefined numbers
    (NaN) as null, paths as strings. In: a field the type lacks is an error; null where a float is declared
    reads as NaN."""
    conv = cattrs.Converter(forbid_extra_keys=True)
    for t in (float, int, bool, np.generic):
        conv.register_unstructure_hook(t, _scalar)
    conv.register_unstructure_hook(np.ndarray, lambda a: conv.unstructure(a.tolist()))
    conv.register_unstructure_hook(PurePath, str)
    conv.register_unstructure_hook_func(_is_sequence, lambda v: [conv.unstructure(e) for e in v])
    conv.register_unstructure_hook_func(_is_mapping, lambda v: {str(k): conv.unstructure(e) for k, e in v.items()})
    conv.register_structure_hook(float, lambda v, _: float("nan") if v is None else float(v))
    return conv


def unstructure(obj: Any) -> Any:
    """``obj`` in its JSON form (see :func:`converter`)."""
    return converter().unstructure(obj)


def structure(data: Any, cls: type[T]) -> T:
    """``data`` (JSON form) as ``cls``; a mismatch is a ``cattrs.BaseValidationError`` naming each field."""
    return converter().structure(data, cls)


def canonical(obj: Any) -> str:
    return json.dumps(unstructure(obj), sort_keys=True, separators=(",", ":"))


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

    def write(tmp: str) -> None:
        Path(tmp).write_text(text)

    return atomic_write(path, write)


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
        return unstructure(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ExperimentRecord":
        return structure(data, cls)

    @classmethod
    def read(cls, path: Path) -> "ExperimentRecord":
        """A record file, its fields' names and types checked: a damaged or foreign file is a
        ``CorruptFile`` naming it and the fix (delete it: the experiment is recomputed)."""
        from atlas_core.validation import check

        data = read_sealed_json(path, RECORD_FIX)
        check(
            data,
            record_schema,
            f"{path} is not an Atlas record",
            f"{RECORD_FIX} (this code reads record schemas {', '.join(map(str, SCHEMAS_READ))})",
            error=CorruptFile,
        )
        return cls.from_dict(data)


def record_key(experiment: str, seed: int, base_seed: int) -> str:
    return experiment if seed == base_seed else f"{experiment}.seed{seed}"


class RecordStore:
    """A run folder's records as ``atlas run`` writes them: atomic per-experiment files, resumable by config
    hash, with the folder's locks and manifest (``runs.StoredRun`` reads a finished folder, the report's
    ``ReportedRun`` adds the page's pointers)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def partial_dir(self, key: str, config_hash: str) -> Path:
        """Where an unfinished experiment keeps its sweep checkpoints (see ``atlas_core.checkpoints``)."""
        return self.root / ".partial" / f"{key}-{config_hash}"

    def clear_partial(self, key: str, keep: Path | None = None) -> None:
        """Remove ``key``'s checkpoint folders (all but ``keep``: those of an older config are stale). Safe
        while another run cleans its own: a folder or ``.partial`` gone or refilled meanwhile is left be."""
        base = self.root / ".partial"
        for d in base.glob(f"{key}-*") if base.is_dir() else ():
            if d != keep and d.name[len(key) + 1 :].isalnum():
                shutil.rmtree(d, ignore_errors=True)
        try:
            base.rmdir()  # only when empty; the OS decides atomically
        except OSError:
            pass

    def load(self, key: str) -> ExperimentRecord | None:
        p = self.path(key)
        if not p.is_file():
            return None
        rec = ExperimentRecord.read(p)
        if rec.key != key:
            raise CorruptFile(f"{p} holds the record of {rec.key}, not {key}; delete it and rerun atlas run")
        return rec

    def write(self, record: ExperimentRecord) -> Path:
        p = self.path(record.key)
        atomic_write_text(p, json.dumps(seal_doc(record.to_dict()), indent=1))
        return p

    def records(self) -> dict[str, ExperimentRecord]:
        out = {}
        for p in sorted(self.root.glob("*.json")):
            if p.name == "manifest.json":
                continue
            rec = ExperimentRecord.read(p)
            if p.name != f"{rec.key}.json":
                raise CorruptFile(f"{p} holds the record of {rec.key}; delete it or rename it to {rec.key}.json")
            out[rec.key] = rec
        return out

    def lock(self, name: str) -> FileLock:
        """The folder's lock called ``name`` (``.locks/<name>.lock``); the caller acquires it. One object per
        path in a process (re-entrant there), so a block holding it may call code that takes it again."""
        locks = self.root / ".locks"
        locks.mkdir(parents=True, exist_ok=True)
        return FileLock(str(locks / f"{name}.lock"), is_singleton=True)

    def update_manifest(self, update: Callable[[dict], None]) -> dict:
        """Read the manifest, apply ``update`` to it and write it back, under the manifest lock, so two
        processes adding entries at once keep both."""
        with self.lock("manifest"):
            manifest = self.manifest()
            update(manifest)
            self.write_manifest(manifest)
        return manifest

    def manifest(self) -> dict:
        """The manifest; one that is damaged is rebuilt from the records (it is only their index)."""
        p = self.root / "manifest.json"
        if not p.is_file():
            return {}
        try:
            return read_manifest(p)
        except CorruptFile:
            return self.rebuilt_manifest()

    def rebuilt_manifest(self) -> dict:
        """The manifest as the records say it: an entry per record, run facts from the newest one."""
        records = self.records()
        out: dict = {"experiments": {}, "rebuilt": now()}
        for key, rec in sorted(records.items(), key=lambda kv: str(kv[1].provenance.get("finished", ""))):
            out["experiments"][key] = {
                "config_hash": rec.config_hash,
                "wall_seconds": rec.provenance.get("wall_seconds"),
                "finished": rec.provenance.get("finished"),
            }
            out.update({k: rec.provenance[k] for k in ("model", "versions") if k in rec.provenance})
            out["profile"] = rec.config.get("profile", out.get("profile"))
            out["families"] = rec.provenance.get("task_sha256", out.get("families"))
        return out

    def write_manifest(self, manifest: dict) -> None:
        atomic_write_text(self.root / "manifest.json", json.dumps(seal_doc(unstructure(manifest)), indent=1))


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
