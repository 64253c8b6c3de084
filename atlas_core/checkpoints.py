"""Partial work saved while an experiment runs, so an interrupted run resumes mid-experiment.

A run's results are written per experiment, and one experiment of a full profile can take hours on a CPU
(the 1.5B head ablation is ~32k sweep rows). ``atlas run`` therefore lends each experiment a
``Checkpoints(dir)`` through the runners' ``Sweeping``: every ``Runner.sweep`` of it takes the next slot (its
position in the experiment, plus a digest of what it sweeps), saves its per-(variant, prompt) metrics there with safetensors every
``INTERVAL`` seconds, and on a rerun reloads them and computes only the variants not yet finished; LoRA
training saves its state in the same folder (``lora_fit.train``). The folder is removed once the
experiment's record is written.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from atlas_core.integrity import sha256_arrays
from atlas_core.results import atomic_write, atomic_write_text

INTERVAL = 30.0  # seconds between saves: the most work an interruption loses


class Slot:
    """One sweep's partial metrics in one file, written atomically (temp file + rename)."""

    def __init__(self, path: Path, digest: str, owner: "Checkpoints"):
        self.path = path
        self.digest = digest
        self.owner = owner
        self._last = time.monotonic()

    def load(self, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray] | None:
        """The saved arrays, or None when there are none, they belong to another sweep, or their content no
        longer matches the SHA-256 recorded at write (garbled bytes parse as valid floats: never trusted)."""
        if not self.path.is_file():
            return None
        from safetensors import safe_open

        try:
            with safe_open(str(self.path), framework="numpy") as fh:
                meta = fh.metadata() or {}
                if meta.get("digest") != self.digest:
                    return None
                arrays = {k: fh.get_tensor(k) for k in fh.keys()}
        except Exception:  # a file that cannot be read is recomputed, never trusted
            return None
        if {k: tuple(v.shape) for k, v in arrays.items()} != shapes or meta.get("sha256") != sha256_arrays(arrays):
            return None
        return arrays

    def save(self, arrays: dict[str, np.ndarray], force: bool = False) -> bool:
        """Write the arrays if the owner's ``interval`` passed since the last write (or ``force``)."""
        if not force and time.monotonic() - self._last < self.owner.interval:
            return False
        from safetensors.numpy import save_file

        arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
        meta = {"digest": self.digest, "sha256": sha256_arrays(arrays)}
        atomic_write(self.path, lambda tmp: save_file(arrays, tmp, metadata=meta))
        self._last = time.monotonic()
        self.owner.save_elapsed()
        return True


class Checkpoints:
    """The slots of one experiment run under ``directory``, handed out in call order, each saved at most every
    ``interval`` seconds (default ``INTERVAL``); the caller removes the folder when the experiment's work is
    stored."""

    def __init__(self, directory: str | Path, interval: float | None = None):
        self.directory = Path(directory)
        self.interval = INTERVAL if interval is None else interval
        self._count = 0
        self._t0 = time.monotonic()
        try:  # compute time spent by earlier, interrupted attempts (up to their last save)
            prior = float((self.directory / "elapsed.txt").read_text())
        except (OSError, ValueError):
            prior = 0.0
        self.prior_seconds = prior if math.isfinite(prior) and prior >= 0 else 0.0  # garbled: not counted

    def slot(self, identity: dict) -> Slot:
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
        self._count += 1
        return Slot(self.directory / f"sweep-{self._count:03d}.safetensors", digest, self)

    def save_elapsed(self) -> None:
        atomic_write_text(self.directory / "elapsed.txt", f"{self.prior_seconds + time.monotonic() - self._t0:.3f}")


def digest_strings(items: Sequence[str]) -> str:
    h = hashlib.sha256()
    for s in items:
        h.update(s.encode())
        h.update(b"\0")
    return h.hexdigest()
