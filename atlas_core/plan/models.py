"""What ``atlas plan`` plans for: any Hugging Face config, built on the meta device (no weights, no memory).

A model reference is a registered model (its shipped config, as ``models.skeleton`` builds it), a ``tiny-<family>``
model, one of the configs shipped under ``atlas_core/data/plan_configs/`` (models too large to fetch here), or a
path to a ``config.json`` (or a folder holding one). Prompt lengths need a tokenizer: the model's own where this
machine has it (a tiny model's, a cached registered model's), else a stand-in, named in the plan.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from atlas_core import AtlasError
from atlas_core.models.adapters import check_supported, text_config
from atlas_core.models.registry import DEFAULT_MODEL, TINY_MODELS
from atlas_core.sites import dims
from atlas_core.work import FlopModel

CONFIG_DIR = Path(__file__).resolve().parent.parent / "data" / "plan_configs"


def shipped_plan_configs() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


@dataclass(frozen=True)
class Shape:
    """The facts of a model that the plan reads, from the meta-device model."""

    name: str
    family: str  # model_type
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_model: int
    intermediate: int
    vocab: int
    params: int  # every parameter, tied ones once
    flop: FlopModel  # work.py's coefficients


@dataclass
class PlanModel:
    shape: Shape
    model: nn.Module  # on the meta device
    tokenizer: object | None  # the model's own, or None (a stand-in is chosen by the caller)


def shape_of(name: str, model: nn.Module) -> Shape:
    cfg = text_config(model)
    d = dims(model)
    return Shape(
        name=name,
        family=cfg.model_type,
        n_layers=d.n_layers,
        n_heads=d.n_heads,
        n_kv_heads=getattr(cfg, "num_key_value_heads", None) or d.n_heads,
        head_dim=d.head_dim,
        d_model=d.d_model,
        intermediate=getattr(cfg, "intermediate_size", None) or 4 * d.d_model,
        vocab=cfg.vocab_size,
        params=sum(p.numel() for p in model.parameters()),
        flop=FlopModel.of(model),
    )


def on_meta(config) -> nn.Module:
    """The stock CausalLM of ``config`` on the meta device: shapes only, nothing allocated."""
    from transformers import AutoModelForCausalLM

    check_supported(config)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def _from_dict(data: dict, where: str):
    from transformers import AutoConfig

    data = {k: v for k, v in data.items() if k not in ("architectures", "_name_or_path", "transformers_version")}
    if "model_type" not in data:
        raise AtlasError(f"{where} has no model_type; it must be a Hugging Face config.json")
    try:
        return AutoConfig.for_model(data.pop("model_type"), **data)
    except (ValueError, TypeError, KeyError) as e:
        raise AtlasError(f"{where}: not a config transformers can build ({e})") from None


def _read_config(path: Path):
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise AtlasError(f"cannot read {path} as a config.json ({e})") from None
    if not isinstance(data, dict):
        raise AtlasError(f"{path} is not a JSON object; pass a Hugging Face config.json")
    return _from_dict(data, str(path))


def resolve(ref: str) -> PlanModel:
    """``ref`` built on the meta device, with its own tokenizer where this machine has it."""
    from atlas_core.models import OFFLINE_MODELS, is_cached

    if ref in OFFLINE_MODELS:
        from atlas_core.models.skeleton import shipped_config

        model = on_meta(_from_dict(shipped_config(ref), f"the shipped config of {ref}"))
        return PlanModel(shape_of(ref, model), model, _cached_tokenizer(ref) if is_cached(ref) else None)
    if ref in TINY_MODELS:
        from atlas_core.models.tiny import tiny_family_config, tiny_tokenizer

        tok = tiny_tokenizer()
        model = on_meta(tiny_family_config(ref.removeprefix("tiny-"), len(tok)))
        return PlanModel(shape_of(ref, model), model, tok)
    if ref in shipped_plan_configs():
        model = on_meta(_read_config(CONFIG_DIR / f"{ref}.json"))
        return PlanModel(shape_of(ref, model), model, None)
    path = Path(ref).expanduser()
    if path.is_dir():
        path = path / "config.json"
    if path.is_file():
        model = on_meta(_read_config(path))
        return PlanModel(shape_of(ref, model), model, None)
    known = [*OFFLINE_MODELS, *TINY_MODELS, *shipped_plan_configs()]
    raise AtlasError(
        f"unknown model {ref!r}: pass a registered or tiny model, a shipped plan config, or a path to a "
        f"Hugging Face config.json (or its folder); known names: {', '.join(known)}"
    )


def _cached_tokenizer(name: str):
    from transformers import AutoTokenizer

    from atlas_core.models import cache_dir

    return AutoTokenizer.from_pretrained(str(cache_dir(name)))


def stand_in_tokenizer(name: str | None) -> tuple[object, str]:
    """The tokenizer that counts prompt tokens for a model without its own here: ``name`` (a tiny or cached
    registered model), default the default model's."""
    from atlas_core.models import OFFLINE_MODELS, is_cached

    name = name or DEFAULT_MODEL
    if name in TINY_MODELS:
        from atlas_core.models.tiny import tiny_tokenizer

        return tiny_tokenizer(), name
    if name in OFFLINE_MODELS:
        if not is_cached(name):
            raise AtlasError(
                f"the stand-in tokenizer {name} is not cached: run `atlas models fetch {name}`, or pass "
                "--tokenizer tiny-qwen2 (byte-level: about 3x the tokens of a BPE vocabulary)"
            )
        return _cached_tokenizer(name), name
    raise AtlasError(
        f"--tokenizer {name!r} is neither a registered nor a tiny model; known: "
        f"{', '.join([*OFFLINE_MODELS, *TINY_MODELS])}"
    )
