"""Run profiles: how much of the study's protocol a run does.

- ``smoke``: tiny-qwen2 in seconds, for unit tests;
- ``ci``: real models on a 2-core CPU: fewer prompts per family, sampled head layers, short training;
- ``full``: the study's protocol: every layer, every head, every family, three ablation modes, the whole
  steering range at every layer, training to loss < 0.01, on 12 prompts per family (96 in all). The study
  used few prompts (its early-exit match of 7.14% is 1 in 14, its skip overlap of 2.86% 1 in 35), and
  12 per family keeps the 0.5B atlas near an hour on a 2-core CPU;
- ``exhaustive``: ``full`` on every item of every family (~330 prompts; a GPU's profile).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from atlas_core import AtlasError


@dataclass(frozen=True)
class Profile:
    name: str
    n_items: int | None  # items per family (None: all)
    head_layers: int | None  # layers sampled evenly for head ablation (None: every layer)
    ablation_modes: tuple[str, ...]
    steer_strengths: tuple[float, ...]
    steer_layers: int | None  # layers sampled evenly for steering/knockout (None: every layer)
    lora_items: int | None  # training pairs per family (None: all)
    lora_max_steps: int
    lora_target_loss: float
    n_boot: int
    memory_mb: int
    timing_repeats: int

    def to_dict(self) -> dict:
        return asdict(self)


_STRENGTHS = (-4.0, -3.0, -2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 3.0, 4.0)

PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        "smoke",
        n_items=4,
        head_layers=2,
        ablation_modes=("zero", "mean", "resample"),
        steer_strengths=(-2.0, 0.0, 2.0),
        steer_layers=2,
        lora_items=2,
        lora_max_steps=20,
        lora_target_loss=0.01,
        n_boot=200,
        memory_mb=256,
        timing_repeats=1,
    ),
    # Sized for CI (a 2-core CPU, both Coder models, 90 minutes in all): a sweep row of the 1.5B model costs
    # ~0.25 s there, so the ci profile keeps ~6k rows per model: zero ablation only (mean and resample run
    # at the full profile), three prompts per family, three head layers.
    "ci": Profile(
        "ci",
        n_items=3,
        head_layers=3,
        ablation_modes=("zero",),
        steer_strengths=(-4.0, -2.0, -1.0, 0.0, 1.0, 2.0, 4.0),
        steer_layers=6,
        lora_items=2,
        lora_max_steps=80,
        lora_target_loss=0.01,
        n_boot=500,
        memory_mb=1024,
        timing_repeats=1,
    ),
    "full": Profile(
        "full",
        n_items=12,
        head_layers=None,
        ablation_modes=("zero", "mean", "resample"),
        steer_strengths=_STRENGTHS,
        steer_layers=None,
        lora_items=None,
        lora_max_steps=2000,
        lora_target_loss=0.01,
        n_boot=1000,
        memory_mb=2048,
        timing_repeats=5,
    ),
    # What the planted models' claims are checked at (atlas_core/models/planted.py): every layer and head, zero
    # ablation, a few seconds a model.
    "planted": Profile(
        "planted",
        n_items=6,
        head_layers=None,
        ablation_modes=("zero",),
        steer_strengths=(-2.0, -1.0, 0.0, 1.0, 2.0),
        steer_layers=None,
        lora_items=2,
        lora_max_steps=20,
        lora_target_loss=0.01,
        n_boot=200,
        memory_mb=512,
        timing_repeats=1,
    ),
    "exhaustive": Profile(
        "exhaustive",
        n_items=None,
        head_layers=None,
        ablation_modes=("zero", "mean", "resample"),
        steer_strengths=_STRENGTHS,
        steer_layers=None,
        lora_items=None,
        lora_max_steps=4000,
        lora_target_loss=0.01,
        n_boot=1000,
        memory_mb=4096,
        timing_repeats=5,
    ),
}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise AtlasError(f"unknown profile {name!r}; profiles are {', '.join(PROFILES)}") from None


def sample_layers(n_layers: int, k: int | None) -> list[int]:
    """``k`` layers spread evenly over depth, always including the first and last (None: all)."""
    if k is None or k >= n_layers:
        return list(range(n_layers))
    if k <= 1:
        return [0]
    return sorted({round(i * (n_layers - 1) / (k - 1)) for i in range(k)})
