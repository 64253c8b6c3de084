"""``planted-<layout>``: stock Hugging Face models whose mechanisms are set by hand, so that what each
experiment must find is known by construction (a ground truth for the atlas's statistics).

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

LAYOUTS = ("llama",)  # stock families with a planted model
PLANTED_MODELS = tuple(f"planted-{layout}" for layout in LAYOUTS)
N_LAYERS = 8
D_MODEL, HEADS, KV_HEADS, HEAD_DIM, D_FF = 96, 4, 2, 24, 64
QK = 4  # first head dimension whose rotary frequency is negligible at rope_theta 1e12 (10^-QK rad/position)
FAMILIES = ("planted_copy", "planted_hub", "planted_recall", "planted_steer")
DRIVE = {"steering": "planted_steer", "knockout": "planted_recall"}

LOWER = string.ascii_lowercase[:16]  # a..p: copied letters and recalled values
UPPER = LOWER.upper()
DIGITS = "01234567"
PUNCT = "+-*/"
CHARS = "^?!@yz." + PUNCT + LOWER + UPPER + DIGITS
FLAGS = ("ONES", "UPPER", "LOWER", "DIGIT")
ANSWERS = LOWER + "Y"
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

    @property
    def mechanism_layers(self) -> dict[str, int]:
        return {"hub": self.hub, "copy": self.copy, "recall": self.recall, "steer": self.steer}

    def identity_layers(self, n_layers: int = N_LAYERS) -> list[int]:
        return [i for i in range(n_layers) if i not in self.mechanism_layers.values()]


def plant_positions(seed: int, n_layers: int = N_LAYERS) -> Positions:
    """Four distinct interior layers (the first and last stay identities) and a query head, from the seed."""
    rng = random.Random(f"planted/{seed}")
    hub, copy, recall, steer = rng.sample(range(1, n_layers - 1), 4)
    return Positions(hub=hub, copy=copy, copy_head=rng.randrange(HEADS), recall=recall, steer=steer)


def config(vocab_size: int, n_layers: int = N_LAYERS) -> transformers.LlamaConfig:
    pad = vocab_size - 1
    return transformers.LlamaConfig(
        vocab_size=vocab_size, hidden_size=D_MODEL, intermediate_size=D_FF, num_hidden_layers=n_layers,
        num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, head_dim=HEAD_DIM, max_position_embeddings=256,
        rope_theta=1e12, rms_norm_eps=1e-6, tie_word_embeddings=False, pad_token_id=pad, eos_token_id=pad,
        bos_token_id=pad)


# scales (measured: copy and recall answers at p ~ 0.9, the hub's at p ~ 0.999; see the tests)
ATTN_Q = 3.0  # content query/key weight
SINK_Q = 2.0  # the sink query/key weight
COPY_OUT = 0.2
HUB_OUT = 2.0  # per head (a quarter of the hub's logit each)
RECALL_GATE, RECALL_OUT = 2.0, 0.045
STEER_GATE, STEER_OUT = 2.0, 0.6
UNEMBED = 1.3


def _token(tok, c: str) -> int:
    ids = tok.encode(c, add_special_tokens=False)
    if len(ids) != 1:
        raise AtlasError(f"planted tokenizer: {c!r} is not one token")
    return ids[0]


def _attention(attn, heads_q: dict[int, tuple[str, str, dict[int, str], float]], kv: dict[int, tuple[str, dict[int, str]]]):
    """Set one layer's attention: ``heads_q[h] = (query char, ..., o-map, out scale)``; ``kv[g] = (key flag,
    value map: head dim -> source coordinate name)``. Coordinates are named ``c:<char>``/``f:<flag>``."""
    def coord(name: str) -> int:
        kind, _, v = name.partition(":")
        return L.ch(v) if kind == "c" else L.flag(v)

    for g, (key, values) in kv.items():
        attn.k_proj.weight[g * HEAD_DIM + QK, coord(key)] = ATTN_Q
        attn.k_proj.weight[g * HEAD_DIM + QK + 1, L.ch("^")] = SINK_Q
        for j, src in values.items():
            attn.v_proj.weight[g * HEAD_DIM + j, coord(src)] = 1.0
    for h, (query, _, omap, scale) in heads_q.items():
        if query:
            attn.q_proj.weight[h * HEAD_DIM + QK, coord(query)] = ATTN_Q
        attn.q_proj.weight[h * HEAD_DIM + QK + 1, L.flag("ONES")] = SINK_Q
        for j, answer in omap.items():
            attn.o_proj.weight[L.out(answer), h * HEAD_DIM + j] = scale


def build_planted(layout: str = "llama", seed: int = 0):
    """The planted model of ``layout`` at ``seed`` and its tokenizer (deterministic, no randomness in weights)."""
    if layout not in LAYOUTS:
        raise AtlasError(f"no planted model of layout {layout!r}; planted models: {', '.join(PLANTED_MODELS)}")
    tok = tiny_tokenizer()
    pos = plant_positions(seed)
    model = transformers.LlamaForCausalLM(config(len(tok))).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        for m in model.modules():  # norms multiply by one
            if type(m).__name__.endswith("RMSNorm"):
                m.weight.fill_(1.0)
        emb = model.model.embed_tokens.weight
        emb[:, L.flag("ONES")] = 1.0
        for c in CHARS:
            t = _token(tok, c)
            emb[t, L.ch(c)] = 1.0
            if c in UPPER:
                emb[t, L.flag("UPPER")] = 1.0
            if c in LOWER:
                emb[t, L.flag("LOWER")] = 1.0
            if c in DIGITS:
                emb[t, L.flag("DIGIT")] = 1.0
        for a in ANSWERS:
            model.lm_head.weight[_token(tok, a), L.out(a)] = UNEMBED
        layers = model.model.layers

        # copy: the query head at '?' attends to the uppercase letter and writes its lowercase answer
        group = pos.copy_head // (HEADS // KV_HEADS)
        partner = [h for h in range(HEADS) if h // (HEADS // KV_HEADS) == group and h != pos.copy_head]
        _attention(layers[pos.copy].self_attn,
                   {pos.copy_head: ("c:?", "", {i: LOWER[i] for i in range(16)}, COPY_OUT),
                    **{h: ("", "", {}, 0.0) for h in partner}},
                   {group: ("f:UPPER", {i: f"c:{UPPER[i]}" for i in range(16)})})
        # hub: every head at '!' attends to the lowercase letters and writes the next letter, a quarter each
        _attention(layers[pos.hub].self_attn,
                   {h: ("c:!", "", {i: LOWER[(i + 1) % 16] for i in range(16)}, HUB_OUT) for h in range(HEADS)},
                   {g: ("f:LOWER", {i: f"c:{LOWER[i]}" for i in range(16)}) for g in range(KV_HEADS)})
        # recall: neuron i fires on digit i (its one-hot and the digit flag against ONES) and writes its value
        mlp = layers[pos.recall].mlp
        for i, d in enumerate(DIGITS):
            mlp.gate_proj.weight[i, L.ch(d)] = RECALL_GATE
            mlp.gate_proj.weight[i, L.flag("DIGIT")] = RECALL_GATE
            mlp.gate_proj.weight[i, L.flag("ONES")] = -1.5 * RECALL_GATE
            mlp.up_proj.weight[i, L.ch(d)] = 1.0
            mlp.down_proj.weight[L.out(RECALL[d]), i] = RECALL_OUT
        # steer: silent on the clean run (gate y - ONES is 0 exactly on a 'y'), raises "Y" when y outweighs ONES
        mlp = layers[pos.steer].mlp
        mlp.gate_proj.weight[0, L.ch("y")] = STEER_GATE
        mlp.gate_proj.weight[0, L.flag("ONES")] = -STEER_GATE
        mlp.up_proj.weight[0, L.ch("y")] = 1.0
        mlp.down_proj.weight[L.out("Y"), 0] = STEER_OUT
    for p in model.parameters():
        p.requires_grad_(False)
    return model, tok


def build_unplanted(layout: str = "llama", seed: int = 0):
    """The negative control: the same architecture, tokenizer and size with random weights."""
    if layout not in LAYOUTS:
        raise AtlasError(f"no planted model of layout {layout!r}; planted models: {', '.join(PLANTED_MODELS)}")
    tok = tiny_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        cfg = config(len(tok))
        cfg.initializer_range = 0.2
        model = transformers.LlamaForCausalLM(cfg).eval()
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
    fams["planted_copy"] = {"description": "copy the one uppercase letter, lowered, after '?'", "items": items,
                            "contrast": contrast}
    items, contrast = [], []
    for i in range(n_items):
        c = LOWER[(3 * i + 1) % 16]
        items.append({"id": f"hub{i}", "prompt": "^" + c * (3 + i % 3) + "!", "target": LOWER[(LOWER.index(c) + 1) % 16]})
        contrast.append({"prompt": "^" + c * (3 + i % 3) + ".", "target": "a"})
    fams["planted_hub"] = {"description": "the letter after the repeated one, after '!'", "items": items,
                           "contrast": contrast}
    items, contrast = [], []
    for i in range(n_items):
        d = DIGITS[i % len(DIGITS)]
        items.append({"id": f"recall{i}", "prompt": "^" + _letters(rng, 1 + i % 3) + "@" + d, "target": RECALL[d]})
        contrast.append({"prompt": "^" + _letters(rng, 1 + i % 3) + "@" + PUNCT[i % len(PUNCT)], "target": "a"})
    fams["planted_recall"] = {"description": "the value of the key digit after '@'", "items": items,
                              "contrast": contrast}
    items, contrast = [], []
    for i in range(n_items):
        body = _letters(rng, 2 + i % 4)
        items.append({"id": f"steer{i}", "prompt": "^" + body + "y", "target": "Y"})
        contrast.append({"prompt": "^" + body + "z", "target": "Y"})
    fams["planted_steer"] = {"description": "'Y' after 'y' (silent unless steered)", "items": items,
                             "contrast": contrast}
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
    pos = plant_positions(seed)
    answered = {"planted_copy": pos.copy, "planted_hub": pos.hub, "planted_recall": pos.recall}
    return {
        "model": f"planted-{layout}",
        "seed": seed,
        "n_layers": N_LAYERS,
        "n_heads": HEADS,
        "n_kv_heads": KV_HEADS,
        "families": list(FAMILIES),
        "drive": dict(DRIVE),
        "positions": {"hub": pos.hub, "copy": pos.copy, "copy_head": pos.copy_head,
                      "copy_group_heads": [h for h in range(HEADS) if h // (HEADS // KV_HEADS) == pos.copy_head // (HEADS // KV_HEADS)],
                      "recall": pos.recall, "steer": pos.steer},
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
            "efficiency": "an exit before a family's answer layer loses it, one after keeps it; skipping an identity "
                          "layer changes nothing",
            "lora_training": "no planted truth: LoRA training moves every weight it adapts, so no layer is "
                             "planted to carry its effect",
            "transfer": "no planted truth: transfer needs a planted pair (a model and its adapted twin) whose "
                        "difference is placed by construction; none is built",
            "adapter_ablation": "no planted truth, for the same reason as transfer",
        },
    }


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
