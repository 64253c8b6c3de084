"""``docs/REPLICATION.md``: the study's tables beside the committed baseline runs, as Markdown.

One job: a baselines folder (run folders written by ``atlas run``, see
:func:`atlas_core.baselines.baseline_runs`) in, one deterministic Markdown document out (no render time,
no absolute paths: the same JSON gives the same bytes wherever the folder lies). Regenerate with
:data:`REGENERATE`; ``tests_atlas/report/test_replication_doc.py`` checks the committed copy.

This module assembles the tables (rows of cells) each section shows; the prose and the layout are the
template ``templates/replication.md``. Where the numbers come from:

- measured: the runs' JSON only (the records' results, the manifests' provenance), through
  :mod:`~atlas_core.report.study_baselines` and the finding statistics of :mod:`atlas_core.verdicts`;
- the study's: :mod:`~atlas_core.report.study`, the ``[study]`` tables of :data:`STUDY_CLAIMS`
  (transcribed from ``shared/seed/qwen2.5-1.5b-atlas.txt``); no study figure lives in Python.

Where runs and study agree, the verdicts and the standing differences: :mod:`~atlas_core.report.agreement`.

Numbers print through :func:`~atlas_core.report.data.fmt` (three significant digits) and relative depth
is ``layer / (n_layers - 1)`` (:func:`atlas_core.verdicts.relative_depth`), as in the HTML reports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from jinja2 import Environment, PackageLoader, StrictUndefined

from atlas_core.claims import CLAIMS_DIR
from atlas_core.metrics import is_tie
from atlas_core.report import cells
from atlas_core.report import sections as S
from atlas_core.report.agreement import REL_TOL, differences, known, pair_stat, verdicts
from atlas_core.report.study_baselines import Baseline, Doc, load_doc
from atlas_core.report.cells import NONE, NOT_RUN, Table
from atlas_core.report.data import defined, fmt
from atlas_core.report.study import STUDY_CLAIMS, Study, best_exit, load_study
from atlas_core.results import atomic_write_text
from atlas_core.spec import experiments
from atlas_core.tasks import FAMILIES
from atlas_core.experiments.efficiency import MID_BAND
from atlas_core.experiments.layer_ablation import LayerSweep
from atlas_core.verdicts import final_fraction, ratio_stat

REGENERATE = "atlas report --replication atlas_core/data/baselines --doc docs/REPLICATION.md"
TEMPLATE = "replication.md"


# --------------------------------------------------------------------------------------------------
# tables


def _cells(b: Baseline, key: str, fn: Callable[[Baseline], list[str]], n: int) -> list[str]:
    """A run's column of ``n`` cells: ``not run`` when it lacks experiment ``key``."""
    if not b.has(key):
        return [NOT_RUN] + [""] * (n - 1)
    column = fn(b)
    return column[:n] + [NONE] * (n - len(column))


def _grid(
    labels: Sequence[str],
    study: Sequence[tuple[str, Sequence[str]]],
    baselines: Sequence[Baseline],
    key: str,
    fn: Callable[[Baseline], list[str]],
    corner: str = "",
) -> Table:
    """One row per label, the study's columns, then one column per run."""
    n = len(labels)
    cols = [list(column)[:n] + [NONE] * (n - len(column)) for _, column in study]
    cols += [_cells(b, key, fn, n) for b in baselines]
    head = [corner] + [h for h, _ in study] + [b.label for b in baselines]
    return Table(head, [[labels[i]] + [c[i] for c in cols] for i in range(n)])


def _study_cols(study: Study, table: str, fn: Callable[[Any, str], list[str]]) -> list[tuple[str, list[str]]]:
    """The study's columns of a table (large model first), for the roles the study gives it for."""
    return [
        (f"study {study.name(role)}", fn(study[role][table], role))
        for role in ("large", "small")
        if table in study[role]
    ]


def _study_top(rows: Sequence[Mapping], role: str, study: Study) -> list[str]:
    return [study.layer(r["layer"], role) + ("" if r.get("kl") is None else f" {fmt(r['kl'])}") for r in rows]


def _sweep(b: Baseline, key: str, target: str, mode: str) -> LayerSweep | None:
    return next((s for s in b.result(key).sweeps if (s.target, s.mode) == (target, mode)), None)


def _sweep_top(b: Baseline, key: str, target: str, mode: str, k: int = S.TOP_K) -> list[str]:
    """``L9 (39.1%) 14.3 [13.7, 14.9]`` for the sweep's top ``k`` layers (mean KL over all prompts)."""
    s = _sweep(b, key, target, mode)
    if s is None:
        return [f"{NOT_RUN} at this profile"]
    if is_tie(s.family_mean_kl):
        return [f"all {len(s.layers)} layers tie at {cells.est(s.mean_kl[0])}: no layer stands out (see below)"]
    return [f"{b.layer(layer)} {cells.est(s.mean_kl[s.layers.index(layer)])}" for layer in s.ranking[:k]]


# --------------------------------------------------------------------------------------------------
# sections: each returns what its part of the template shows


def intro(doc: Doc) -> dict:
    """What was run: the study's two models and each run's model, profile and weights."""
    st = doc.study
    lg, sm = st["large"], st["small"]
    rows = [
        [
            f"study: {st.name('large')} (base)",
            "—",
            lg["architecture"],
            str(lg["n_layers"]),
            lg["heads"],
            fmt(lg["d_model"]),
            "—",
            "not stated",
            str(lg["families"]),
            lg["dtype"],
            lg["device"],
            "—",
        ],
        [
            f"study: {st.name('small')} (quoted)",
            "—",
            sm["architecture"],
            str(st.n_layers("small")),
            NONE,
            NONE,
            "—",
            "not stated",
            NONE,
            NONE,
            NONE,
            "—",
        ],
    ]
    for b in doc.baselines:
        m = b.run.model
        heads = f"{m.get('n_heads', NONE)} ({m.get('n_kv_heads', NONE)} KV)"
        fams = len(b.run.manifest.get("families") or {}) or NONE
        rows.append(
            [
                b.run.name,
                f"`{b.run.root.name}`",
                m.get("architecture", NONE),
                fmt(m.get("n_layers")),
                heads,
                fmt(m.get("d_model")),
                b.card["profile"],
                b.prompts_per_family(),
                str(fams),
                m.get("dtype", NONE),
                m.get("device", NONE),
                f"`{str(m.get('weights_sha256', ''))[:12]}`",
            ]
        )
    hub, n = lg["layer_ablation"]["top"][0]["layer"], st.n_layers("large")
    return {
        "study_depth": f"{round(100 * hub / n)}% for L{hub} of {n}",
        "table": Table(
            [
                "model",
                "run folder",
                "architecture",
                "layers",
                "heads",
                "d_model",
                "profile",
                "prompts per family",
                "families",
                "dtype",
                "device",
                "weights SHA-256",
            ],
            rows,
        ),
    }


def timings(doc: Doc) -> dict:
    """Per run: device, dtype, profile, versions, wall seconds per experiment and in total; the sessions
    an experiment was resumed across and the CPU threads it ran on."""
    rows = [
        [k] + [str(b.card["profile"] if k == "profile" else b.run.model.get(k, NONE)) for b in doc.baselines]
        for k in ("profile", "device", "dtype")
    ]
    for pkg in ("torch", "transformers", "peft"):
        rows.append([pkg] + [str((b.run.manifest.get("versions") or {}).get(pkg, NONE)) for b in doc.baselines])
    for key in experiments():
        rows.append(
            [key]
            + [
                f"{fmt(_wall(b, key))} s ({b.n_items(key) or 'all'} per family)" if b.has(key) else NOT_RUN
                for b in doc.baselines
            ]
        )
    rows.append(
        ["**total**"]
        + [f"**{fmt(b.card['total'].value)} s** ({fmt(b.card['total'].value / 60)} min)" for b in doc.baselines]
    )
    resumed, threads = [], []
    for b in doc.baselines:
        provs = {k: b.run.records[k].provenance for k in experiments() if b.has(k)}
        back = [
            f"{k} ({fmt(p['resumed_after_seconds'])} s before its last session)"
            for k, p in provs.items()
            if (p.get("resumed_after_seconds") or 0) > 0
        ]
        if back:
            resumed.append(f"{b.label}: {', '.join(back)}")
        used = sorted({p["torch_threads"] for p in provs.values() if p.get("torch_threads")})
        if used:
            threads.append(f"{b.label}: {', '.join(map(str, used))}")
    return {"table": Table([""] + [b.label for b in doc.baselines], rows), "resumed": resumed, "threads": threads}


def _wall(b: Baseline, key: str) -> float | None:
    """The experiment's wall seconds: the manifest's, else the record's provenance."""
    walls = {k: secs.value for k, secs, _ in b.card["walls"]}
    return walls[key] if key in walls else b.run.records[key].provenance.get("wall_seconds")


def layer_ablation(doc: Doc) -> dict:
    """The study's top-5 layers beside each run's, for the study's target and for the layer write."""
    st = doc.study
    labels = [str(i + 1) for i in range(S.TOP_K)]
    top = _grid(
        labels,
        _study_cols(st, "layer_ablation", lambda t, role: _study_top(t["top"], role, st)),
        doc.baselines,
        "layer_ablation",
        lambda b: _sweep_top(b, "layer_ablation", "resid", "zero"),
        "rank",
    )
    ties = [
        b.label
        for b in doc.baselines
        if b.has("layer_ablation") and (t := _sweep(b, "layer_ablation", "resid", "zero")) and is_tie(t.family_mean_kl)
    ]
    delta = _grid(
        labels,
        [("study", ["not measured"])],
        doc.baselines,
        "layer_ablation",
        lambda b: _sweep_top(b, "layer_ablation", "delta", "zero"),
        "rank",
    )
    return {
        "top": top,
        "delta": delta,
        "ties": ties,
        "lowest": [f"{b.label} {_sweep_min(b, 'layer_ablation', 'resid', 'zero')}" for b in doc.baselines],
    }


def _sweep_min(b: Baseline, key: str, target: str, mode: str) -> str:
    s = _sweep(b, key, target, mode) if b.has(key) else None
    if s is None:
        return NOT_RUN
    vals = s.family_mean_kl
    if is_tie(vals):
        return f"none (all layers tie at {fmt(vals[0])})"
    j = min((i for i, v in enumerate(vals) if defined(v)), key=lambda i: vals[i], default=None)
    return NONE if j is None else f"{b.layer(s.layers[j])} {fmt(vals[j])}"


def ablation_modes(doc: Doc) -> dict:
    """Top layers and KL range per target and mode, the modes the study lacks included."""
    st = doc.study
    la = st["large"]["layer_ablation"]
    study_zero = f"{_names(la['top'][:3])} · {fmt(la['lowest']['kl'])}–{fmt(la['top'][0]['kl'])}"
    labels = [f"{t} / {m}" for t in ("resid", "delta") for m in ("zero", "mean", "resample")]
    study = [("study " + st.name("large"), [study_zero] + ["not measured"] * (len(labels) - 1))]
    layers = _grid(
        labels,
        study,
        doc.baselines,
        "layer_ablation",
        lambda b: [_mode_cell(b, "layer_ablation", *lab.split(" / ")) for lab in labels],
        "target / mode",
    )
    matched = [b for b in doc.baselines if b.role is not None]
    tops = [
        f"{st.layer(st[r]['layer_ablation']['top'][0]['layer'], r)} of {st.name(r)}"
        for r in ("large", "small")
        if any(b.role == r for b in matched)
    ]
    ranks = _grid(
        labels,
        [],
        matched,
        "layer_ablation",
        lambda b: [_study_layer_rank(b, st, *lab.split(" / ")) for lab in labels],
        "target / mode",
    )
    mlp = [f"mlp / {m}" for m in ("zero", "mean", "resample")]
    top = st["large"]["mlp_ablation"]["top"]
    study = [
        (
            "study " + st.name("large"),
            [f"{_names(top[:3])} · max {fmt(top[0]['kl'])}"] + ["not measured"] * (len(mlp) - 1),
        )
    ]
    mlps = _grid(
        mlp,
        study,
        doc.baselines,
        "mlp_ablation",
        lambda b: [_mode_cell(b, "mlp_ablation", *lab.split(" / ")) for lab in mlp],
        "target / mode",
    )
    return {"layers": layers, "tops": tops, "ranks": ranks if matched else None, "mlp": mlps}


def _names(rows: Iterable[Mapping]) -> str:
    """``L26, L6, L14``: the layers of the study's rows, in its order."""
    return ", ".join(f"L{r['layer']}" for r in rows)


def _study_layer_rank(b: Baseline, study: Study, target: str, mode: str) -> str:
    """``#3 of 28 · 14.3``: the rank in this sweep of the layer the study found strongest for ``b``'s role."""
    s = _sweep(b, "layer_ablation", target, mode)
    if s is None:
        return f"{NOT_RUN} at this profile"
    layer = study[b.role]["layer_ablation"]["top"][0]["layer"]
    if layer not in s.layers:
        return f"L{layer} not swept"
    if is_tie(s.family_mean_kl):
        return "all layers tie"
    rank = list(s.ranking).index(layer) + 1
    return f"#{rank} of {len(s.ranking)} · {fmt(s.family_mean_kl[s.layers.index(layer)])}"


def _mode_cell(b: Baseline, key: str, target: str, mode: str) -> str:
    s = _sweep(b, key, target, mode)
    if s is None:
        return f"{NOT_RUN} at this profile"
    if is_tie(s.family_mean_kl):
        return f"all layers tie · {cells.value_range(s.family_mean_kl)}"
    return f"{', '.join(f'L{x}' for x in s.ranking[:3])} · {cells.value_range(s.family_mean_kl)}"


def mlp_ablation(doc: Doc) -> dict:
    """The top MLPs and the strongest MLP's share of the top layer's effect."""
    st = doc.study
    top = _grid(
        [str(i + 1) for i in range(S.TOP_K)],
        _study_cols(st, "mlp_ablation", lambda t, role: _study_top(t["top"], role, st)),
        doc.baselines,
        "mlp_ablation",
        lambda b: _sweep_top(b, "mlp_ablation", "mlp", "zero"),
        "rank",
    )
    share = [("study " + st.name(r), [fmt(st[r]["mlp_ablation"]["share"], "pct")]) for r in ("large", "small")]
    return {
        "top": top,
        "share": _grid(
            ["MLP share"], share, doc.baselines, "mlp_ablation", lambda b: [b.stat("mlp.share_of_top_layer", "pct")], ""
        ),
    }


def head_ablation(doc: Doc) -> dict:
    """The strongest head per family, the strongest head overall and the layer/head gap."""
    st = doc.study
    fams = list(FAMILIES)
    per = st["large"]["head_ablation"]["families"]
    study = [
        ("study " + st.name("large"), [f"{per[f]['head']} {fmt(per[f]['kl'])}" if f in per else NONE for f in fams])
    ]
    families = _grid(fams, study, doc.baselines, "head_ablation", lambda b: [_head_cell(b, f) for f in fams], "family")
    study = []
    for role in ("large", "small"):
        h = st[role]["head_ablation"]
        where = h["strongest"].get("head")
        study.append(
            (
                f"study {st.name(role)}",
                [
                    fmt(h["strongest"]["kl"]) + (f" ({where})" if where else ""),
                    fmt(h["layer_head_gap"], "x"),
                    f"all {st.n_layers(role)}" if role == "large" else NONE,
                ],
            )
        )
    labels = ["strongest head", "top layer KL / strongest head", "layers swept"]
    return {"families": families, "strongest": _grid(labels, study, doc.baselines, "head_ablation", _head_cells, "")}


def _head_cells(b: Baseline) -> list[str]:
    return [
        f"{b.stat('heads.max_kl')} ({b.stats['heads.max_kl'].label})",
        _gap_cell(b),
        f"{cells.layers(b.result('head_ablation').layers)} of {b.n_layers}",
    ]


def _head_cell(b: Baseline, family: str) -> str:
    s = b.stats.get(f"heads.family_max_kl.{family}")
    return NONE if s is None else f"{s.label} {fmt(s.value)}"


def _gap_cell(b: Baseline) -> str:
    """The layer/head gap as stored (head ablation's max_layer_kl), else top layer KL / strongest head."""
    gap = b.stats.get("heads.layer_head_gap")
    hub, head = b.stats.get("hub.top_layer_kl"), b.stats.get("heads.max_kl")
    if gap is None and (hub is None or head is None):
        return f"{NONE} (needs layer_ablation)"
    return fmt((gap or ratio_stat(hub, head)).value, "x")


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
    summary = _grid(labels, study, doc.baselines, "steering", _steer_cells, "")
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
        "prompts": _grid(
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
    return _grid(labels, study, doc.baselines, "knockout", _knock_cells, "")


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
    families = _grid(
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
    return {"families": families, "training": _grid(labels, study, doc.baselines, "lora_training", _lora_cells, "")}


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
    study = _study_cols(
        st,
        "transfer",
        lambda t, role: [f"{st.layer(r['layer'], role)} {fmt(r['recovery'], 'pct')}" for r in t["recovery"]],
    )
    top = _grid([str(i + 1) for i in range(n)], study, doc.baselines, "transfer", lambda b: _transfer_top(b, n), "rank")
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
    fractions = _grid(
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
    return _grid(labels, study, doc.baselines, "adapter_ablation", _adapter_cells, "")


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
    return _grid(names, study, doc.baselines, "efficiency", lambda b: [_skip_cell(b, c) for c in names], "config")


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
    return _grid(labels, study, doc.baselines, "efficiency", lambda b: _exit_cells(b, exits), "")


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


# --------------------------------------------------------------------------------------------------

SECTIONS: dict[str, Callable[[Doc], Any]] = {
    "intro": intro,
    "timings": timings,
    "layer_ablation": layer_ablation,
    "ablation_modes": ablation_modes,
    "mlp_ablation": mlp_ablation,
    "head_ablation": head_ablation,
    "steering": steering,
    "knockout": knockout,
    "lora": lora,
    "transfer": transfer,
    "adapter": adapter,
    "skipping": skipping,
    "early_exit": early_exit,
    "hypotheses": verdicts,
    "differences": differences,
    "known": known,
}


def _rel(path: Path) -> str:
    """The study file as the document names it: relative to the repository, so no absolute path shows."""
    try:
        return str(path.resolve().relative_to(CLAIMS_DIR.parents[2]))
    except ValueError:
        return path.name


def _env() -> Environment:
    """Markdown: no autoescape (the document is not HTML); every name the template uses must exist."""
    env = Environment(
        loader=PackageLoader("atlas_core.report", "templates"),
        autoescape=False,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["fmt"] = fmt
    env.filters["cell"] = lambda c: str(c).replace("|", "\\|").replace("\n", " ")
    return env


def render_replication_doc(baselines_dir: str | Path, claims: str | Path = STUDY_CLAIMS) -> str:
    """The Markdown of the replication document for the runs under ``baselines_dir``."""
    study = load_study(claims)
    doc = load_doc(baselines_dir, study)
    ctx = {name: build(doc) for name, build in SECTIONS.items()}
    text = (
        _env()
        .get_template(TEMPLATE)
        .render(
            doc=doc,
            study=study,
            large=study["large"],
            small=study["small"],
            source=_rel(study.source),
            regenerate=REGENERATE,
            rel_tol=REL_TOL,
            pair_stat=lambda *a: pair_stat(doc, *a),
            mid=MID_BAND,
            **ctx,
        )
    )
    return text.rstrip("\n") + "\n"


def write_replication_doc(baselines_dir: str | Path, out: str | Path, claims: str | Path = STUDY_CLAIMS) -> Path:
    """Write the replication document (``docs/REPLICATION.md``) and return its path."""
    return atomic_write_text(Path(out), render_replication_doc(baselines_dir, claims))
