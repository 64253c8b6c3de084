"""Addressing: which activation of which layer an intervention reads or writes.

Sites, all at decoder layer ``layer``:
- ``resid``: the residual stream after the layer (the layer's whole output hidden state);
- ``delta``: the block's write, its change to the residual (output minus input);
- ``attn``: the attention's write to the residual;
- ``mlp``: the MLP's write to the residual;
- ``head``: one query head's output, at the input of the attention output projection, where each
  query head owns a ``head_dim`` slice: exact under grouped-query attention and fused QKV.

What each site is in each family (module paths inside a decoder layer; see ``models/adapters.py``):

| family | block | ``attn`` | ``mlp`` | ``head`` (input slice of) |
|---|---|---|---|---|
| Qwen2, Llama, Mistral, Qwen3 | pre-norm, serial | ``self_attn`` output | ``mlp`` output | ``self_attn.o_proj`` |
| Phi-3 | pre-norm, serial | ``resid_attn_dropout`` output | ``resid_mlp_dropout`` output | ``self_attn.o_proj`` |
| Gemma 2, Gemma 3 | sandwich norms, serial | ``post_attention_layernorm`` output | ``post_feedforward_layernorm`` output | ``self_attn.o_proj`` |
| OLMo 2 | post-norm, serial | ``post_attention_layernorm`` output | ``post_feedforward_layernorm`` output | ``self_attn.o_proj`` |
| GPT-2 | pre-norm, serial | ``attn`` output | ``mlp`` output | ``attn.c_proj`` (Conv1D) |
| GPT-NeoX / Pythia | pre-norm, parallel | ``post_attention_dropout`` output | ``post_mlp_dropout`` output | ``attention.dense`` |

In a serial block ``delta = attn + mlp`` where the MLP reads the residual after the attention's write, so
ablating ``attn`` also changes what the MLP sees. In a parallel block (GPT-NeoX with
``use_parallel_residual``, as Pythia) attention and MLP both read the layer's input and one update adds
both: ``delta = attn + mlp`` with neither seeing the other, so ablating ``attn`` leaves the MLP's write as
it was. In every family zeroing both ``attn`` and ``mlp`` equals ``Skip`` (zeroing ``delta``).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from atlas_core import AtlasError
from atlas_core.models.adapters import hidden_arg, adapter_for, layer_part, layers, text_config

SITE_KINDS = ("resid", "delta", "attn", "mlp", "head")

# fn(act) -> replacement (same shape) or None to leave it; act is [batch, seq, width]
ActFn = Callable[[torch.Tensor], torch.Tensor | None]


@dataclass(frozen=True)
class Site:
    kind: str
    layer: int
    head: int | None = None

    def __str__(self) -> str:
        return f"L{self.layer}.{self.kind}" + (f".H{self.head}" if self.head is not None else "")


@dataclass(frozen=True)
class Dims:
    n_layers: int
    n_heads: int
    head_dim: int
    d_model: int


def dims(model: nn.Module) -> Dims:
    cfg = text_config(model)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return Dims(len(layers(model)), cfg.num_attention_heads, head_dim, cfg.hidden_size)


def _is_index(x) -> bool:
    """An integer index (numpy integers included, e.g. from ``argmax``; booleans excluded)."""
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def check_layer(layer: int, d: Dims, what: str = "layer") -> None:
    if not _is_index(layer) or not 0 <= layer < d.n_layers:
        raise AtlasError(f"{what} {layer!r} out of range: the model has layers 0..{d.n_layers - 1}")


def validate_site(site: Site, d: Dims) -> None:
    if site.kind not in SITE_KINDS:
        raise AtlasError(f"unknown site {site.kind!r}; sites are {', '.join(SITE_KINDS)}")
    check_layer(site.layer, d)
    if site.kind == "head":
        if not _is_index(site.head) or not 0 <= site.head < d.n_heads:
            raise AtlasError(f"head {site.head!r} out of range at {site}: the model has heads 0..{d.n_heads - 1}")
    elif site.head is not None:
        raise AtlasError(f"site {site.kind!r} takes no head (got head={site.head}); use kind 'head'")


def width(site: Site, d: Dims) -> int:
    return d.head_dim if site.kind == "head" else d.d_model


def _first(output):
    return output[0] if isinstance(output, tuple) else output


def _replace_first(output, new):
    return (new, *output[1:]) if isinstance(output, tuple) else new


def site_hook(model: nn.Module, site: Site, fn: ActFn) -> tuple[nn.Module, str, Callable]:
    """A hook spec (module, kind, hook) that shows ``fn`` the site's activation and writes back what
    it returns. ``fn`` may modify its argument in place and return it."""
    adapter = adapter_for(model)
    if site.kind == "resid":

        def hook(module, args, kwargs, output):
            new = fn(_first(output))
            return None if new is None else _replace_first(output, new)

        return layers(model)[site.layer], "forward", hook
    if site.kind == "delta":

        def hook(module, args, kwargs, output):
            inp = hidden_arg(args, kwargs)
            out = _first(output)
            new = fn(out - inp)
            return None if new is None else _replace_first(output, inp + new)

        return layers(model)[site.layer], "forward", hook
    if site.kind in ("attn", "mlp"):
        path = adapter.attn_write if site.kind == "attn" else adapter.mlp_write

        def hook(module, args, kwargs, output):
            new = fn(_first(output))
            return None if new is None else _replace_first(output, new)

        return layer_part(model, site.layer, path), "forward", hook
    if site.kind == "head":
        d = dims(model)
        lo, hi = site.head * d.head_dim, (site.head + 1) * d.head_dim

        def pre_hook(module, args, kwargs):
            x = args[0] if args else kwargs["input"]
            new = fn(x[..., lo:hi])
            if new is None:
                return None
            x = x.clone() if torch.is_grad_enabled() else x
            x[..., lo:hi] = new
            return ((x, *args[1:]), kwargs) if args else (args, {**kwargs, "input": x})

        return layer_part(model, site.layer, adapter.o_proj), "pre", pre_hook
    raise AtlasError(f"unknown site {site.kind!r}; sites are {', '.join(SITE_KINDS)}")
