"""Architecture adapters: where a stock Hugging Face causal LM keeps the parts Atlas intervenes on.

Atlas never re-implements an architecture. An adapter only names modules of the stock model: the
decoder layers, each layer's attention (and its output projection, whose input holds one slice per
query head), the module whose output is the attention's write to the residual, the same for the MLP,
the final norm and the LM head. One declaration per layout; ``sites.py`` tabulates what each site is
in each family.
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
    o_proj: str = "self_attn.o_proj"  # its input: one head_dim slice per query head, head-major
    mlp: str = "mlp"
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    layers: str = "layers"  # attribute of the decoder stack holding the decoder layers
    final_norm: str = "norm"  # attribute of the decoder stack holding the final norm
    parallel: bool = False  # attention and MLP read the same input; the block adds both writes at once
    fan_in_fan_out: bool = False  # projections store weights [in, out] (GPT-2's Conv1D); LoRA must know


ADAPTERS: tuple[ArchAdapter, ...] = (
    # Llama layout: pre-norm blocks, the attention and MLP outputs are added to the residual directly
    # (Qwen3 adds q/k norms and Mistral sliding windows, both inside the attention).
    ArchAdapter("llama-layout", ("qwen2", "llama", "mistral", "qwen3"), attn_write="self_attn", mlp_write="mlp"),
    # Phi-3: the Llama layout with fused qkv_proj and gate_up_proj; each write passes a residual dropout.
    ArchAdapter(
        "phi3",
        ("phi3",),
        attn_write="resid_attn_dropout",
        mlp_write="resid_mlp_dropout",
        lora_targets=("qkv_proj", "o_proj"),
    ),
    # Gemma 2 and 3: sandwich norms (pre- and post-norm around attention and MLP): the write is the post-norm's
    # output. Gemma 2 soft-caps attention logits (inside the attention) and final logits (see final_softcap).
    ArchAdapter(
        "gemma",
        ("gemma2", "gemma3_text", "gemma3"),
        attn_write="post_attention_layernorm",
        mlp_write="post_feedforward_layernorm",
    ),
    # OLMo 2: no pre-norm; a norm after attention and after the MLP, whose outputs are the writes.
    ArchAdapter("olmo2", ("olmo2",), attn_write="post_attention_layernorm", mlp_write="post_feedforward_layernorm"),
    # GPT-2: Conv1D projections (c_attn fused QKV, c_proj out), learned absolute positions, blocks under ``h``.
    ArchAdapter(
        "gpt2",
        ("gpt2",),
        attn_write="attn",
        mlp_write="mlp",
        attn="attn",
        o_proj="attn.c_proj",
        lora_targets=("attn.c_attn", "attn.c_proj"),
        layers="h",
        final_norm="ln_f",
        fan_in_fan_out=True,
    ),
    # GPT-NeoX / Pythia: fused query_key_value; with use_parallel_residual (Pythia) attention and MLP both read
    # the layer's input and one update adds both writes (each after its dropout).
    ArchAdapter(
        "gpt_neox",
        ("gpt_neox",),
        attn_write="post_attention_dropout",
        mlp_write="post_mlp_dropout",
        attn="attention",
        o_proj="attention.dense",
        lora_targets=("attention.query_key_value", "attention.dense"),
        final_norm="final_layer_norm",
        parallel=True,
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


def _inner(model: nn.Module) -> nn.Module:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def decoder(model: nn.Module) -> nn.Module:
    """The stock decoder stack (``model.model``, ``model.transformer``, ``model.gpt_neox``; unwraps a peft model)."""
    return _inner(model).get_decoder()


def layers(model: nn.Module) -> nn.ModuleList:
    return getattr(decoder(model), adapter_for(model).layers)


def lm_head(model: nn.Module) -> nn.Module:
    return _inner(model).get_output_embeddings()


def final_norm(model: nn.Module) -> nn.Module:
    return getattr(decoder(model), adapter_for(model).final_norm)


def embeddings(model: nn.Module) -> nn.Module:
    """The token embedding (the residual entering layer 0 is its output, plus learned positions for GPT-2)."""
    return decoder(model).get_input_embeddings()


def layer_part(model: nn.Module, layer: int, path: str) -> nn.Module:
    return _get(layers(model)[layer], path)


def text_config(model: nn.Module):
    config = model.config
    return getattr(config, "text_config", None) or config


def is_parallel(model: nn.Module) -> bool:
    """Whether attention and MLP read the same layer input (GPT-NeoX with ``use_parallel_residual``)."""
    return adapter_for(model).parallel and bool(getattr(text_config(model), "use_parallel_residual", True))


def final_softcap(model: nn.Module) -> float | None:
    """The final-logit soft-cap (Gemma 2: ``logits = cap * tanh(logits / cap)``), or None."""
    return getattr(text_config(model), "final_logit_softcapping", None) or None


def hidden_arg(args, kwargs):
    return args[0] if args else kwargs["hidden_states"]


def _with_hidden(args, kwargs, x):
    return ((x, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": x})


def entry_hook(model: nn.Module, fn) -> tuple[nn.Module, str, object]:
    """A hook spec that shows ``fn`` the residual entering layer 0 (after token and any learned position
    embeddings, and Gemma's embedding scale): the input of the first decoder layer, in every family. It only
    reads: whatever ``fn`` returns is dropped."""

    def hook(module, args, kwargs):
        fn(hidden_arg(args, kwargs))

    return layers(model)[0], "pre", hook


@contextmanager
def layer_window(model: nn.Module, start: int, end: int) -> Iterator[None]:
    """Run the stock forward over decoder layers ``start..end-1`` only.

    The stock forward loops over the decoder's layer list and indexes ``config.layer_types`` by position,
    so both are narrowed together. Inside the window, ``inputs_embeds`` passed to the decoder is the
    residual entering layer ``start``: it reaches that layer unchanged (the stock forward would add GPT-2's
    learned positions to it again). With it the window gives clean-prefix reuse (start > 0) and the logit
    lens (end < n_layers). Always restored.
    """
    dec = decoder(model)
    attr = adapter_for(model).layers
    full = getattr(dec, attr)
    config = dec.config
    types = getattr(config, "layer_types", None)
    n = len(full)
    if not 0 <= start < end <= n:
        raise AtlasError(f"layer window [{start}, {end}) out of range for a {n}-layer model")
    given: list = []

    def take(module, args, kwargs):
        given[:] = [kwargs.get("inputs_embeds")]

    def enter(module, args, kwargs):
        x = given[0] if given else None
        return None if x is None else _with_hidden(args, kwargs, x)

    handles = [
        dec.register_forward_pre_hook(take, with_kwargs=True),
        full[start].register_forward_pre_hook(enter, with_kwargs=True),
    ]
    if start > 0 or end < n:
        setattr(dec, attr, nn.ModuleList(full[start:end]))
        if types is not None:
            config.layer_types = list(types[start:end])
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        setattr(dec, attr, full)
        if types is not None:
            config.layer_types = types
