"""What Atlas reads back from disk is checked before it is used.

Every file Atlas writes and later reads (records, the manifest, sweep checkpoints, the LoRA training
state, the saved adapter, the cached model) can be truncated, garbled or hand-edited between the write
and the read. Parsing alone does not catch that (``torch.load`` skips the zip CRC, safetensors reads
garbled floats as floats), so the binary files carry a SHA-256 of their content recorded at write, and
the JSON files are parsed here with errors that name the file and the fix.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from atlas_core import AtlasError

_CHUNK = 1 << 22


class CorruptFile(AtlasError):
    """A file Atlas wrote earlier no longer holds what was written."""


class NonFiniteMetric(AtlasError):
    """A measured metric is NaN or infinite: never stored."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def sha256_arrays(arrays: dict[str, np.ndarray]) -> str:
    """A digest of named arrays' names, dtypes, shapes and bytes (order-independent in the names)."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}\0{a.dtype.str}\0{a.shape}\0".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


def read_json(path: str | Path, fix: str) -> Any:
    """Parse a JSON file Atlas wrote; a file that is unreadable, truncated, empty or garbled is a
    ``CorruptFile`` naming the file and ``fix``."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
        if not text.strip():
            raise ValueError("the file is empty")
        if "\0" in text:
            raise ValueError("the file holds NUL bytes")
        return json.loads(text)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CorruptFile(f"{path} is damaged ({type(exc).__name__}: {str(exc)[:120]}); {fix}") from None


SEAL = "sha256"  # the key of a JSON document's own content hash


def _doc_hash(doc: dict) -> str:
    return sha256_bytes(
        json.dumps(
            {k: v for k, v in doc.items() if k != SEAL}, sort_keys=True, separators=(",", ":"), allow_nan=False
        ).encode()
    )


def seal_doc(doc: dict) -> dict:
    """``doc`` with a ``sha256`` of the rest of its content, for ``read_sealed_json``."""
    return {**{k: v for k, v in doc.items() if k != SEAL}, SEAL: _doc_hash(doc)}


def read_sealed_json(path: str | Path, fix: str) -> dict:
    """A JSON object written with ``seal_doc``, its hash checked and removed (documents from before seals,
    such as committed baselines, carry none and are only parsed); a mismatch is a ``CorruptFile``."""
    doc = read_json(path, fix)
    if not isinstance(doc, dict):
        raise CorruptFile(f"{path} holds no JSON object; {fix}")
    if SEAL in doc:
        try:
            ok = doc[SEAL] == _doc_hash(doc)
        except ValueError:  # NaN or infinity: Atlas never writes them
            ok = False
        if not ok:
            raise CorruptFile(f"{path}: content does not match the SHA-256 recorded when it was written; {fix}")
        doc = {k: v for k, v in doc.items() if k != SEAL}
    return doc


def sealed(payload: bytes) -> bytes:
    """``payload`` prefixed by its SHA-256 (64 hex digits and a newline): see ``unseal``."""
    return sha256_bytes(payload).encode() + b"\n" + payload


def unseal(path: str | Path) -> bytes:
    """The payload of a file written with ``sealed``; a ``CorruptFile`` when its hash does not match."""
    data = Path(path).read_bytes()
    head, payload = data[:64], data[65:]
    if len(data) < 65 or data[64:65] != b"\n" or head.decode("latin-1") != sha256_bytes(payload):
        raise CorruptFile(f"{path}: content does not match the SHA-256 recorded when it was written")
    return payload


def torch_save_sealed(obj: Any, path: str) -> None:
    """``torch.save`` into ``path`` as a sealed payload (the writer for ``results.atomic_write``)."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    Path(path).write_bytes(sealed(buf.getvalue()))


def torch_load_sealed(path: str | Path) -> Any:
    """The object saved by ``torch_save_sealed``, after its hash is checked (weights only)."""
    import torch

    return torch.load(io.BytesIO(unseal(path)), map_location="cpu", weights_only=True)


def check_finite(values: np.ndarray, what: str, rows: Sequence[str], cols: Sequence[str]) -> None:
    """Raise ``NonFiniteMetric`` naming the first (row, column) of a 2-D metric that is NaN or infinite."""
    values = np.asarray(values, dtype=np.float64)
    bad = np.argwhere(~np.isfinite(values))
    if bad.size:
        r, c = (int(i) for i in bad[0])
        raise NonFiniteMetric(
            f"{what} is {values[r, c]} for variant {rows[r]!r}, prompt {cols[c]!r} ({len(bad)} non-finite value(s)); "
            "the model's output is not finite there: check the weights (atlas models verify) or the adapter"
        )
