"""``planted-<layout>``: stock Hugging Face models whose mechanisms are set by hand, so that what each
experiment must find is known by construction (a ground truth for the atlas's statistics). Three layouts:
``planted-llama`` (``LlamaForCausalLM``, serial pre-norm block, RMSNorm, grouped-query attention with 2 KV
heads for 4 query heads), ``planted-gpt2`` (``GPT2LMHeadModel``: Conv1D, fused ``c_attn``, learned positions
set to zero) and ``planted-gpt-neox`` (``GPTNeoXForCausalLM``: parallel block, fused ``query_key_value``).
The same seed plants the same mechanisms at the same places in each; every reader of the residual sums to
zero over its inputs (``planted_build``), so LayerNorm's mean subtraction reads an absent coordinate as 0.

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

This module holds the layout, the positions and the specification; the weights and the model folder are
:mod:`~atlas_core.models.planted_build`'s, the task families :mod:`~atlas_core.models.planted_tasks`'s.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass

from atlas_core import AtlasError

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
FLAGS = ("ONES", "UPPER", "LOWER", "DIGIT", "ZERO", "GATE")  # ZERO: on no token (see planted_build); GATE: on no
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
