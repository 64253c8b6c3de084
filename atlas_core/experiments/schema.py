"""Typed results of every experiment: the contract between experiments, the hypothesis suite and
the reports. Each serialises to JSON through ``atlas_core.results.to_jsonable``; an ``Estimate`` is
``{"value", "lo", "hi", "n"}`` (bootstrap 95% interval over prompts).

Layer-indexed lists are in layer order (index i is ``layers[i]``). Per-family dicts are keyed by
family name in ``FAMILIES`` order.

Stored results load back as these types (:func:`load_result`, through ``cattrs``): a field the type
does not have is an error, except the fields a later schema removed (``REMOVED``), which records of an
earlier schema still carry and which are dropped on reading. Undefined numbers are stored as ``null``
and read back as NaN.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Mapping

from atlas_core import AtlasError
from atlas_core.metrics import Estimate
from atlas_core.results import SCHEMA

# Fields added to a result type, by the schema that added them: each has a default (None: not measured), which
# records of an earlier schema, lacking the field, read back as.
ADDED: dict[int, dict[str, tuple[str, ...]]] = {
    # head ablation keeps the strongest head's KL with its bootstrap interval (H002 decides on it); the committed
    # full-profile baselines are of schema 2 and read None: for them H002's points decide
    3: {"head_ablation": ("max_kl",)},
    # a screened head ablation (``atlas run --screen atp``) says which layers' heads it verified by exact ablation;
    # None: the exhaustive sweep, every head measured
    4: {"head_ablation": ("screen",)},
}
# Fields removed from a result type, by the schema that removed them.
REMOVED: dict[int, dict[str, tuple[str, ...]]] = {
    # head ablation no longer copies the layer ablation's strongest KL: heads.layer_head_gap reads the
    # layer ablation's own result (a declared input, ``ExperimentSpec.reads``)
    2: {"head_ablation": ("max_layer_kl",)},
}


@dataclass
class FamilyAccuracy:
    family: str
    n: int
    top1_accuracy: Estimate  # argmax == first target token
    target_prob: Estimate  # clean probability of the first target token


@dataclass
class PromptOutcome:
    family: str
    prompt: str
    target: str
    target_id: int
    predicted: str  # decoded argmax token
    target_prob: float
    correct: bool


@dataclass
class CleanResult:
    families: list[FamilyAccuracy]
    prompts: list[PromptOutcome]
    overall_accuracy: Estimate


@dataclass
class LayerSweep:
    """One ablation target x mode over every layer."""

    target: str  # "resid": the layer's whole output (the study's); "delta": the layer's write; "mlp"
    mode: str  # zero | mean | resample
    layers: list[int]
    kl: dict[str, list[float]]  # family -> mean KL per layer (nats)
    mean_kl: list[Estimate]  # per layer, mean over all prompts (every family)
    family_mean_kl: list[float]  # per layer, mean of the per-family means (the study's "mean KL across families")
    argmax_match: list[float]  # per layer, fraction of prompts whose argmax is unchanged
    ranking: list[int]  # layers by family_mean_kl, strongest first


@dataclass
class LayerAblationResult:
    n_layers: int
    families: list[str]
    sweeps: list[LayerSweep]
    primary: str = "resid/zero"  # "<target>/<mode>" of the study's definition
    notes: str = ""


@dataclass
class MLPAblationResult:
    n_layers: int
    families: list[str]
    sweeps: list[LayerSweep]  # target "mlp"
    primary: str = "mlp/zero"
    notes: str = ""


@dataclass
class HeadScore:
    family: str
    layer: int
    head: int
    kl: float


@dataclass
class HeadScreen:
    """How a screened head ablation chose what to measure (``atlas_core.screening``): AtP estimated every head,
    exact ablation measured the heads of ``verified`` layers only. ``estimate`` is AtP's, in nats of target
    log-probability, never a measured effect: the result's ``kl`` holds exact values of verified heads and null
    elsewhere, and every statistic reads ``kl``."""

    method: str  # "atp"
    k: int  # the exact top-k the verification settles (with each family's strongest head)
    verified: list[int]  # layers whose every head was ablated exactly, in the order verified
    rounds: int  # exact sweeps run
    margin: float  # exact KL / estimate, the largest over the settled cells: the stopping rule's margin
    estimate: dict[str, list[list[float]]]  # family -> [layer index][head] mean |AtP estimate| over its prompts
    seconds: float  # the estimate's forward and backward passes


@dataclass
class HeadAblationResult:
    n_layers: int
    n_heads: int
    layers: list[int]  # layers swept (every layer at the full profile)
    families: list[str]
    mode: str
    kl: dict[str, list[list[float]]]  # family -> [layer index][head] mean KL
    max_head: HeadScore
    top: list[HeadScore]  # strongest (family, layer, head) cells, descending
    # the strongest head's KL with its bootstrap 95% interval: each family's prompts resampled together, the max
    # over the ``top`` cells taken in each resample (schema 3; None in older records: no per-prompt data kept)
    max_kl: Estimate | None = None
    # screened (``atlas run --screen atp``): which heads were verified; None: exhaustive, every head measured (schema 4)
    screen: HeadScreen | None = None


@dataclass
class SteeringPrompt:
    prompt: str
    target: str
    baseline_prob: float
    best_prob: float
    best_strength: float
    best_layer: int


@dataclass
class SteeringResult:
    family: str
    layers: list[int]
    strengths: list[float]
    direction_norm: list[float]  # per layer
    baseline_prob: float  # mean clean target probability over the family's prompts
    target_prob: list[list[float]]  # [layer][strength] mean target probability
    boost: list[list[float]]  # [layer][strength] mean (steered - clean) target probability
    kl: list[list[float]]  # [layer][strength] mean KL(clean || steered)
    best_layer: int
    best_strength: float
    best_boost: Estimate  # over prompts, at the best (layer, strength)
    study_layer: int  # layer 2 (the study's), scaled to depth for other models
    study_layer_best_boost: Estimate
    prompts: list[SteeringPrompt] = field(default_factory=list)  # the study's own prompts


@dataclass
class KnockoutLayer:
    layer: int
    direction_norm: float
    skill_drop: Estimate  # mean drop of the skill family's target probability
    nonskill_drop: Estimate  # mean drop of the other families' target probabilities
    selectivity: float  # skill_drop / nonskill_drop


@dataclass
class KnockoutResult:
    family: str
    strength: float  # the negative steering strength applied
    layers: list[KnockoutLayer]
    best_layer: int
    best_selectivity: float


@dataclass
class LoraResult:
    rank: int
    alpha: int
    targets: list[str]
    batch_size: int
    learning_rate: float
    steps: int
    final_loss: float
    target_loss: float
    converged: bool
    loss_curve: list[float]
    kl_per_family: dict[str, Estimate]  # KL(base || trained) at the last position
    adapter_dir: str
    train_seconds: float
    seed: int
    # the pairs the trained adapter still gets wrong (final loss above the target), worst first: which
    # prompts keep a run from converging ({"family", "prompt", "target", "loss"})
    above_target: list[dict] = field(default_factory=list)


@dataclass
class TransferResult:
    layers: list[int]
    families: list[str]
    recovery: dict[str, list[float]]  # family -> per-layer mean KL recovery (1 = trained output restored)
    mean_recovery: list[Estimate]  # per layer, over prompts
    base_kl: dict[str, float]  # family -> KL(trained || base) before patching
    top_layers: list[int]  # by mean recovery, strongest first
    zone: list[int]  # layers with mean recovery >= zone_threshold
    zone_threshold: float


@dataclass
class AdapterAblationResult:
    layers: list[int]
    kl: list[Estimate]  # per layer: KL(full trained || adapter disabled at that layer)
    norm: list[float]  # per layer: adapter weight norm (sum over its modules of ||B A|| * scale)
    pearson: float
    pearson_ci: list[float]  # bootstrap over layers
    top_layers: list[int]


@dataclass
class SkipConfig:
    name: str
    layers: list[int]
    mean_kl: Estimate
    top5_overlap: Estimate
    argmax_match: Estimate


@dataclass
class ExitPoint:
    layer: int
    layers_skipped: int
    mean_kl: Estimate
    argmax_match: Estimate
    top5_overlap: Estimate
    seconds: float  # measured forward time exiting here
    speedup: float  # full-depth forward time / this one


@dataclass
class EfficiencyResult:
    skip_configs: list[SkipConfig]
    exits: list[ExitPoint]
    single_skip_kl: list[float]  # per layer: KL of skipping that layer alone (ranks the weakest layers)
    notes: str = ""


def migrate(experiment: str, data: Mapping[str, Any]) -> dict:
    """A stored result (JSON form) in the current schema: fields later schemas removed are dropped, and fields
    later schemas added, which an older record lacks, are None (not measured)."""
    drop = {f for by in REMOVED.values() for f in by.get(experiment, ())}
    out = {k: v for k, v in data.items() if k not in drop}
    for f in added(experiment):
        out.setdefault(f, None)
    return out


def added(experiment: str) -> tuple[str, ...]:
    """The fields of ``experiment``'s result that a schema after the first added (None in older records)."""
    return tuple(f for by in ADDED.values() for f in by.get(experiment, ()))


@lru_cache(maxsize=1)
def _converter():
    import cattrs

    conv = cattrs.Converter(forbid_extra_keys=True)
    conv.register_structure_hook(float, lambda v, _: float("nan") if v is None else float(v))
    return conv


def load_result(experiment: str, data: Any) -> Any:
    """The typed result of ``experiment`` (its spec's result type) from its stored JSON form; a result
    that is already typed is returned as it is."""
    from atlas_core.spec import experiment as spec_of

    cls = spec_of(experiment).result
    if isinstance(data, cls):
        return data
    if not isinstance(data, Mapping):
        raise AtlasError(
            f"the stored {experiment} result is a {type(data).__name__}, not an object; "
            "delete the record and rerun the experiment (atlas run)"
        )
    import cattrs

    try:
        return _converter().structure(migrate(experiment, data), cls)
    except cattrs.BaseValidationError as exc:
        problems = "; ".join(cattrs.transform_error(exc))
        raise AtlasError(
            f"the stored {experiment} result does not match {cls.__name__} (schema {SCHEMA}): "
            f"{problems}; delete the record and rerun the experiment (atlas run)"
        ) from None
