"""The ablation sections of ``docs/REPLICATION.md`` (:mod:`atlas_core.report.replication`): layer ablation's top
layers, the mean and resample modes, MLP ablation and the specialist heads of head ablation, the study's figures
beside each baseline run's sweeps."""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

from atlas_core.metrics import is_tie
from atlas_core.report import cells
from atlas_core.report import sections as S
from atlas_core.report.study_baselines import Baseline, Doc
from atlas_core.report.cells import NONE, NOT_RUN
from atlas_core.experiments.layer_ablation import LayerSweep
from atlas_core.report.data import defined, fmt
from atlas_core.report.study import Study
from atlas_core.tasks import FAMILIES
from atlas_core.verdicts import ratio_stat
from atlas_core.report.replication_grid import grid, study_cols


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


def layer_ablation(doc: Doc) -> dict:
    """The study's top-5 layers beside each run's, for the study's target and for the layer write."""
    st = doc.study
    labels = [str(i + 1) for i in range(S.TOP_K)]
    top = grid(
        labels,
        study_cols(st, "layer_ablation", lambda t, role: _study_top(t["top"], role, st)),
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
    delta = grid(
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
    layers = grid(
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
    ranks = grid(
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
    mlps = grid(
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
    top = grid(
        [str(i + 1) for i in range(S.TOP_K)],
        study_cols(st, "mlp_ablation", lambda t, role: _study_top(t["top"], role, st)),
        doc.baselines,
        "mlp_ablation",
        lambda b: _sweep_top(b, "mlp_ablation", "mlp", "zero"),
        "rank",
    )
    share = [("study " + st.name(r), [fmt(st[r]["mlp_ablation"]["share"], "pct")]) for r in ("large", "small")]
    return {
        "top": top,
        "share": grid(
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
    families = grid(fams, study, doc.baselines, "head_ablation", lambda b: [_head_cell(b, f) for f in fams], "family")
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
    return {"families": families, "strongest": grid(labels, study, doc.baselines, "head_ablation", _head_cells, "")}


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
