"""The useful work of every experiment of a profile, before running it: the forwards each experiment's code
issues, counted with ``atlas_core.work``'s own coefficients (``FlopModel.layer_flop`` / ``head_flop``), so that a
plan and a metered run count the same thing.

What a run does, as the experiments and the runner do it, for one process running the profile in order:

- a sweep runs each variant from the cached clean residual: a variant whose first touched layer is ``l`` runs
  layers ``l..L-1`` (``l+1..L-1`` when a residual ablation, steer or patch touches ``l``: it is applied to the
  cached output), then the LM head on each prompt's last position; an early exit runs no layer, only the head;
- a clean pass runs every layer over its prompts and the head on their last positions; recording a non-residual
  site for mean or resample ablation is one more pass, without the head;
- LoRA training runs ``steps`` forward and backward passes (the backward counts as one more forward) over one
  (prompt + target) pair each, the head on the target positions; then one pass over every pair, the adapted
  model's clean pass, and transfer and adapter ablation each one more.

Two counts depend on values, not shapes: LoRA steps (to loss < target; the plan takes them from a calibration
record or the profile's maximum) and which layers three of efficiency's four skip sets start at (the weakest
layers; counted from layer 1, an upper bound). Sharded: the sweeps of the base model (``atlas run --ray``) and
adapter ablation's per-layer sweep (spread over the actors); clean passes, directions, training, transfer's adapted
sweep and the exit timings run on the driver. Under ``--ray`` each actor of adapter ablation's spread runs the adapted
clean pass itself, for its chunk of layers: those passes run side by side, so the plan counts the wall time of one,
serial, and its FLOP once (the other actors' copies are repeated work, not useful work).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from atlas_core.experiments import efficiency, steering
from atlas_core.experiments.directions import study_layer
from atlas_core.profiles import Profile, sample_layers
from atlas_core.tasks import load_families
from atlas_core.work import FlopModel

UNTOUCHED = -1  # a variant whose result is the clean run itself: no forward at all


@dataclass(frozen=True)
class PromptSet:
    """Token counts of the prompts a profile runs (each as the runner tokenizes it)."""

    all: tuple[int, ...]  # every family's item prompts, in run order
    family: tuple[int, ...]  # the steering family's items
    contrast: tuple[int, ...]  # its contrast prompts
    pairs: tuple[tuple[int, int], ...]  # LoRA training pairs: (prompt tokens, target tokens)


def prompt_set(tokenizer, profile: Profile, families: Sequence[str] | None = None) -> PromptSet:
    fams = load_families(families, profile.n_items)
    lengths = {name: [len(tokenizer(it.prompt)["input_ids"]) for it in f.items] for name, f in fams.items()}
    driven = steering.FAMILY if steering.FAMILY in fams else next(iter(fams))
    n_lora = profile.lora_items
    pairs = tuple(
        (lengths[name][i], len(tokenizer(it.target, add_special_tokens=False)["input_ids"]))
        for name, f in fams.items()
        for i, it in enumerate(f.items if n_lora is None else f.items[:n_lora])
    )
    return PromptSet(
        all=tuple(n for name in fams for n in lengths[name]),
        family=tuple(lengths[driven]),
        contrast=tuple(len(tokenizer(p)["input_ids"]) for p in fams[driven].contrast_prompts),
        pairs=pairs,
    )


@dataclass(frozen=True)
class Part:
    """A group of forwards of one experiment."""

    what: str
    variants: int  # sweep variants (0: not a sweep)
    flop: int
    tokens: int  # real tokens entering decoder forwards
    sharded: bool
    forward_flop: int = 0  # of ``flop``, the decoder layers' forward passes (what ``work``'s forward_seconds times)


@dataclass(frozen=True)
class ExperimentWork:
    name: str
    parts: tuple[Part, ...]

    @property
    def flop(self) -> int:
        return sum(p.flop for p in self.parts)

    @property
    def sharded_flop(self) -> int:
        return sum(p.flop for p in self.parts if p.sharded)

    @property
    def forward_flop(self) -> int:
        """The decoder layers' forward passes: the rest of ``flop`` is the LM head and training's backward."""
        return sum(p.forward_flop for p in self.parts)

    @property
    def variants(self) -> int:
        return sum(p.variants for p in self.parts)

    @property
    def tokens(self) -> int:
        return sum(p.tokens for p in self.parts)


def _layer(fm: FlopModel, lengths: Sequence[int]) -> int:
    """One decoder layer over each prompt alone (its causal pairs), as the meter counts a packed forward."""
    return sum(fm.layer_flop(n, n * (n + 1) // 2) for n in lengths)


def sweep(fm: FlopModel, lengths: Sequence[int], windows: Sequence[int], what: str, sharded: bool = True) -> Part:
    """Variants running ``windows[i]`` layers each (0: only the head; ``UNTOUCHED``: nothing) over ``lengths``."""
    ran = [w for w in windows if w != UNTOUCHED]
    layers = sum(ran) * _layer(fm, lengths)
    flop = layers + len(ran) * fm.head_flop(len(lengths))
    return Part(what, len(windows), flop, sum(lengths) * sum(1 for w in ran if w > 0), sharded, layers)


def clean_pass(fm: FlopModel, lengths: Sequence[int], n_layers: int, what: str, head: bool = True) -> Part:
    layers = n_layers * _layer(fm, lengths)
    flop = layers + (fm.head_flop(len(lengths)) if head else 0)
    return Part(what, 0, flop, sum(lengths), False, layers)


def _resid(n: int, layers: Sequence[int]) -> list[int]:
    """Windows of residual interventions at ``layers`` (applied to the cached output: layers l+1..L-1 run)."""
    return [n - 1 - layer for layer in layers]


def _inside(n: int, layers: Sequence[int]) -> list[int]:
    """Windows of interventions inside layer l (it runs again: layers l..L-1)."""
    return [n - layer for layer in layers]


def _ablation(fm: FlopModel, p: PromptSet, n: int, profile: Profile, targets: Sequence[str]) -> list[Part]:
    parts = []
    for target in targets:
        if target != "resid" and {"mean", "resample"} & set(profile.ablation_modes):
            parts.append(clean_pass(fm, p.all, n, f"record {target} for mean/resample", head=False))
        for mode in profile.ablation_modes:
            windows = (_resid if target == "resid" else _inside)(n, range(n))
            parts.append(sweep(fm, p.all, windows, f"{target}/{mode}"))
    return parts


def confirmations(losses: Sequence[float], window: int, target: float) -> int:
    """How many passes over every pair ``lora_fit.train`` ran to confirm convergence, given its loss curve:
    one at each step where the last ``window`` steps' mean is below ``target``, at most once a window."""
    count, last = 0, -window
    for step in range(window - 1, len(losses)):
        if float(np.mean(losses[step - window + 1 : step + 1])) < target and step - last >= window:
            count, last = count + 1, step
    return count


def training_order(n_pairs: int, steps: int, seed: int) -> list[int]:
    """The pair each training step takes: a seeded permutation per epoch, as ``lora_fit.train`` draws them."""
    rng = np.random.default_rng(seed)
    out: list[int] = []
    while len(out) < steps:
        out += [int(i) for i in rng.permutation(n_pairs)]
    return out[:steps]


def _training(fm: FlopModel, p: PromptSet, n: int, steps: int, checks: int, seed: int) -> list[Part]:
    """``steps`` steps cycling over the pairs (a step: forward and backward, counted twice), ``checks``
    confirmation passes and one final pass over every pair, and the adapted model's clean pass."""
    layers = [n * fm.layer_flop(a + b, (a + b) * (a + b + 1) // 2) for a, b in p.pairs]
    per_pair = [lay + fm.head_flop(b) for lay, (a, b) in zip(layers, p.pairs)]
    seen = training_order(len(p.pairs), steps, seed)
    tokens = [a + b for a, b in p.pairs]
    passes = 1 + checks
    return [
        Part(
            f"{steps} training steps",
            0,
            2 * sum(per_pair[i] for i in seen),
            sum(tokens[i] for i in seen),
            False,
            sum(layers[i] for i in seen),  # the forward; the backward is the rest
        ),
        Part(
            f"loss on every pair x{passes}",
            0,
            passes * sum(per_pair),
            passes * sum(tokens),
            False,
            passes * sum(layers),
        ),
        clean_pass(fm, p.all, n, "adapted clean pass"),
    ]


def _timing_lengths(all_lengths: Sequence[int]) -> list[int]:
    """The prompts efficiency times (``efficiency._timing_batch``'s choice)."""
    k = len(all_lengths)
    idx = np.unique(np.linspace(0, k - 1, min(efficiency.TIMING_PROMPTS, k)).round().astype(int))
    return [all_lengths[i] for i in idx]


def workload(
    fm: FlopModel,
    n_layers: int,
    n_heads: int,
    p: PromptSet,
    profile: Profile,
    lora_losses: Sequence[float] | None = None,
    seed: int = 0,
) -> dict[str, ExperimentWork]:
    """Every experiment's work at ``profile`` (run order), in one process: the clean pass once (by ``clean``),
    the directions once (by ``steering``), the single-skip KLs read off the layer ablation's skip sweep.
    ``lora_losses``: a recorded LoRA loss curve (its steps and confirmation passes); None: the profile's
    maximum steps and no confirmation."""
    n = n_layers
    steps = profile.lora_max_steps if lora_losses is None else len(lora_losses)
    checks = 0 if lora_losses is None else confirmations(lora_losses, len(p.pairs), profile.lora_target_loss)
    heads = sample_layers(n, profile.head_layers)
    steer = sorted(set(sample_layers(n, profile.steer_layers)) | {study_layer(n)})
    knock = sample_layers(n, profile.steer_layers)
    strengths = [s for s in profile.steer_strengths if s != 0.0]
    k = min(5, n - 2)
    mid = min(max(round(4 * n / efficiency.STUDY_DEPTH), 1), n - 1 - k)
    timed = _timing_lengths(p.all)
    adapted = clean_pass(fm, p.all, n, "adapted clean pass")
    out = {
        "clean": [clean_pass(fm, p.all, n, "clean pass")],
        "layer_ablation": _ablation(fm, p, n, profile, ("resid", "delta")),
        "mlp_ablation": _ablation(fm, p, n, profile, ("mlp",)),
        "head_ablation": [sweep(fm, p.all, [w for w in _inside(n, heads) for _ in range(n_heads)], "heads")],
        "steering": [
            clean_pass(fm, p.family, n, "family clean pass"),
            clean_pass(fm, p.contrast, n, "contrast pass"),
            sweep(fm, p.family, [w for w in _resid(n, steer) for _ in strengths], "steer grid"),
        ],
        "knockout": [sweep(fm, p.all, _resid(n, knock), "knockout")],
        "lora_training": _training(fm, p, n, steps, checks, seed),
        "transfer": [adapted, sweep(fm, p.all, _resid(n, range(n)), "patches")],
        "adapter_ablation": [adapted, sweep(fm, p.all, _inside(n, range(n)), "adapter off per layer")],
        "efficiency": [
            sweep(fm, p.all, [n - 1, n - mid, n - 1, n - 1], "skip sets (3 bounded)"),
            sweep(fm, p.all, [0] * (n - 1) + [UNTOUCHED], "early exits"),
            clean_pass(fm, timed, n, "timing warm-up"),
            Part(
                f"exit timing x{max(1, profile.timing_repeats)}",
                0,
                max(1, profile.timing_repeats) * sum(clean_pass(fm, timed, d, "").flop for d in range(1, n + 1)),
                max(1, profile.timing_repeats) * n * sum(timed),
                False,
                max(1, profile.timing_repeats)
                * sum(clean_pass(fm, timed, d, "").forward_flop for d in range(1, n + 1)),
            ),
        ],
    }
    return {name: ExperimentWork(name, tuple(parts)) for name, parts in out.items()}
