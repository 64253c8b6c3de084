"""The stored form of every experiment's result and its versions. Each result type lives beside its
experiment (its spec's ``result``) and is the contract between the experiment, the hypothesis suite and the
reports. It is written and read by the one converter (``atlas_core.results.unstructure`` and ``structure``):
field names are the JSON keys, an ``Estimate`` is ``{"value", "lo", "hi", "n"}`` (bootstrap 95% interval over
prompts), undefined numbers are stored as ``null`` and read back as NaN.

Layer-indexed lists are in layer order (index i is ``layers[i]``). Per-family dicts are keyed by family name in
``FAMILIES`` order.

Reading checks the record against its type (:func:`load_result`): a field the type does not have is an error,
except the fields a later schema removed (``REMOVED``), which records of an earlier schema still carry and which
are dropped on reading; fields a later schema added (``ADDED``) read as None in older records.
"""

from __future__ import annotations

from typing import Any, Mapping

from atlas_core import AtlasError
from atlas_core.results import SCHEMA, structure

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
        return structure(migrate(experiment, data), cls)
    except cattrs.BaseValidationError as exc:
        problems = "; ".join(cattrs.transform_error(exc))
        raise AtlasError(
            f"the stored {experiment} result does not match {cls.__name__} (schema {SCHEMA}): "
            f"{problems}; delete the record and rerun the experiment (atlas run)"
        ) from None
