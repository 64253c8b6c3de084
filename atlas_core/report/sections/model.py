"""The model card: the model's facts, its weights, the run's profile, versions, wall times and work."""

from __future__ import annotations

from atlas_core.report.data import ReportedRun, derived


def model_card(run: ReportedRun) -> dict:
    m = run.model
    man = run.manifest
    src = (
        ("manifest", ("model",))
        if man.get("model")
        else next(((k, ("provenance", "model")) for k, rec in run.records.items() if rec.provenance.get("model")), None)
    )
    facts = []
    for k in (
        "architecture",
        "n_layers",
        "n_heads",
        "n_kv_heads",
        "head_dim",
        "d_model",
        "vocab_size",
        "dtype",
        "device",
        "source",
        "load_seconds",
    ):
        if k not in m:
            continue
        numeric = isinstance(m[k], (int, float)) and not isinstance(m[k], bool)
        facts.append((k, run.num(src[0], *src[1], k) if numeric and src else m[k]))
    walls, total = [], 0.0
    for key, info in (man.get("experiments") or {}).items():
        walls.append((key, run.num("manifest", "experiments", key, "wall_seconds"), info.get("finished", "")))
        total += float(info.get("wall_seconds") or 0.0)
    if not walls:  # no manifest: fall back on each record's provenance
        for key, rec in run.records.items():
            if "wall_seconds" in rec.provenance:
                walls.append((key, run.num(key, "provenance", "wall_seconds"), rec.provenance.get("finished", "")))
                total += float(rec.provenance["wall_seconds"] or 0.0)
    work = []
    for key, rec in run.records.items():
        w = rec.provenance.get("work")
        if not w:
            continue
        base = (key, "provenance", "work")
        work.append(
            {
                "key": key,
                "gflop": derived(round(w["flop"] / 1e9, 3), "provenance.work.flop / 1e9", run=run.label),
                "rate": run.num(*base, "gflops_wall"),
                "forward_rate": run.num(*base, "gflops_forward"),
                "peak": run.num(*base, "peak_gflops") if "peak_gflops" in w else None,
                "fraction": run.num(*base, "peak_fraction_wall", kind="pct") if "peak_fraction_wall" in w else None,
                "padding": derived(
                    round(w["executed_flop"] / w["flop"], 3) if w["flop"] else None,
                    "executed_flop / flop",
                    run=run.label,
                ),
            }
        )
    profile = man.get("profile") or {}
    prof = [(k, ", ".join(map(str, v)) if isinstance(v, list) else v) for k, v in profile.items() if k != "name"]
    return {
        "name": run.name,
        "facts": facts,
        "sha": m.get("weights_sha256", "—"),
        "path": m.get("path"),
        "profile": run.profile or "—",
        "profile_items": prof,
        "versions": sorted((man.get("versions") or {}).items()),
        "walls": walls,
        "work": work,
        "total": derived(round(total, 3), "sum of the experiments' wall_seconds", run=run.label),
        "created": man.get("created", ""),
        "updated": man.get("updated", ""),
        "root": str(run.root),
        "families": list((man.get("families") or {}).keys()),
    }
