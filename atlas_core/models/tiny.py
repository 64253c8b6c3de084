"""``tiny-qwen2``: a deterministic, randomly initialised Qwen2 of the real architecture, for fast tests.

It is the stock ``Qwen2ForCausalLM`` (grouped-query attention, RMSNorm, rotary) at small sizes, with
a byte-level BPE tokenizer that is built in memory (no download): one token per byte.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

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
