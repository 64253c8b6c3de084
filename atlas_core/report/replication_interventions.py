"""The sections of ``docs/REPLICATION.md`` (:mod:`atlas_core.report.replication`) after the ablations: steering,
skill knockout, LoRA training, cross-model transfer, adapter ablation, layer skipping and early exit, the study's
figures beside each baseline run's."""

from __future__ import annotations

from typing import Mapping, Sequence

from atlas_core.report import cells
from atlas_core.report import sections as S
from atlas_core.report.study_baselines import Baseline, Doc
from atlas_core.report.cells import NONE, Table
from atlas_core.report.data import defined, fmt
from atlas_core.report.study import best_exit
from atlas_core.tasks import FAMILIES
from atlas_core.verdicts import final_fraction
from atlas_core.report.replication_grid import grid, study_cols


def steering(doc: Doc) -> dict:
    """Best boost, the boost at the study's layer, and the study's own prompts."""
    st = doc.study
    labels = [
        "layers steered",
        "best boost (layer, strength)",
        "boost at the study's layer",
        "clean target probability",
        "direction norm at the study's layer",
    ]
    study = []
    for role in ("large", "small"):
        s = st[role]["steering"]
        at = st.layer(s["layer"], role)
        study.append(
            (
                f"study {st.name(role)}",
                [
                    at + " only",
                    f"{fmt(s['best_boost'])} at {at}",
                    f"{fmt(s['best_boost'])} at {at}",
                    NONE,
                    fmt(s["norm"]) if "norm" in s else NONE,
                ],
            )
        )
    summary = grid(labels, study, doc.baselines, "steering", _steer_cells, "")
    prompts, at = st["large"]["steering"]["prompts"], st["large"]["steering"]["layer"]
    study = [
        (
            "study " + st.name("large"),
            [
                f"{fmt(p['clean'])} → {fmt(p['best'])}" + (f" (L{at}, {p['strength']:+g})" if "strength" in p else "")
                for p in prompts
            ],
        )
    ]
    return {
        "summary": summary,
        "prompts": grid(
            [f"`{p['prompt']!r}`" for p in prompts],
            study,
            doc.baselines,
            "steering",
            lambda b: [_steer_prompt(b, p["prompt"]) for p in prompts],
            "prompt",
        ),
    }


def _steer_cells(b: Baseline) -> list[str]:
    r = b.result("steering")
    j = r.layers.index(r.study_layer) if r.study_layer in r.layers else None
    return [
        f"{len(r.layers)}: {cells.layers(r.layers)}",
        f"{cells.est(r.best_boost)} at {b.layer(r.best_layer)}, strength {r.best_strength:+g}",
        f"{cells.est(r.study_layer_best_boost)} at {b.layer(r.study_layer)}",
        fmt(r.baseline_prob),
        NONE if j is None else fmt(r.direction_norm[j]),
    ]


def _steer_prompt(b: Baseline, prompt: str) -> str:
    p = next((p for p in b.result("steering").prompts if p.prompt == prompt), None)
    if p is None:
        return NONE
    return f"{fmt(p.baseline_prob)} → {fmt(p.best_prob)} (L{p.best_layer}, {p.best_strength:+g})"


def knockout(doc: Doc) -> Table:
    """Best selectivity, the drops behind it, and every swept layer's selectivity."""
    st = doc.study
    labels = [
        "best selectivity",
        "skill drop at best layer",
        "non-skill drop at best layer",
        "per-layer selectivity",
        "selective layers (> 1×)",
    ]
    study = []
    for role in ("large", "small"):
        k = st[role]["knockout"]
        rows = k.get("layers", [])
        best = next((r for r in rows if r["layer"] == k["best_layer"]), None)
        study.append(
            (
                f"study {st.name(role)}",
                [
                    f"{fmt(st[role]['best_selectivity'], 'x')} at {st.layer(k['best_layer'], role)}",
                    fmt(best["skill_drop"]) if best else NONE,
                    fmt(best["nonskill_drop"]) if best else NONE,
                    ", ".join(f"L{r['layer']} {fmt(r['selectivity'], 'x')}" for r in rows) or NONE,
                    f"{sum(r['selectivity'] > 1 for r in rows)} of {len(rows)}" if rows else NONE,
                ],
            )
        )
    return grid(labels, study, doc.baselines, "knockout", _knock_cells, "")


def _knock_cells(b: Baseline) -> list[str]:
    r = b.result("knockout")
    ls = r.layers
    return [
        f"{fmt(r.best_selectivity, 'x')} at {b.layer(r.best_layer)}",
        b.stat("knockout.skill_drop"),
        b.stat("knockout.nonskill_drop"),
        ", ".join(f"L{k.layer} {fmt(k.selectivity, 'x')}" for k in ls),
        f"{sum(defined(k.selectivity) and k.selectivity > 1 for k in ls)} of {len(ls)} (strength {r.strength:+g})",
    ]


def lora(doc: Doc) -> dict:
    """Base -> trained KL per family (the study's order) and the training figures."""
    st = doc.study
    params = st["large"]["lora"]
    kl = params["kl"]
    fams = list(kl) + [f for f in FAMILIES if f not in kl]
    study = [("study " + st.name("large"), [fmt(kl[f]) if f in kl else NONE for f in fams])]
    families = grid(
        fams,
        study,
        doc.baselines,
        "lora_training",
        lambda b: [cells.est(b.result("lora_training").kl_per_family.get(f)) for f in fams],
        "family",
    )
    labels = ["rank / alpha", "batch size", "peak learning rate", "final loss", "steps (converged)"]
    study = [
        (
            "study " + st.name("large"),
            [f"{params['rank']} / {params['alpha']}", fmt(params["batch_size"]), NONE, fmt(params["final_loss"]), NONE],
        )
    ]
    return {"families": families, "training": grid(labels, study, doc.baselines, "lora_training", _lora_cells, "")}


def _lora_cells(b: Baseline) -> list[str]:
    r = b.result("lora_training")
    return [
        f"{r.rank} / {r.alpha}",
        fmt(r.batch_size),
        fmt(r.learning_rate),
        fmt(r.final_loss),
        f"{r.steps} ({'yes' if r.converged else 'no'})",
    ]


def transfer(doc: Doc) -> dict:
    """Recovery per layer, strongest first, and the final fraction of depth of the top three and the zone."""
    st = doc.study
    n = max(len(st["large"]["transfer"]["recovery"]), 3)
    study = study_cols(
        st,
        "transfer",
        lambda t, role: [f"{st.layer(r['layer'], role)} {fmt(r['recovery'], 'pct')}" for r in t["recovery"]],
    )
    top = grid([str(i + 1) for i in range(n)], study, doc.baselines, "transfer", lambda b: _transfer_top(b, n), "rank")
    study = [
        (
            f"study {st.name(role)}",
            [
                fmt(final_fraction(st[role][key], st.n_layers(role)), "pct")
                for key in ("top_transfer_layers", "transfer_zone")
            ],
        )
        for role in ("large", "small")
    ]
    fractions = grid(
        ["top-3 final fraction", "zone final fraction"],
        study,
        doc.baselines,
        "transfer",
        lambda b: [
            f"{b.stat('transfer.top_final_fraction', 'pct')} ({cells.layers(b.result('transfer').top_layers[:3])})",
            f"{b.stat('transfer.zone_final_fraction', 'pct')} ({cells.layers(b.result('transfer').zone)})",
        ],
        "",
    )
    return {"top": top, "fractions": fractions}


def _transfer_top(b: Baseline, n: int) -> list[str]:
    r = b.result("transfer")
    rec = r.mean_recovery
    order = sorted((j for j, e in enumerate(rec) if defined(e.value)), key=lambda j: -rec[j].value)
    return [f"{b.layer(r.layers[j])} {cells.est(rec[j], 'pct')}" for j in order[:n]]


def adapter(doc: Doc) -> Table:
    """Norm-effect correlation and the layers where switching the adapter off matters most."""
    st = doc.study
    labels = ["Pearson r (norm vs effect)", "Spearman ρ (norm vs effect)", "norm range"] + [
        f"top {i + 1}: layer KL (norm)" for i in range(S.TOP_K)
    ]
    study = []
    for role in ("large", "small"):
        a = st[role].get("adapter_ablation", {})
        top = [f"{st.layer(r['layer'], role)} {fmt(r['kl'])} ({fmt(r['norm'])})" for r in a.get("top", ())]
        rng = f"{fmt(a['norm_range'][0])}–{fmt(a['norm_range'][1])}" if "norm_range" in a else NONE
        study.append((f"study {st.name(role)}", [fmt(st[role]["adapter_pearson"]), NONE, rng] + top))
    return grid(labels, study, doc.baselines, "adapter_ablation", _adapter_cells, "")


def _adapter_cells(b: Baseline) -> list[str]:
    r = b.result("adapter_ablation")
    top = [
        f"{b.layer(x)} {cells.est(r.kl[r.layers.index(x)])} ({fmt(r.norm[r.layers.index(x)])})"
        for x in r.top_layers[: S.TOP_K]
    ]
    return [b.stat("adapter.pearson"), b.stat("adapter.spearman"), cells.value_range(r.norm)] + top


def skipping(doc: Doc) -> Table:
    """The study's skip configurations: layers, KL and top-5 overlap."""
    st = doc.study
    skip = st["large"]["skipping"]
    names = list(skip)
    study = [
        (
            "study " + st.name("large"),
            [f"{cells.layers(c['layers'])} · {fmt(c['kl'])} · {fmt(c['top5_overlap'], 'pct')}" for c in skip.values()],
        )
    ]
    return grid(names, study, doc.baselines, "efficiency", lambda b: [_skip_cell(b, c) for c in names], "config")


def _skip_cell(b: Baseline, name: str) -> str:
    c = next((c for c in b.result("efficiency").skip_configs if c.name == name), None)
    if c is None:
        return NONE
    return f"{cells.layers(c.layers)} · {cells.est(c.mean_kl)} · {cells.est(c.top5_overlap, 'pct')}"


def early_exit(doc: Doc) -> Table:
    """Exits matched by layers skipped: KL, argmax match, speedup; the best exit's argmax match."""
    st = doc.study
    exits = st["large"]["early_exit"]["exits"]
    labels = [f"{e['skipped']} skipped" for e in exits] + ["best argmax match (≥ 1 skipped)"]
    best = best_exit(exits)
    study = [
        (
            "study " + st.name("large"),
            [
                f"L{e['layer']} · {fmt(e.get('kl'))} · {fmt(e['argmax_match'], 'pct')} · {fmt(e['speedup'], 'x')}"
                for e in exits
            ]
            + [f"{fmt(best['argmax_match'], 'pct')} (exit L{best['layer']})"],
        )
    ]
    return grid(labels, study, doc.baselines, "efficiency", lambda b: _exit_cells(b, exits), "")


def _exit_cells(b: Baseline, exits: Sequence[Mapping]) -> list[str]:
    best = b.stats.get("efficiency.best_exit_argmax")
    return [_exit_cell(b, e["skipped"]) for e in exits] + [
        NONE if best is None else f"{cells.est(best, 'pct')} ({best.label})"
    ]


def _exit_cell(b: Baseline, skipped: int) -> str:
    e = next((e for e in b.result("efficiency").exits if e.layers_skipped == skipped), None)
    if e is None:
        return NONE
    return f"L{e.layer} · {cells.est(e.mean_kl)} · {cells.est(e.argmax_match, 'pct')} · {fmt(e.speedup, 'x')}"
