"""The weights of ``planted-<layout>`` (:mod:`atlas_core.models.planted`), set by hand through each family's module
layout, the unplanted negative control, and the folder a planted model is loaded from (weights, ``planted.json``
and its task families). Apart from the layout and the specification, which need no torch model."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import transformers

from atlas_core import AtlasError
from atlas_core.models.planted import (
    ANSWERS,
    CHARS,
    D_FF,
    D_MODEL,
    DIGITS,
    DRIVE,
    FAMILIES,
    HEAD_DIM,
    HEADS,
    KV_HEADS,
    LOWER,
    N_LAYERS,
    PLANTED_MODELS,
    QK,
    RECALL,
    UPPER,
    L,
    plant_positions,
    specification,
)
from atlas_core.models.planted_tasks import write_tasks
from atlas_core.models.tiny import tiny_tokenizer


def config(layout: str, vocab_size: int, n_layers: int = N_LAYERS) -> transformers.PretrainedConfig:
    """The stock config of ``planted-<layout>``: rotary angles negligible in the query/key dimensions used
    (Llama: rope_theta 1e12; GPT-NeoX: a quarter of each head rotates, content sits above it), learned
    positions unused (GPT-2: zero), the LM head untied from the embedding."""
    pad = vocab_size - 1
    common = dict(
        vocab_size=vocab_size, pad_token_id=pad, eos_token_id=pad, bos_token_id=pad, tie_word_embeddings=False
    )
    if layout == "llama":
        return transformers.LlamaConfig(
            **common,
            hidden_size=D_MODEL,
            intermediate_size=D_FF,
            num_hidden_layers=n_layers,
            num_attention_heads=HEADS,
            num_key_value_heads=KV_HEADS,
            head_dim=HEAD_DIM,
            max_position_embeddings=256,
            rope_theta=1e12,
            rms_norm_eps=1e-6,
        )
    if layout == "gpt2":
        return transformers.GPT2Config(
            **common,
            n_embd=D_MODEL,
            n_layer=n_layers,
            n_head=HEADS,
            n_positions=256,
            n_inner=D_FF,
            layer_norm_epsilon=1e-6,
            activation_function="gelu_new",
        )
    if layout == "gpt-neox":
        return transformers.GPTNeoXConfig(
            **common,
            hidden_size=D_MODEL,
            intermediate_size=D_FF,
            num_hidden_layers=n_layers,
            num_attention_heads=HEADS,
            max_position_embeddings=256,
            rotary_pct=0.25,
            use_parallel_residual=True,
            layer_norm_eps=1e-6,
            hidden_act="gelu",
        )
    raise AtlasError(f"no planted model of layout {layout!r}; planted models: {', '.join(PLANTED_MODELS)}")


# scales per layout (measured: copy and recall answers at p ~ 0.9, the hub's at p ~ 0.999; see the tests)
ATTN_Q = 3.0  # content query/key weight
SINK_Q = 2.0  # the sink query/key weight
SCALES = {
    "llama": dict(
        copy=0.2,
        hub=2.0,
        recall_in=2.0,
        recall=0.045,
        steer_in=2.0,
        steer=0.6,
        unembed=1.3,
        serial_in=4.0,
        serial=0.012,
    ),
    "gpt2": dict(
        copy=0.2, hub=2.0, recall_in=2.0, recall=0.23, steer_in=2.0, steer=3.0, unembed=1.3, serial_in=4.0, serial=0.12
    ),
    "gpt-neox": dict(
        copy=0.2, hub=2.0, recall_in=2.0, recall=0.23, steer_in=2.0, steer=3.0, unembed=1.3, serial_in=4.0, serial=0.12
    ),
}


def _token(tok, c: str) -> int:
    ids = tok.encode(c, add_special_tokens=False)
    if len(ids) != 1:
        raise AtlasError(f"planted tokenizer: {c!r} is not one token")
    return ids[0]


class _Writer:
    """Sets one weight of a planted model by what it means (query dim j of head h reads coordinate c, ...),
    whatever the family's module layout: Llama's separate projections, GPT-2's fused Conv1D ``c_attn``
    (input-major), GPT-NeoX's fused ``query_key_value`` (per head: query, key, value)."""

    def __init__(self, model, layout: str):
        self.m, self.layout = model, layout
        self.kv_heads = KV_HEADS if layout == "llama" else HEADS

    def layer(self, i):
        return (
            self.m.model.layers
            if self.layout == "llama"
            else self.m.transformer.h
            if self.layout == "gpt2"
            else self.m.gpt_neox.layers
        )[i]

    def qkv(self, i: int, part: int, head: int, j: int, coord: int, value: float) -> None:
        """part 0 query (query head), 1 key, 2 value (KV head); row ``j`` of the head reads ``coord``."""
        lay = self.layer(i)
        if self.layout == "llama":
            proj = (lay.self_attn.q_proj, lay.self_attn.k_proj, lay.self_attn.v_proj)[part]
            proj.weight[head * HEAD_DIM + j, coord] = value
        elif self.layout == "gpt2":
            lay.attn.c_attn.weight[coord, part * D_MODEL + head * HEAD_DIM + j] = value
        else:
            lay.attention.query_key_value.weight[head * 3 * HEAD_DIM + part * HEAD_DIM + j, coord] = value

    def out(self, i: int, head: int, j: int, coord: int, value: float) -> None:
        lay = self.layer(i)
        if self.layout == "llama":
            lay.self_attn.o_proj.weight[coord, head * HEAD_DIM + j] = value
        elif self.layout == "gpt2":
            lay.attn.c_proj.weight[head * HEAD_DIM + j, coord] = value
        else:
            lay.attention.dense.weight[coord, head * HEAD_DIM + j] = value

    def mlp_in(self, i: int, neuron: int, coord: int, value: float) -> None:
        lay = self.layer(i)
        if self.layout == "llama":
            lay.mlp.gate_proj.weight[neuron, coord] = value
        elif self.layout == "gpt2":
            lay.mlp.c_fc.weight[coord, neuron] = value
        else:
            lay.mlp.dense_h_to_4h.weight[neuron, coord] = value

    def mlp_up(self, i: int, neuron: int, coord: int, value: float) -> None:
        """Llama's gated MLP multiplies by an up projection; GPT-2's and GPT-NeoX's have none."""
        if self.layout == "llama":
            self.layer(i).mlp.up_proj.weight[neuron, coord] = value

    def mlp_out(self, i: int, neuron: int, coord: int, value: float) -> None:
        lay = self.layer(i)
        if self.layout == "llama":
            lay.mlp.down_proj.weight[coord, neuron] = value
        elif self.layout == "gpt2":
            lay.mlp.c_proj.weight[neuron, coord] = value
        else:
            lay.mlp.dense_4h_to_h.weight[coord, neuron] = value

    def embed(self):
        return self.m.get_input_embeddings().weight

    def unembed(self):
        return self.m.get_output_embeddings().weight


def _head(w: _Writer, i: int, query: int | None, key: int, values: dict[int, int], out: dict[int, int], heads, scale):
    """Query heads ``heads`` of layer ``i`` attend from positions holding ``query`` to those holding ``key``
    (else to the sink), read ``values`` (head dim -> coordinate) and write ``out`` (head dim -> output
    coordinate) times ``scale``; query heads outside ``heads`` of the same KV groups attend to the sink."""
    group = HEADS // w.kv_heads
    for g in sorted({h // group for h in heads}):
        w.qkv(i, 1, g, QK, key, ATTN_Q)
        w.qkv(i, 1, g, QK + 1, L.ch("^"), SINK_Q)
        for j, c in values.items():
            w.qkv(i, 2, g, j, c, 1.0)
        for h in range(g * group, (g + 1) * group):
            w.qkv(i, 0, h, QK + 1, L.flag("ONES"), SINK_Q)
    for h in heads:
        if query is not None:
            w.qkv(i, 0, h, QK, query, ATTN_Q)
        for j, c in out.items():
            w.out(i, h, j, c, scale)


def build_planted(layout: str = "llama", seed: int = 0):
    """The planted model of ``layout`` at ``seed`` and its tokenizer (deterministic, no randomness in weights)."""
    tok = tiny_tokenizer()
    cfg = config(layout, len(tok))
    pos = plant_positions(seed)
    sc = SCALES[layout]
    model = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    w = _Writer(model, layout)
    with torch.no_grad():
        for name, p in model.named_parameters():
            norm = "norm" in name or "ln_" in name
            p.fill_(1.0 if norm and name.endswith("weight") else 0.0)  # norms multiply by one, every bias is 0
        emb = w.embed()
        emb[:, L.flag("ONES")] = 1.0
        for c in CHARS:
            t = _token(tok, c)
            emb[t, L.ch(c)] = 1.0
            for flag, chars in (("UPPER", UPPER), ("LOWER", LOWER), ("DIGIT", DIGITS)):
                if c in chars:
                    emb[t, L.flag(flag)] = 1.0
        for a in ANSWERS:
            w.unembed()[_token(tok, a), L.out(a)] = sc["unembed"]

        # copy: the query head at '?' attends to the uppercase letter and writes its lowercase answer
        _head(
            w,
            pos.copy,
            L.ch("?"),
            L.flag("UPPER"),
            {i: L.ch(UPPER[i]) for i in range(16)},
            {i: L.out(LOWER[i]) for i in range(16)},
            [pos.copy_head],
            sc["copy"],
        )
        # hub: every head at '!' attends to the lowercase letters and writes the next letter, a quarter each
        _head(
            w,
            pos.hub,
            L.ch("!"),
            L.flag("LOWER"),
            {i: L.ch(LOWER[i]) for i in range(16)},
            {i: L.out(LOWER[(i + 1) % 16]) for i in range(16)},
            list(range(HEADS)),
            sc["hub"],
        )
        # recall: neuron i fires on digit i (its one-hot and the digit flag against ONES) and writes its value
        for i, d in enumerate(DIGITS):
            w.mlp_in(pos.recall, i, L.ch(d), sc["recall_in"])
            w.mlp_in(pos.recall, i, L.flag("DIGIT"), sc["recall_in"])
            w.mlp_in(pos.recall, i, L.flag("ONES"), -1.5 * sc["recall_in"])
            w.mlp_up(pos.recall, i, L.ch(d), 1.0)
            w.mlp_out(pos.recall, i, L.out(RECALL[d]), sc["recall"])
        # steer: silent on the clean run (y - ONES is 0 exactly on a 'y'), raises "Y" when y outweighs ONES
        w.mlp_in(pos.steer, 0, L.ch("y"), sc["steer_in"])
        w.mlp_in(pos.steer, 0, L.flag("ONES"), -sc["steer_in"])
        w.mlp_up(pos.steer, 0, L.ch("y"), 1.0)
        w.mlp_out(pos.steer, 0, L.out("Y"), sc["steer"])
        # serial: one head at '#' attends to the '#' and writes GATE; the same layer's MLP reads GATE and writes
        # "Z". A serial block's MLP reads what its attention wrote, so the layer answers planted_serial; a parallel
        # block's (GPT-NeoX) reads the layer's input, where GATE is 0: its MLP stays exactly silent (gelu(0),
        # silu(0) * 0) and the layer changes no output at all
        _head(w, pos.serial, L.ch("#"), L.ch("#"), {0: L.ch("#")}, {0: L.flag("GATE")}, [pos.serial_head], 1.0)
        w.mlp_in(pos.serial, 0, L.flag("GATE"), sc["serial_in"])
        w.mlp_up(pos.serial, 0, L.flag("GATE"), 1.0)
        w.mlp_out(pos.serial, 0, L.out("Z"), sc["serial"])
        _zero_sum(model, layout)
    for p in model.parameters():
        p.requires_grad_(False)
    return model, tok


def _zero_sum(model, layout: str) -> None:
    """Make every weight that reads the (normed) residual sum to zero over its inputs, the remainder read from
    ``ZERO``, a coordinate no token sets. LayerNorm subtracts the position's mean from every coordinate; a
    zero-sum reader cancels that shift exactly, so an absent coordinate reads as 0 in GPT-2 and GPT-NeoX as
    it does under Llama's RMSNorm (where ``ZERO`` stays 0 and nothing changes)."""
    z = L.flag("ZERO")
    readers = [model.get_output_embeddings().weight]
    for name, mod in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if leaf in ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj", "query_key_value", "dense_h_to_4h"):
            readers.append(mod.weight)  # [out, in]
        elif leaf in ("c_attn", "c_fc"):
            readers.append(mod.weight.T)  # Conv1D: [in, out]
    for wt in readers:
        wt[:, z] = 0.0
        wt[:, z] = -wt.sum(1)


def build_unplanted(layout: str = "llama", seed: int = 0):
    """The negative control: the same architecture, tokenizer and size with random weights."""
    tok = tiny_tokenizer()
    cfg = config(layout, len(tok))
    cfg.initializer_range = 0.2
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    return model, tok


def materialize(name: str, seed: int = 0, root: Path | None = None) -> Path:
    """Write ``planted-<layout>`` (seed ``seed``) as a Hugging Face folder with ``planted.json`` beside its
    config and its task families under ``tasks/``; rewritten only when its contents differ."""
    from atlas_core.models.offline import cache_root

    layout = name.removeprefix("planted-")
    if name not in PLANTED_MODELS:
        raise AtlasError(f"unknown planted model {name!r}; planted models: {', '.join(PLANTED_MODELS)}")
    folder = (root or cache_root() / "planted") / f"{name}-s{seed}"
    spec = specification(layout, seed)
    marker = folder / "planted.json"
    text = json.dumps(spec, indent=1) + "\n"
    if not (marker.is_file() and marker.read_text() == text and (folder / "model.safetensors").is_file()):
        model, tok = build_planted(layout, seed)
        folder.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
        marker.write_text(text)
    write_tasks(folder / "tasks")
    return folder


def run_defaults(model: str) -> dict | None:
    """For a planted model: its task folder, its families and what steering and knockout drive."""
    if model not in PLANTED_MODELS:
        return None
    folder = materialize(model)
    return {"tasks": folder / "tasks", "families": list(FAMILIES), "drive": dict(DRIVE)}
