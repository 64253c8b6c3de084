"""``load(name_or_path)``: one entry point that puts a stock HF causal LM, its tokenizer and its facts
in front of every experiment.

Sources, tried in this order: ``tiny-<family>`` (``tiny-qwen2`` and the other families); a registered offline model (fetched and cached once);
a ``.gguf`` file; a local Hugging Face directory; a hub id (local HF cache first).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import weakref
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from atlas_core import AtlasError
from atlas_core.integrity import read_json
from atlas_core.models import offline
from atlas_core.models.adapters import check_supported, text_config
from atlas_core.models.registry import OFFLINE_MODELS, PLANTED_MODELS, TINY_MODELS, known_names

# every model ``load`` returned -> its name (the pytest plugin's leak guard watches them)
LOADED_MODELS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


@dataclass(frozen=True)
class ModelInfo:
    name: str
    source: str  # synthetic | offline-registry | gguf | local-dir | hub
    weights_sha256: str
    architecture: str
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_model: int
    vocab_size: int
    dtype: str
    device: str
    path: str | None = None
    load_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    info: ModelInfo

    def __post_init__(self):
        if self.model in LOADED_MODELS:
            LOADED_MODELS[self.model] = self.info.name

    def __iter__(self):  # ``model, tokenizer, info = load(...)``
        return iter((self.model, self.tokenizer, self.info))


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise AtlasError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise AtlasError(f"device {device!r} is not supported; use cpu, cuda or cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise AtlasError(f"device {device!r} requested but CUDA is not available here; use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise AtlasError(
            f"device {device!r} does not exist: this machine has {torch.cuda.device_count()} CUDA device(s); use cuda:0"
        )
    return dev


def check_model_source(name_or_path: str) -> None:
    """What can be checked of a model source without loading it: a ``.gguf`` path is a non-empty GGUF file,
    a folder holds a readable ``config.json`` naming a model type. (Registered entries are verified by
    ``offline.fetch``; hub ids are only found by loading.)"""
    if name_or_path in TINY_MODELS or name_or_path in OFFLINE_MODELS or name_or_path in PLANTED_MODELS:
        return
    p = Path(name_or_path).expanduser()
    if p.suffix == ".gguf":
        if not p.is_file():
            raise AtlasError(f"GGUF file {p} does not exist")
        with open(p, "rb") as fh:
            magic = fh.read(4)
        if magic != b"GGUF":
            raise AtlasError(
                f"{p} is not a GGUF file ({'empty' if not magic else 'no GGUF magic bytes'}); "
                "pass the model's .gguf file (or its Hugging Face folder)"
            )
    elif p.is_dir():
        if not (p / "config.json").is_file():
            raise AtlasError(f"{p} is a folder but not a Hugging Face model directory (no config.json)")
        cfg = read_json(p / "config.json", "restore the model folder's config.json from its source")
        if not isinstance(cfg, dict) or not isinstance(cfg.get("model_type"), str):
            raise AtlasError(f"{p / 'config.json'} names no model_type; restore it from the model's source")


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if dtype is None or dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[dtype]
    except KeyError:
        raise AtlasError(f"unknown dtype {dtype!r}; use one of {', '.join(_DTYPES)}") from None


def _hash_files(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for p in sorted(paths):
        with open(p, "rb") as fh:
            while block := fh.read(1 << 22):
                digest.update(block)
    return digest.hexdigest()


WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # what transformers loads from a folder, in its order


def weight_files(folder: str | Path) -> list[Path]:
    """The files ``from_pretrained`` reads a folder's weights from (a sharded index and its shards, else the
    single file), safetensors first as transformers prefers them; other files in the folder are not read."""
    root = Path(folder)
    for index_name, single in zip(WEIGHT_INDEXES, WEIGHT_FILES):
        index = root / index_name
        if index.is_file():
            data = read_json(index, "restore the model folder's weight index from its source")
            shards = data.get("weight_map") if isinstance(data, dict) else None
            if not isinstance(shards, dict) or not shards:
                raise AtlasError(f"{index} has no 'weight_map'; restore it from the model's source")
            return [index] + [root / f for f in sorted(set(map(str, shards.values())))]
        if (root / single).is_file():
            return [root / single]
    return []


def check_safetensors(path: Path) -> dict[str, list[int]]:
    """A safetensors file's tensors (name -> shape), read from its header without loading them; a file cut
    short, or whose header does not parse, is an error naming the file (and the first tensor it cuts)."""
    size = path.stat().st_size
    fix = "restore it from the model's source (a registered model: atlas models fetch NAME)"
    with open(path, "rb") as fh:
        head = fh.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if n < 2 or 8 + n > size:
            raise AtlasError(
                f"weights file {path} is truncated or not safetensors ({size} bytes, its header "
                f"{'cannot be read' if n < 0 else f'claims {n} bytes'}); {fix}"
            )
        try:
            header = json.loads(fh.read(n))
        except (UnicodeDecodeError, ValueError):
            raise AtlasError(f"weights file {path}: its safetensors header does not parse; {fix}") from None
    if not isinstance(header, dict):
        raise AtlasError(f"weights file {path}: its safetensors header is not a JSON object; {fix}")
    data = size - 8 - n
    shapes = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            raise AtlasError(f"weights file {path}: tensor {name!r} has no valid data_offsets; {fix}")
        if offsets[1] > data:
            raise AtlasError(
                f"weights file {path} is truncated: tensor {name!r} ends at byte {offsets[1]} of the "
                f"data, which holds {data} bytes; {fix}"
            )
        shapes[name] = entry.get("shape")
    return shapes


def check_loading_info(path: str, info: dict, files: list[Path]) -> None:
    """Weights complete or refused: a tensor the model expects and the checkpoint lacks (transformers would
    initialise it randomly), one the checkpoint holds and the model does not take, or one whose shape
    differs, is an error naming the file and the tensor."""
    where = ", ".join(str(f) for f in files if not f.name.endswith(".json")) or path
    problems = []
    for key in sorted(info.get("missing_keys") or ()):
        problems.append(f"tensor {key!r} is missing from {where}")
    for key in sorted(info.get("unexpected_keys") or ()):
        problems.append(f"{where} holds tensor {key!r}, which the model does not have")
    for entry in info.get("mismatched_keys") or ():
        key, *shapes = entry if isinstance(entry, (tuple, list)) else (entry,)
        got = f" (file {list(shapes[0])}, model {list(shapes[1])})" if len(shapes) == 2 else ""
        problems.append(f"tensor {key!r} in {where} has the wrong shape{got}")
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise AtlasError(
            f"the weights in {path} are incomplete or do not fit the model: {'; '.join(problems[:3])}"
            f"{more}; restore the files from the model's source (a registered model: "
            "atlas models fetch NAME)"
        )


def _hash_state(model) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to(torch.float32).cpu().numpy().tobytes())
    return digest.hexdigest()


def model_info(name: str, source: str, sha: str, model, path: str | None, t0: float) -> ModelInfo:
    """What a load records about ``model`` (every loader path here, and ``models.skeleton``)."""
    cfg = text_config(model)
    n_heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads
    param = next(model.parameters())
    return ModelInfo(
        name=name,
        source=source,
        weights_sha256=sha,
        architecture=cfg.model_type,
        n_layers=cfg.num_hidden_layers,
        n_heads=n_heads,
        n_kv_heads=getattr(cfg, "num_key_value_heads", None) or n_heads,
        head_dim=head_dim,
        d_model=cfg.hidden_size,
        vocab_size=cfg.vocab_size,
        dtype=str(param.dtype).removeprefix("torch."),
        device=str(param.device),
        path=path,
        load_seconds=round(time.perf_counter() - t0, 3),
    )


def _finish(model, tokenizer, device, dtype):
    model = model.to(device=device, dtype=dtype).eval()
    LOADED_MODELS[model] = type(model).__name__  # named by LoadedModel once its info exists
    for p in model.parameters():
        p.requires_grad_(False)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def _load_hf_dir(path: str, dtype: torch.dtype, **kwargs):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(path, **kwargs)
    check_supported(config)  # before any weights are read
    files = weight_files(path) if Path(path).is_dir() else []
    for f in files:
        if f.suffix == ".safetensors":
            check_safetensors(f)
    model, info = AutoModelForCausalLM.from_pretrained(
        path, dtype=dtype, output_loading_info=True, ignore_mismatched_sizes=True, **kwargs
    )
    check_loading_info(path, info, files)
    tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
    return model, tokenizer


def _load_local(path: str, dtype: torch.dtype):
    """``_load_hf_dir`` of a folder on disk; files that fail to load are an error naming the folder and the fix."""
    from safetensors import SafetensorError

    try:
        return _load_hf_dir(path, dtype)
    except AtlasError:
        raise
    except (OSError, ValueError, RuntimeError, KeyError, SafetensorError) as exc:
        raise AtlasError(
            f"could not load the model in {path} ({type(exc).__name__}: {str(exc)[:200]}): its files are "
            "damaged or incomplete; restore them (a registered model: atlas models fetch NAME)"
        ) from None


def load(
    name_or_path: str, device: str | None = None, dtype: str | torch.dtype | None = None, progress: bool = True
) -> LoadedModel:
    """Load a model with its tokenizer and ``ModelInfo``. Weights are frozen, the model is in eval mode."""
    if not name_or_path:
        raise AtlasError(f"no model given; known models: {', '.join(known_names())}")
    t0 = time.perf_counter()
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)

    if name_or_path in TINY_MODELS:
        from atlas_core.models.tiny import build_tiny

        model, tok = build_tiny(name_or_path.removeprefix("tiny-"))
        model, tok = _finish(model, tok, dev, dt)
        return LoadedModel(model, tok, model_info(name_or_path, "synthetic", _hash_state(model), model, None, t0))

    if name_or_path in PLANTED_MODELS:  # written once to a folder with its planted.json, then loaded from it
        from atlas_core.models.planted_build import materialize

        path = materialize(name_or_path)
        model, tok = _finish(*_load_local(str(path), dt), dev, dt)
        return LoadedModel(model, tok, model_info(name_or_path, "synthetic", _hash_state(model), model, str(path), t0))

    check_model_source(name_or_path)
    if name_or_path in OFFLINE_MODELS:
        path = offline.fetch(name_or_path, progress=progress)  # verified against its marker's hashes
        marker = offline.read_marker(name_or_path)
        model, tok = _finish(*_load_local(str(path), dt), dev, dt)
        return LoadedModel(
            model, tok, model_info(name_or_path, "offline-registry", marker["gguf_sha256"], model, str(path), t0)
        )

    p = Path(name_or_path).expanduser()
    if p.suffix == ".gguf":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            model = AutoModelForCausalLM.from_pretrained(str(p.parent), gguf_file=p.name, dtype=dt)
            check_supported(model.config)
            tok = AutoTokenizer.from_pretrained(str(p.parent), gguf_file=p.name)
        except AtlasError:
            raise
        except Exception as exc:  # the GGUF reader raises whatever its parser met (struct, value, key errors)
            raise AtlasError(
                f"could not read the GGUF file {p} ({type(exc).__name__}: {str(exc)[:200]}); it is "
                "damaged or not a model: fetch it again"
            ) from None
        model, tok = _finish(model, tok, dev, dt)
        return LoadedModel(model, tok, model_info(p.stem, "gguf", offline.sha256_file(p), model, str(p), t0))

    if p.is_dir():
        model, tok = _finish(*_load_local(str(p), dt), dev, dt)
        loaded = weight_files(p) + [p / "config.json"]  # what was read: a stray file changes nothing
        return LoadedModel(model, tok, model_info(p.name, "local-dir", _hash_files(loaded), model, str(p), t0))

    if "/" in name_or_path and not p.exists() and not name_or_path.startswith((".", "/", "~")):
        return _load_hub(name_or_path, dev, dt, t0)

    raise AtlasError(
        f"unknown model {name_or_path!r}; known models: {', '.join(known_names())} "
        "(or pass a local Hugging Face directory, a hub id like Qwen/Qwen2.5-1.5B, or a .gguf path)"
    )


def _load_hub(hub_id: str, dev, dt, t0) -> LoadedModel:
    """A hub id: the local HF cache first; the network only where the environment allows it."""
    hub_offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    attempts = [{"local_files_only": True}] + ([] if hub_offline else [{}])
    last: Exception | None = None
    for kwargs in attempts:
        try:
            model, tok = _finish(*_load_hf_dir(hub_id, dt, **kwargs), dev, dt)
        except AtlasError:
            raise
        except (OSError, ValueError) as exc:
            last = exc
            continue
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(hub_id, local_files_only=True))
        loaded = weight_files(folder) + [folder / "config.json"]
        return LoadedModel(model, tok, model_info(hub_id, "hub", _hash_files(loaded), model, str(folder), t0))
    raise AtlasError(
        f"could not load hub model {hub_id!r}: not in the local Hugging Face cache and the hub is not "
        f"reachable ({type(last).__name__}: {str(last)[:200]}). Download it where you have network and pass "
        f"the local directory instead, e.g. --model /path/to/{hub_id.split('/')[-1]}"
    )


def describe(info: ModelInfo) -> str:
    return json.dumps(info.to_dict(), indent=2)
