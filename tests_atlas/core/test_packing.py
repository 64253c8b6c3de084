"""Sequence packing (atlas_core.packing): the layout is a bijection on real tokens, and the stock decoder over
packed rows gives each prompt what it gives the prompt alone."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from atlas_core import AtlasError
from atlas_core.models.adapters import decoder
from atlas_core.packing import plan
from atlas_core.runner import Runner
from atlas_core.work import FlopModel, declared, forward_work, metering

PROMPTS = ["a", "hello there", "x = 1 + 2", "(())", "def f(x): return x", "ab", "q"]


@settings(max_examples=60, deadline=None)
@given(data=st.data(), lengths=st.lists(st.integers(1, 30), min_size=1, max_size=40), row_tokens=st.integers(1, 90))
def test_packing_moves_every_real_token_once_and_back(data, lengths, row_tokens):
    seq = max(lengths) + data.draw(st.integers(0, 3))
    pk = plan(lengths, seq, row_tokens)
    x = torch.randn(len(lengths), seq, 3)
    real = torch.arange(seq)[None, :] >= (seq - torch.tensor(lengths))[:, None]  # left padding
    packed = pk.pack(x)
    rows, width = pk.shape
    assert packed.shape == (rows, width, 3)
    # at most the rows the budget needs: where first fit leaves a sequence over, plan() widens the rows until it
    # fits, which can save a row (lengths [4, 4, 4, 4] at 6 tokens: 2 rows of 8, found by hypothesis)
    assert rows <= math.ceil(sum(lengths) / max(row_tokens, max(lengths)))
    back = pk.unpack(packed)
    assert torch.equal(back[real], x[real]) and not back[~real].any()
    # each sequence keeps its own positions from 0, and ``last`` finds its last token
    flat_pos = pk.position_ids.reshape(-1)
    for i, n in enumerate(lengths):
        assert torch.equal(packed.reshape(-1, 3)[pk.last[i]], x[i, -1])
        assert int(flat_pos[pk.last[i]]) == n - 1
    assert int((pk.src < len(lengths) * seq).sum()) == sum(lengths)  # the rest is filler


def test_bad_packing_requests_are_refused():
    with pytest.raises(AtlasError, match="at least one token"):
        plan([3, 2], 4, 0)
    with pytest.raises(AtlasError, match="cannot pack"):
        plan([5], 4, 8)


def _per_prompt_last_hidden(model, runner):
    out = []
    for i, n in enumerate(runner.enc.lengths):
        x = runner.residuals[0, i : i + 1, -n:]
        out.append(decoder(model)(inputs_embeds=x, use_cache=False).last_hidden_state[0, -1])
    return torch.stack(out)


def _packed_last_hidden(model, runner, positions):
    enc = runner.enc
    pk = plan(enc.lengths, enc.seq, 16)
    hidden = decoder(model)(
        inputs_embeds=pk.pack(runner.residuals[0]), position_ids=positions(pk), use_cache=False
    ).last_hidden_state
    return hidden.reshape(-1, hidden.shape[-1])[pk.last], pk


def test_the_stock_decoder_keeps_packed_sequences_apart(tiny):
    runner = Runner(tiny.model, tiny.tokenizer, PROMPTS)
    with torch.inference_mode():
        alone = _per_prompt_last_hidden(tiny.model, runner)
        packed, pk = _packed_last_hidden(tiny.model, runner, lambda pk: pk.position_ids)
    assert pk.shape[0] < len(PROMPTS)  # several prompts share a row
    torch.testing.assert_close(packed, alone, atol=1e-5, rtol=1e-5)


def test_packing_without_position_restarts_lets_sequences_see_each_other(tiny):
    """The check above can fail: numbered straight through, a row is one long sequence and the prompts
    attend to the ones before them."""
    runner = Runner(tiny.model, tiny.tokenizer, PROMPTS)

    def straight(pk):
        rows, width = pk.shape
        return torch.arange(width).expand(rows, width)

    with torch.inference_mode():
        alone = _per_prompt_last_hidden(tiny.model, runner)
        packed, _ = _packed_last_hidden(tiny.model, runner, straight)
    assert (packed - alone).abs().max() > 1e-2


def test_a_packed_forward_does_the_useful_work_of_the_padded_one_and_less_padding(tiny):
    runner = Runner(tiny.model, tiny.tokenizer, PROMPTS)
    enc = runner.enc
    fm = FlopModel.of(tiny.model)
    padded = forward_work(fm, enc.attention_mask, 4)
    pk = plan(enc.lengths, enc.seq, 16)
    x = pk.pack(runner.residuals[0])  # the clean pass runs here, outside the meter
    with metering(tiny.model) as w, declared(enc.lengths), torch.inference_mode():
        decoder(tiny.model)(inputs_embeds=x, position_ids=pk.position_ids, use_cache=False)
    assert w.flop == padded.flop and w.tokens == sum(enc.lengths)
    assert w.executed_flop < padded.executed_flop
