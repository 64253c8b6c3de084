"""``planted-<layout>``: stock Hugging Face models whose mechanisms are set by hand, so that what each
experiment must find is known by construction (a ground truth for the atlas's statistics). Three layouts:
``planted-llama`` (``LlamaForCausalLM``, serial pre-norm block, RMSNorm, grouped-query attention with 2 KV
heads for 4 query heads), ``planted-gpt2`` (``GPT2LMHeadModel``: Conv1D, fused ``c_attn``, learned positions
set to zero) and ``planted-gpt-neox`` (``GPTNeoXForCausalLM``: parallel block, fused ``query_key_value``).
The same seed plants the same mechanisms at the same places in each; every reader of the residual sums to
zero over its inputs (:func:`_zero_sum`), so LayerNorm's mean subtraction reads an absent coordinate as 0.

The residual stream is laid out in named one-hot coordinates (``Layout``): one per character the task
families use, four flags (``ONES`` on every token, ``UPPER``, ``LOWER``, ``DIGIT``) and one output
coordinate per answer token; the LM head reads only the output coordinates. Every prompt starts with the
sink character ``^``: a head whose query carries nothing but ``ONES`` attends to it, and its value there is
zero, so an idle head writes (almost exactly) nothing. Rotary angles are made negligible (``rope_theta``
1e12, queries and keys in the slowest-rotating dimensions), so attention is by content.

A seed chooses where each mechanism sits (:func:`plant_positions`); every other layer's output projection
and MLP down projection are zero, so it is an exact identity on the residual:

- ``hub``: all heads of one layer together answer ``planted_hub`` ("^kkkk!" -> "l", the next letter),
  each head a quarter of the logit (no single head is strong), its answer the most confident of all;
- ``copy``: one query head answers ``planted_copy`` ("^ab C de?" -> "c", the marked letter lowered); the
  other query head of its grouped-query KV group attends to the sink and writes nothing;
- ``recall``: one MLP holds a key->value map (``planted_recall``: "^..@3" -> a letter per digit);
- ``steer``: one MLP reads the ``y`` coordinate against ``ONES`` (``planted_steer``: "..y" -> "Y"): silent
  on the clean run, so the mean item-minus-contrast direction (``y - z``) added at or before its layer
  raises "Y" and added after it moves nothing.

Steering drives ``planted_steer`` and knockout ``planted_recall`` (the run's ``drive`` settings). What each
experiment must find is written to ``planted.json`` beside the model's config (:func:`specification`),
and the planted claims are generated from it (:mod:`atlas_core.planted_claims`), never from a run.
"""

from __future__ import annotations

import json
import random
import string
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers

from atlas_core import AtlasError
from atlas_core.models.tiny import tiny_tokenizer

LAYOUTS = ("llama", "gpt2", "gpt-neox")  # stock families with a planted model
PLANTED_MODELS = tuple(f"planted-{layout}" for layout in LAYOUTS)
N_LAYERS = 8
D_MODEL, HEADS, KV_HEADS, HEAD_DIM, D_FF = 96, 4, 2, 24, 64
QK = 8  # first head dimension that does not rotate: Llama's frequency there is 1e-8 rad/position at rope_theta 1e12,
# GPT-NeoX rotates dims 0..5 only
FAMILIES = ("planted_copy", "planted_hub", "planted_recall", "planted_serial", "planted_steer")
PARALLEL = ("gpt-neox",)  # layouts whose MLP reads the layer's input, not what its attention wrote
DRIVE = {"steering": "planted_steer", "knockout": "planted_recall"}

LOWER = string.ascii_lowercase[:16]  # a..p: copied letters and recalled values
UPPER = LOWER.upper()
DIGITS = "01234567"
PUNCT = "+-*/"
CHARS = "^?!@yz.#" + PUNCT + LOWER + UPPER + DIGITS
FLAGS = ("ONES", "UPPER", "LOWER", "DIGIT", "ZERO", "GATE")  # ZERO: on no token (see _zero_sum); GATE: on no
# token, written by the serial layer's head
ANSWERS = LOWER + "YZ"
RECALL = {d: LOWER[(5 * i + 3) % 16] for i, d in enumerate(DIGITS)}  # the key -> value map


@dataclass(frozen=True)
class Layout:
    """Residual coordinates: a character's one-hot, a flag, an answer's output coordinate."""

    def ch(self, c: str) -> int:
        return CHARS.index(c)

    def flag(self, f: str) -> int:
        return len(CHARS) + FLAGS.index(f)

    def out(self, a: str) -> int:
        return len(CHARS) + len(FLAGS) + ANSWERS.index(a)


L = Layout()
assert L.out(ANSWERS[-1]) < D_MODEL


@dataclass(frozen=True)
class Positions:
    """Where the seed planted each mechanism (layer indices; ``copy_head`` a query head)."""

    hub: int
    copy: int
    copy_head: int
    recall: int
    steer: int
    serial: int
    serial_head: int

    @property
    def mechanism_layers(self) -> dict[str, int]:
        return {"hub": self.hub, "copy": self.copy, "recall": self.recall, "steer": self.steer, "serial": self.serial}

    def identity_layers(self, n_layers: int = N_LAYERS) -> list[int]:
        return [i for i in range(n_layers) if i not in self.mechanism_layers.values()]


def plant_positions(seed: int, n_layers: int = N_LAYERS) -> Positions:
    """Five distinct interior layers (the first and last stay identities) and two query heads, from the seed."""
    rng = random.Random(f"planted/{seed}")  # the same places in every layout
    hub, copy, recall, steer = rng.sample(range(1, n_layers - 1), 4)
    copy_head = rng.randrange(HEADS)
    serial = rng.choice([i for i in range(1, n_layers - 1) if i not in (hub, copy, recall, steer)])
    return Positions(
        hub=hub,
        copy=copy,
        copy_head=copy_head,
        recall=recall,
        steer=steer,
        serial=serial,
        serial_head=rng.randrange(HEADS),
    )


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


# ------------------------------------------------------------------------------------------------
# task families


def _letters(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(LOWER) for _ in range(n))


def task_families(n_items: int = 16) -> dict[str, dict]:
    """The planted models' four families in the user-task format (deterministic)."""
    rng = random.Random("planted-tasks")
    fams: dict[str, dict] = {}
    items, contrast = [], []
    for i in range(n_items):
        body = list(_letters(rng, 6))
        k, c = rng.randrange(6), LOWER[i % 16]
        body[k] = c.upper()
        items.append({"id": f"copy{i}", "prompt": "^" + "".join(body) + "?", "target": c})
        contrast.append({"prompt": "^" + _letters(rng, 6) + "?", "target": "a"})
    fams["planted_copy"] = {
        "description": "copy the one uppercase letter, lowered, after '?'",
        "items": items,
        "contrast": contrast,
    }
    items, contrast = [], []
    for i in range(n_items):
        c = LOWER[(3 * i + 1) % 16]
        items.append(
            {"id": f"hub{i}", "prompt": "^" + c * (3 + i % 3) + "!", "target": LOWER[(LOWER.index(c) + 1) % 16]}
        )
        contrast.append({"prompt": "^" + c * (3 + i % 3) + ".", "target": "a"})
    fams["planted_hub"] = {
        "description": "the letter after the repeated one, after '!'",
        "items": items,
        "contrast": contrast,
    }
    items, contrast = [], []
    for i in range(n_items):
        d = DIGITS[i % len(DIGITS)]
        items.append({"id": f"recall{i}", "prompt": "^" + _letters(rng, 1 + i % 3) + "@" + d, "target": RECALL[d]})
        contrast.append({"prompt": "^" + _letters(rng, 1 + i % 3) + "@" + PUNCT[i % len(PUNCT)], "target": "a"})
    fams["planted_recall"] = {
        "description": "the value of the key digit after '@'",
        "items": items,
        "contrast": contrast,
    }
    items, contrast = [], []
    for i in range(n_items):
        body = "".join(random.Random(f"planted-serial/{i}").choice(PUNCT) for _ in range(2 + i % 4))
        items.append({"id": f"serial{i}", "prompt": "^" + body + "#", "target": "Z"})
        contrast.append({"prompt": "^" + body + ".", "target": "Z"})
    fams["planted_serial"] = {
        "description": "'Z' after '#': a head writes a gate that the same layer's MLP reads "
        "(answered by a serial block only)",
        "items": items,
        "contrast": contrast,
    }
    items, contrast = [], []
    for i in range(n_items):
        body = _letters(rng, 2 + i % 4)
        items.append({"id": f"steer{i}", "prompt": "^" + body + "y", "target": "Y"})
        contrast.append({"prompt": "^" + body + "z", "target": "Y"})
    fams["planted_steer"] = {
        "description": "'Y' after 'y' (silent unless steered)",
        "items": items,
        "contrast": contrast,
    }
    return {name: {"family": name, **fam} for name, fam in fams.items()}


def write_tasks(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, fam in task_families().items():
        path = folder / f"{name}.json"
        text = json.dumps(fam, indent=1) + "\n"
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
    return folder


# ------------------------------------------------------------------------------------------------
# the specification


def specification(layout: str = "llama", seed: int = 0) -> dict:
    """What each experiment must find on ``planted-<layout>`` at ``seed``: the contents of ``planted.json``."""
    if layout not in LAYOUTS:
        raise AtlasError(f"no planted model of layout {layout!r}; planted models: {', '.join(PLANTED_MODELS)}")
    pos = plant_positions(seed)
    group = HEADS // (KV_HEADS if layout == "llama" else HEADS)  # query heads per KV head
    parallel = layout in PARALLEL
    answered = {"planted_copy": pos.copy, "planted_hub": pos.hub, "planted_recall": pos.recall}
    if not parallel:  # a parallel block's MLP never sees the gate: planted_serial is answered nowhere
        answered["planted_serial"] = pos.serial
    return {
        "model": f"planted-{layout}",
        "seed": seed,
        "n_layers": N_LAYERS,
        "n_heads": HEADS,
        "n_kv_heads": HEADS // group,
        "block": "parallel" if parallel else "serial",
        "families": list(FAMILIES),
        "drive": dict(DRIVE),
        "positions": {
            "hub": pos.hub,
            "copy": pos.copy,
            "copy_head": pos.copy_head,
            "copy_group_heads": [h for h in range(HEADS) if h // group == pos.copy_head // group],
            "recall": pos.recall,
            "steer": pos.steer,
            "serial": pos.serial,
            "serial_head": pos.serial_head,
        },
        "identity_layers": pos.identity_layers(),
        "answer_layer": answered,  # the layer after which each answering family's answer is in the residual
        "truth": {
            "layer_ablation": f"skipping L{pos.hub} (the hub) moves the output most; skipping an identity layer "
            f"({', '.join(f'L{i}' for i in pos.identity_layers())}) moves nothing",
            "mlp_ablation": f"the strongest MLP is L{pos.recall}'s (planted_recall's key->value map)",
            "head_ablation": f"the strongest head is L{pos.copy} H{pos.copy_head} (planted_copy)",
            "steering": f"the planted_steer direction raises 'Y' at layers up to L{pos.steer - 1}, positive sign; "
            f"after L{pos.steer - 1} it moves nothing",
            "knockout": f"knocking out planted_recall before its MLP (L{pos.recall}) is selective",
            "serial": (
                f"L{pos.serial} is an exact identity on the output: its head H{pos.serial_head} writes a gate "
                f"that only its own MLP could read, and a parallel block's MLP reads the layer input"
                if parallel
                else f"skipping L{pos.serial} breaks planted_serial: its MLP reads the gate its head H{pos.serial_head} "
                f"wrote (serial block); the MLPs ranked by ablation KL are L{pos.recall} then L{pos.serial}"
            ),
            "efficiency": "an exit before a family's answer layer loses it, one after keeps it; skipping an identity "
            "layer changes nothing",
            "lora_training": "no planted truth: LoRA training moves every weight it adapts, so no layer is "
            "planted to carry its effect",
            "transfer": NO_PAIR_TRUTH,
            "adapter_ablation": NO_PAIR_TRUTH,
        },
    }


# Why transfer and adapter ablation get no planted claim (stated in planted.json and the claims files' header)
NO_PAIR_TRUTH = (
    "no planted truth: transfer and adapter ablation read only the adapter that lora_training trains in the same run "
    "(re-attached from <out>/lora_adapter_seed<seed>), a LoRA of rank 8 on q/k/v/o of every layer trained by AdamW on "
    "every family. Where that training puts the change is not fixed by the plant: every layer's o_proj reaches the "
    "residual, so every layer's adapter gets a gradient, and the layer that carries the trained output (transfer's "
    "recovery curve, adapter ablation's per-layer KL) is decided by the optimiser. A planted pair would need the "
    "adapter placed by hand, which these experiments cannot take without bypassing the training they measure; and "
    "what holds for any pair (recovery 1 at the last layer) is true by construction, which claim hygiene refuses"
)


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
