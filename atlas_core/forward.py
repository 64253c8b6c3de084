"""Prompt encoding and the plain stock forward: what the runner builds on and what its results are checked against.

- ``encode``: prompts tokenized and left-padded to one length, with attention masks and position ids.
- ``logprobs_of_hidden``: last hidden states through the LM head (with the model's final logit softcap) to fp32
  log-probabilities.
- ``plain_logprobs``: the stock CausalLM forward, the reference path; ``naive_logprobs``: one hooked stock forward
  per variant, the baseline a sweep replaces.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from atlas_core import AtlasError
from atlas_core.interventions import Variant, intervene
from atlas_core.models.adapters import lm_head, text_config


@dataclass
class Encoded:
    """Prompts tokenized and left-padded to one length."""

    input_ids: torch.Tensor  # [P, T]
    attention_mask: torch.Tensor  # [P, T]
    position_ids: torch.Tensor  # [P, T]
    lengths: list[int]

    @property
    def n(self) -> int:
        return self.input_ids.shape[0]

    @property
    def seq(self) -> int:
        return self.input_ids.shape[1]


def check_prompts(prompts: Sequence[str]) -> list[str]:
    prompts = list(prompts)
    if not prompts:
        raise AtlasError("empty prompt set: pass at least one prompt (check the task family selection)")
    for i, p in enumerate(prompts):
        if not isinstance(p, str) or not p:
            raise AtlasError(f"prompt {i} is empty or not a string: {p!r}")
    return prompts


def encode(tokenizer, prompts: Sequence[str], device: torch.device | str = "cpu") -> Encoded:
    prompts = check_prompts(prompts)
    ids = [tokenizer(p)["input_ids"] for p in prompts]
    for p, row in zip(prompts, ids):
        if not row:
            raise AtlasError(f"prompt {p!r} tokenizes to nothing")
    seq = max(map(len, ids))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.full((len(ids), seq), pad, dtype=torch.long)
    mask = torch.zeros((len(ids), seq), dtype=torch.long)
    for i, row in enumerate(ids):
        input_ids[i, seq - len(row) :] = torch.tensor(row)
        mask[i, seq - len(row) :] = 1
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    return Encoded(input_ids.to(device), mask.to(device), position_ids.to(device), [len(r) for r in ids])


def logprobs_of_hidden(model: nn.Module, hidden_last: torch.Tensor) -> torch.Tensor:
    """fp32 log-probabilities from final hidden states (after the final norm), softcapped as the model does."""
    logits = lm_head(model)(hidden_last).float()
    cap = getattr(text_config(model), "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return F.log_softmax(logits, dim=-1)


def plain_logprobs(model: nn.Module, enc: Encoded) -> torch.Tensor:
    """The stock CausalLM forward, all positions, last position's log-probs (the reference path)."""
    with torch.inference_mode():
        out = model(
            input_ids=enc.input_ids, attention_mask=enc.attention_mask, position_ids=enc.position_ids, use_cache=False
        )
    return F.log_softmax(out.logits[:, -1].float(), dim=-1)


def naive_logprobs(model: nn.Module, tokenizer, prompts: Sequence[str], variants: Sequence[Variant]) -> torch.Tensor:
    """The baseline a sweep replaces: one hooked stock forward per variant over all positions."""
    enc = encode(tokenizer, prompts, next(model.parameters()).device)
    return torch.stack([_naive_one(model, enc, v) for v in variants])


def _naive_one(model, enc, variant):
    with intervene(model, variant.interventions):
        return plain_logprobs(model, enc)
