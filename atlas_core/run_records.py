"""What a run folder's records say of themselves, read by ``atlas run`` (:mod:`atlas_core.orchestrate`) to decide
what it may reuse: the config an experiment's record is computed with and how two configs differ, the code
fingerprints the golden record vouches for, the identity (model, weights, profile, dtype, families) of the folder's
manifest and records; and the table of the work its records did."""

from __future__ import annotations

from atlas_core.experiments.context import Context
from atlas_core.spec import experiment as spec_of
from atlas_core.results import RecordStore
from atlas_core.work import summary


def verified_codes(experiment: str) -> list[str]:
    """The code fingerprints the golden record lists as reproducing ``experiment`` (none without a record)."""
    from atlas_core import golden

    path = golden.golden_path()
    entry = golden.read(path).get(experiment) if path.is_file() else None
    return entry.codes if entry is not None else []


def experiment_config(name: str, ctx: Context, seed: int, base_seed: int | None = None) -> dict:
    """``base_seed``: the run's first seed (default ``ctx.seed``); an extra seed's record is keyed by it."""
    info = ctx.lm.info
    spec = spec_of(name)
    extra = spec.config(ctx) if spec.config is not None else {}
    if spec.knobs:  # its own settings at this profile are part of what its record was computed with
        extra = {**extra, "knobs": {k.name: k.value(ctx.profile.name) for k in spec.knobs}}
    return {
        "experiment": name,
        "model": info.name,
        "weights_sha256": info.weights_sha256,
        "dtype": info.dtype,
        "device_type": info.device.split(":")[0],
        "profile": ctx.profile.to_dict(),
        "families": {n: f.sha256 for n, f in ctx.families.items()},
        "n_items": ctx.profile.n_items,
        "seed": seed,
        "base_seed": ctx.seed if base_seed is None else base_seed,
        "extra": extra,
    }


IDENTITY = ("model", "weights_sha256", "profile", "dtype", "families")  # what one run folder holds one of


def folder_identity(model: dict, profile: str | None, families) -> dict:
    """The facts a run folder holds one of, from a model's facts (``ModelInfo.to_dict()``), a profile name
    and the family names; a fact that is unknown (None) constrains nothing."""
    return {
        "model": model.get("name"),
        "weights_sha256": model.get("weights_sha256"),
        "profile": profile,
        "dtype": model.get("dtype"),
        "families": sorted(families) if families is not None else None,
    }


def stored_identities(store: RecordStore) -> list[tuple[str, dict]]:
    """(where, identity) of the folder's manifest and of each of its records."""
    out = []
    manifest_path = store.root / "manifest.json"
    if manifest_path.is_file():
        m = store.manifest()
        out.append(
            (
                str(manifest_path),
                folder_identity(m.get("model") or {}, (m.get("profile") or {}).get("name"), m.get("families")),
            )
        )
    for key, rec in store.records().items():
        prov = rec.provenance
        out.append(
            (
                str(store.path(key)),
                folder_identity(prov.get("model") or {}, prov.get("profile"), prov.get("task_sha256")),
            )
        )
    return out


def work_summary(store: RecordStore) -> str:
    """The per-experiment table of useful work and achieved rate of a run folder, from its records' provenance
    (each record's own figures: one reused from an earlier run shows that run's)."""
    return summary(
        [
            (key, rec.provenance.get("work"), float(rec.provenance.get("wall_seconds") or 0.0))
            for key, rec in store.records().items()
        ]
    )


def config_diff(stored: dict, current: dict, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two experiment configs (nested dicts walked)."""
    out = []
    for k in sorted(set(stored) | set(current)):
        a, b = stored.get(k), current.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_diff(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}")
    return out
