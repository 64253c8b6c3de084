"""A registered model without its weights: the stock architecture on the ``meta`` device, from the
model's config shipped with the package (``configs/<name>.json``, the config its fetch writes).

What a stored-results-only run needs of a model is its identity and shape: the weights hash (the registry's
SHA-256, which a fetch verifies and a loaded model reports), the layer count and the module names that
experiment configs read. Checking committed baselines of the 1.5B model then costs no 3 GB fetch and no
6 GB load; any run that computes loads the real model.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import torch

from atlas_core import AtlasError
from atlas_core.models.adapters import check_supported
from atlas_core.models.loader import LoadedModel, model_info, resolve_device, resolve_dtype
from atlas_core.models.offline import cache_dir, spec_for

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
VOLATILE = ("_name_or_path", "transformers_version")  # where and by which version a fetch wrote it


def comparable(config: dict) -> dict:
    """A model config without the keys that vary from one fetch to the next."""
    return {k: v for k, v in config.items() if k not in VOLATILE}


def shipped_config(name: str) -> dict:
    spec_for(name)  # an unknown name fails here, listing the known ones
    path = CONFIG_DIR / f"{name}.json"
    if not path.is_file():
        raise AtlasError(f"no shipped config for {name} ({path}); the package is incomplete: reinstall it")
    return json.loads(path.read_text())


def skeleton(name: str, device: str | None = None, dtype: str | torch.dtype | None = None) -> LoadedModel:
    """``name``'s architecture on the meta device, with the ``ModelInfo`` that ``load(name, device, dtype)``
    reports. No tokenizer and no weights: nothing can run on it."""
    from transformers import AutoConfig, AutoModelForCausalLM

    t0 = time.perf_counter()
    data = shipped_config(name)
    cfg = AutoConfig.for_model(data.pop("model_type"), **data)
    check_supported(cfg)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    info = model_info(name, "offline-registry", spec_for(name).sha256, model, str(cache_dir(name)), t0)
    device_str = f"cuda:{torch.cuda.current_device()}" if dev.type == "cuda" and dev.index is None else str(dev)
    info = dataclasses.replace(info, dtype=str(dt).removeprefix("torch."), device=device_str)
    return LoadedModel(model, None, info)
