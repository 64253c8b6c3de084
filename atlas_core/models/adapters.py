"""Architecture adapters: where a stock Hugging Face causal LM keeps the parts Atlas intervenes on.

Atlas never re-implements an architecture. An adapter only names modules of the stock model: the
decoder layers, each layer's attention (and its output projection, whose input holds one slice per
query head), the module whose output is the attention's write to the residual, the same for the MLP,
the final norm and the LM head.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from torch import nn

from atlas_core import AtlasError


@dataclass(frozen=True)
class ArchAdapter:
    name: str
    model_types: tuple[str, ...]
    attn_write: str  # attribute path, inside a decoder layer, of the attention's write to the residual
    mlp_write: str  # attribute path, inside a decoder layer, of the MLP's write to the residual
    attn: str = "self_attn"
    o_proj: str = "self_attn.o_proj"
    mlp: str = "mlp"
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")


ADAPTERS: tuple[ArchAdapter, ...] = (
    # Llama layout: pre-norm blocks, the attention and MLP outputs are added to the residual directly.
    ArchAdapter("llama-layout", ("qwen2", "llama", "mistral", "qwen3"), attn_write="self_attn", mlp_write="mlp"),
    # Gemma 3 adds a norm after attention and after the MLP: the write is the post-norm's output.
    ArchAdapter(
        "gemma3", ("gemma3_text", "gemma3"), attn_write="post_attention_layernorm", mlp_write="post_feedforward_layernorm"
    ),
)


def supported_model_types() -> list[str]:
    return [t for a in ADAPTERS for t in a.model_types]


def check_supported(config) -> ArchAdapter:
    """The adapter for a config, or an error naming the supported architectures."""
    model_type = getattr(getattr(config, "text_config", None) or config, "model_type", None)
    for adapter in ADAPTERS:
        if model_type in adapter.model_types:
            return adapter
    raise AtlasError(
        f"unsupported architecture {model_type!r}; Atlas supports {', '.join(supported_model_types())}. "
        "Add an ArchAdapter in atlas_core/models/adapters.py naming its modules."
    )


def adapter_for(model: nn.Module) -> ArchAdapter:
    return check_supported(model.config)


def _get(module: nn.Module, path: str) -> nn.Module:
    for part in path.split("."):
        module = getattr(module, part)
    return module


def decoder(model: nn.Module) -> nn.Module:
    """The stock decoder stack (``model.model`` for a CausalLM; unwraps a peft model too)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return inner.get_decoder()


def layers(model: nn.Module) -> nn.ModuleList:
    return decoder(model).layers


def lm_head(model: nn.Module) -> nn.Module:
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return inner.get_output_embeddings()


def final_norm(model: nn.Module) -> nn.Module:
    return decoder(model).norm


def embeddings(model: nn.Module) -> nn.Module:
    return decoder(model).embed_tokens


def layer_part(model: nn.Module, layer: int, path: str) -> nn.Module:
    return _get(layers(model)[layer], path)


def text_config(model: nn.Module):
    config = model.config
    return getattr(config, "text_config", None) or config


@contextmanager
def layer_window(model: nn.Module, start: int, end: int) -> Iterator[None]:
    """Run the stock forward over decoder layers ``start..end-1`` only.

    The stock forward loops over ``self.layers`` and indexes ``config.layer_types`` by position, so
    both are narrowed together; used with ``inputs_embeds`` = the residual entering layer ``start`` it
    gives clean-prefix reuse (start > 0) and the logit lens (end < n_layers). Always restored.
    """
    dec = decoder(model)
    full = dec.layers
    config = dec.config
    types = getattr(config, "layer_types", None)
    n = len(full)
    if not 0 <= start < end <= n:
        raise AtlasError(f"layer window [{start}, {end}) out of range for a {n}-layer model")
    if start == 0 and end == n:
        yield
        return
    dec.layers = nn.ModuleList(full[start:end])
    if types is not None:
        config.layer_types = list(types[start:end])
    try:
        yield
    finally:
        dec.layers = full
        if types is not None:
            config.layer_types = types
