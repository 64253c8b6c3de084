"""``tiny-<family>``: deterministic, randomly initialised stock models of each supported family, for fast tests.

``tiny-qwen2`` is the stock ``Qwen2ForCausalLM`` (grouped-query attention, RMSNorm, rotary) at small
sizes; ``tiny-gpt2``, ``tiny-gpt-neox``, ``tiny-phi3``, ``tiny-gemma2``, ``tiny-gemma3``, ``tiny-olmo2``,
``tiny-llama``, ``tiny-mistral`` and ``tiny-qwen3`` are the other families, each built from transformers'
own config class (4 layers, d_model 64; Gemma and Mistral with a 4-token sliding window so that
windowed layers differ from global ones on real prompts; Gemma 2 with soft-capping at 5 so that it
changes the logits). All share a byte-level BPE tokenizer built in memory (no download): one token per
byte, vocabulary 257.
"""

from __future__ import annotations

from typing import Callable

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoModelForCausalLM, PretrainedConfig, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from atlas_core import AtlasError
from atlas_core.models.registry import TINY_FAMILIES, TINY_MODELS

PAD = "<|endoftext|>"


def _byte_alphabet() -> list[str]:
    """The GPT-2 byte-to-unicode alphabet (256 printable characters, one per byte)."""
    return pre_tokenizers.ByteLevel.alphabet()


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {ch: i for i, ch in enumerate(sorted(_byte_alphabet()))}
    vocab[PAD] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=PAD, pad_token=PAD)


def tiny_config(vocab_size: int, n_layers: int = 4) -> Qwen2Config:
    return Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        rms_norm_eps=1e-6,
        initializer_range=0.2,
        tie_word_embeddings=False,
        pad_token_id=vocab_size - 1,
        eos_token_id=vocab_size - 1,
        bos_token_id=vocab_size - 1,
    )


def build_tiny_qwen2(seed: int = 0, n_layers: int = 4) -> tuple[Qwen2ForCausalLM, PreTrainedTokenizerFast]:
    """Same seed, same weights: the global RNG is forked so callers' randomness is untouched."""
    tokenizer = tiny_tokenizer()
    config = tiny_config(len(tokenizer), n_layers)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    return model.eval(), tokenizer


def _shared(vocab_size: int) -> dict:
    pad = vocab_size - 1
    return dict(vocab_size=vocab_size, pad_token_id=pad, eos_token_id=pad, bos_token_id=pad, initializer_range=0.2)


def _llama_like(vocab_size: int, n_layers: int) -> dict:
    return dict(
        **_shared(vocab_size),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
    )


def _alternating(n_layers: int) -> list[str]:
    return ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(n_layers)]


# family -> (config class name, keyword arguments for n layers); every class is transformers' own.
_FAMILIES: dict[str, tuple[str, Callable[[int, int], dict]]] = {
    "gpt2": ("GPT2Config", lambda v, n: dict(**_shared(v), n_embd=64, n_layer=n, n_head=4, n_positions=512)),
    "gpt-neox": (
        "GPTNeoXConfig",
        lambda v, n: dict(
            **_shared(v),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=n,
            num_attention_heads=4,
            max_position_embeddings=512,
            rotary_pct=0.25,
            use_parallel_residual=True,
        ),
    ),
    "phi3": ("Phi3Config", lambda v, n: dict(**_llama_like(v, n), original_max_position_embeddings=512)),
    "gemma2": (
        "Gemma2Config",
        lambda v, n: dict(
            **_llama_like(v, n),
            head_dim=16,
            query_pre_attn_scalar=16,
            sliding_window=4,
            layer_types=_alternating(n),
            final_logit_softcapping=5.0,
            attn_logit_softcapping=5.0,
        ),
    ),
    "gemma3": (
        "Gemma3TextConfig",
        lambda v, n: dict(
            **_llama_like(v, n), head_dim=16, query_pre_attn_scalar=16, sliding_window=4, layer_types=_alternating(n)
        ),
    ),
    "olmo2": ("Olmo2Config", lambda v, n: dict(**_llama_like(v, n))),
    "llama": ("LlamaConfig", lambda v, n: dict(**_llama_like(v, n))),
    "mistral": ("MistralConfig", lambda v, n: dict(**_llama_like(v, n), sliding_window=4)),
    "qwen3": ("Qwen3Config", lambda v, n: dict(**_llama_like(v, n), head_dim=16)),
}

assert set(TINY_FAMILIES) == {"qwen2", *_FAMILIES}, "registry.TINY_FAMILIES and tiny._FAMILIES disagree"


def tiny_family_config(family: str, vocab_size: int, n_layers: int = 4) -> PretrainedConfig:
    """The config of ``tiny-<family>`` (transformers' own config class; nothing is downloaded)."""
    if family == "qwen2":
        return tiny_config(vocab_size, n_layers)
    if family not in _FAMILIES:
        raise AtlasError(f"no tiny model of family {family!r}; tiny models: {', '.join(TINY_MODELS)}")
    cls, kwargs = _FAMILIES[family]
    return getattr(transformers, cls)(**kwargs(vocab_size, n_layers))


def build_tiny(family: str, seed: int = 0, n_layers: int = 4):
    """``tiny-<family>``: same family and seed, same weights (the global RNG is forked)."""
    if family == "qwen2":
        return build_tiny_qwen2(seed, n_layers)
    tokenizer = tiny_tokenizer()
    config = tiny_family_config(family, len(tokenizer), n_layers)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
    return model.eval(), tokenizer
