"""``docs/REPLICATION.md``: the study's tables beside the committed baseline runs, as Markdown.

One job: a baselines folder (run folders written by ``atlas run``, see
:func:`atlas_core.baselines.baseline_runs`) in, one deterministic Markdown document out (no render time,
no absolute paths: the same JSON gives the same bytes wherever the folder lies). Regenerate with
:data:`REGENERATE`; ``tests_atlas/report/test_replication_doc.py`` checks the committed copy.

Where the numbers come from:

- measured: the runs' JSON only (the records' results, the manifests' provenance), through
  :class:`~atlas_core.report.data.Run` and the finding statistics of :mod:`atlas_core.verdicts`;
- the study's: ``atlas_core/data/claims/study-qwen2.5-1.5b.toml`` (its ``[study]`` tables and claims, read at
  render time through :class:`Toml` references) and, for the figures that file lacks, :data:`SEED`
  below, transcribed from ``shared/seed/qwen2.5-1.5b-atlas.txt``.

Numbers print through :func:`~atlas_core.report.data.fmt` (three significant digits) and relative depth
is ``layer / (n_layers - 1)`` (:func:`atlas_core.verdicts.relative_depth`), as in the HTML reports.
"""

from __future__ import annotations

import statistics
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from atlas_core import AtlasError
from atlas_core.baselines import baseline_runs
from atlas_core.claims import CLAIMS_DIR, load_claims
from atlas_core.metrics import is_tie, pearson
from atlas_core.profiles import PROFILES
from atlas_core.report import compare as C
from atlas_core.report import sections as S
from atlas_core.report.data import Run, fmt
from atlas_core.results import atomic_write_text
from atlas_core.tasks import FAMILIES
from atlas_core.verdicts import Stat, decide, final_fraction, ratio_stat, relative_depth

REGENERATE = "atlas report --replication atlas_core/data/baselines --doc docs/REPLICATION.md"
STUDY_CLAIMS = CLAIMS_DIR / "study-qwen2.5-1.5b.toml"
NOT_RUN = "not run"
NONE = "—"
REL_TOL = 0.25  # a figure without an interval agrees when within 25% of the study's
ROLES = ("small", "large")


# --------------------------------------------------------------------------------------------------
# the study's figures


@dataclass(frozen=True)
class Toml:
    """A study figure the claims file holds: a path into its tables (``("study", "large", "hub_layer")``)
    or ``("claim", ID, FIELD)`` for a field of the claim with that id."""

    path: tuple[str, ...]

    def get(self, raw: Mapping, source: Path) -> Any:
        if self.path[0] == "claim":
            _, cid, key = self.path
            entry = next((c for c in raw.get("claim", []) if c.get("id") == cid), {})
            if key not in entry:
                raise AtlasError(f"{source} lacks claim {cid!r} (its {key!r}); the replication document reads "
                                 "the study's figure there: restore the claim or transcribe it in replication.SEED")
            return entry[key]
        cur: Any = raw
        for part in self.path:
            if not isinstance(cur, Mapping) or part not in cur:
                raise AtlasError(f"{source} lacks [{'.'.join(self.path[:-1])}] {self.path[-1]}; the replication "
                                 "document reads the study's figure there: restore it")
            cur = cur[part]
        return cur


def _s(role: str, key: str) -> Toml:
    return Toml(("study", role, key))


def _c(cid: str, key: str = "expected") -> Toml:
    return Toml(("claim", cid, key))


# Transcribed from shared/seed/qwen2.5-1.5b-atlas.txt ("Qwen2.5-1.5B: Scaling the Atlas", Bilawal Riaz,
# 2026): the study's tables, as published. Entries the claims file already holds are Toml references
# (resolved when the document renders); every literal number here is one the claims file lacks.
# Layer tables are (layer, figure...) rows in the study's order; None where the study's cell is empty.
SEED: dict[str, dict[str, Any]] = {
    "model": {
        "large": {"name": _s("large", "model"), "n_layers": _s("large", "n_layers"), "architecture": "qwen2",
                  "n_heads": "12 (GQA)", "d_model": 1536, "dtype": "bfloat16", "device": "GPU (RTX 2070 Super, 8 GB)",
                  "families": 8},
        "small": {"name": _s("small", "model"), "n_layers": _s("small", "n_layers"), "architecture": "qwen2"},
    },
    # Layer ablation (zero the layer's output): top five with mean KL across families, and the lowest layer.
    "layer_top": {"large": ((_s("large", "hub_layer"), _c("Qwen2.5-1.5B:hub.top_layer_kl")), (6, 13.28),
                            (14, 13.01), (5, 10.44), (9, 10.34)),
                  "small": ((_s("small", "hub_layer"), None),)},
    "layer_min": {"large": (23, 5.40)},
    "mlp_top": {"large": ((0, _s("large", "max_mlp_kl")), (1, 1.83), (27, 1.17)),
                "small": ((2, _s("small", "max_mlp_kl")),)},
    "mlp_share": {"large": _c("Qwen2.5-1.5B:mlp.share_of_top_layer"),
                  "small": _c("Qwen2.5-0.5B:mlp.share_of_top_layer")},
    # Head ablation: the strongest head per family (the study names six families, five with a head).
    "heads": {"large": {"arithmetic": ("L0 H3", _c("Qwen2.5-1.5B:heads.family_max_kl.arithmetic")),
                        "code_syntax": ("L0 H6", _c("Qwen2.5-1.5B:heads.family_max_kl.code_syntax")),
                        "copying": ("L0 H3", _c("Qwen2.5-1.5B:heads.family_max_kl.copying")),
                        "delimiter_tracking": ("L0 H6 / L0 H10", _c("Qwen2.5-1.5B:heads.family_max_kl.delimiter_tracking")),
                        "factual_recall": ("L0 H5", _c("Qwen2.5-1.5B:heads.family_max_kl.factual_recall"))}},
    "heads_max": {"large": ("arithmetic L0 H3", _s("large", "max_head_kl")), "small": (None, _s("small", "max_head_kl"))},
    "layer_head_gap": {"large": 13.0, "small": 200.0},  # "the gap closes to 13x" / "200x smaller than layer effects"
    # Steering at L2 with the factual-recall direction; its two prompts (baseline -> best, at strength).
    "steering": {"large": {"layer": 2, "best_boost": _s("large", "best_boost"), "norm": 9.625,
                           "prompts": (("The capital of Italy is ", 0.000919, 0.010315, -2.0),
                                       ("The capital of Spain is ", 0.000038, 0.000353, None))},
                 "small": {"layer": 2, "best_boost": _s("small", "best_boost")}},
    # Knockout (negative steering, factual_recall): layer, selectivity, skill drop, non-skill drop, norm.
    "knockout": {"large": ((2, -24.55, -0.0095, -0.0004, 8.88), (3, -77.41, -0.0099, -0.0001, 10.63),
                           (16, -9.31, -0.0033, 0.0004, 26.13), (19, -1.62, -0.0861, 0.0532, 36.50),
                           (21, _s("large", "best_selectivity"), 0.0011, 0.0044, 49.50))},
    "knockout_best": {"large": (21, _s("large", "best_selectivity")), "small": (19, _s("small", "best_selectivity"))},
    "lora_kl": {"large": {"json_schema": 6.47, "copying": 0.54, "dead_code": 0.42, "delimiter_tracking": 0.28,
                          "factual_recall": 0.16, "arithmetic": 0.08, "code_semantics": 0.08, "code_syntax": 0.05}},
    "lora": {"large": {"final_loss": 0.0098, "rank": 8, "alpha": 16, "batch_size": 1}},
    # Cross-model transfer: (layer, mean recovery), strongest first.
    "transfer": {"large": ((27, 0.999), (26, 0.992), (25, 0.987), (24, 0.979), (23, 0.974), (22, 0.955)),
                 "small": ((23, 1.0), (22, 0.97), (21, 0.95), (20, 0.87))},
    "transfer_top": {"large": _s("large", "top_transfer_layers"), "small": _s("small", "top_transfer_layers")},
    "transfer_zone": {"large": _s("large", "transfer_zone"), "small": _s("small", "transfer_zone")},
    # Adapter ablation: Pearson r of norm vs effect; top five (layer, total KL, adapter norm); norm range.
    "adapter": {"large": {"pearson": _s("large", "adapter_pearson"), "norm_range": (3.33, 3.45),
                          "top": ((27, 13.64, 3.42), (26, 12.70, 3.39), (25, 12.00, 3.39), (24, 11.56, 3.37),
                                  (23, 10.92, 3.41))},
                "small": {"pearson": _s("small", "adapter_pearson")}},
    # Layer skipping: config -> (layers skipped, mean KL, top-5 overlap).
    "skip": {"large": {"skip_weakest_1": ((15,), 9.50, 0.0),
                       "skip_mid_5": ((4, 5, 6, 7, 8), 6.58, _s("large", "best_top5_overlap")),
                       "skip_6_layers": ((4, 5, 8, 11, 15, 16), 9.15, 0.0286),
                       "skip_8_layers": ((4, 5, 8, 10, 11, 14, 15, 16), 9.15, 0.0286)}},
    "skip_best": {"large": _s("large", "best_top5_overlap"), "small": _s("small", "best_top5_overlap")},
    "skip_count": {"small": 10},  # "At 0.5B, ALL 10 skip configurations gave 0%"
    # Early exit: (exit layer, layers skipped, mean KL, argmax match, speedup).
    "exit": {"large": ((27, 0, None, 0.0, 1.00), (26, 1, None, 0.0, 1.04), (25, 2, None, 0.0714, 1.08),
                       (23, 4, 12.60, 0.0714, 1.17), (17, 10, 7.21, 0.0, 1.56))},
}


@dataclass(frozen=True)
class Study:
    """The study's figures (:data:`SEED` with its references resolved) and its decision thresholds."""

    figures: dict[str, dict[str, Any]]
    thresholds: dict[str, dict]
    source: Path

    def get(self, table: str, role: str, default: Any = None) -> Any:
        return self.figures.get(table, {}).get(role, default)

    def name(self, role: str) -> str:
        return Path(str(self.get("model", role)["name"])).name

    def n_layers(self, role: str) -> int:
        return int(self.get("model", role)["n_layers"])

    def layer(self, layer: int | None, role: str) -> str:
        return _layer(layer, self.n_layers(role))


def _resolve(obj: Any, raw: Mapping, source: Path) -> Any:
    if isinstance(obj, Toml):
        return obj.get(raw, source)
    if isinstance(obj, Mapping):
        return {k: _resolve(v, raw, source) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return tuple(_resolve(v, raw, source) for v in obj)
    return obj


def load_study(path: str | Path = STUDY_CLAIMS) -> Study:
    """The study's figures and thresholds from its claims file (validated by ``load_claims``)."""
    path = Path(path)
    claims = load_claims(path)
    raw = tomllib.loads(path.read_text())
    return Study(_resolve(SEED, raw, path), claims.thresholds, path)


# --------------------------------------------------------------------------------------------------
# the runs


@dataclass(eq=False)
class Baseline:
    """One committed run with its finding statistics and the study model it stands beside (if any)."""

    run: Run
    stats: dict[str, Stat]
    card: dict
    role: str | None = None

    @property
    def label(self) -> str:
        return f"{self.run.name} ({self.card['profile']})"

    @property
    def n_layers(self) -> int:
        return int(self.run.n_layers or 0)

    def has(self, key: str) -> bool:
        return self.run.has(key)

    def result(self, key: str) -> dict:
        return self.run.result(key)

    def layer(self, layer: int | None) -> str:
        return _layer(layer, self.n_layers)

    def stat(self, name: str, kind: str = "auto") -> str:
        return _est(self.stats.get(name), kind)

    def n_items(self, key: str) -> Any:
        return self.run.docs[key].get("config", {}).get("n_items")


def load_baselines(baselines_dir: str | Path, study: Study) -> list[Baseline]:
    """The baseline runs, the study's architecture first, smaller models first; each run whose
    architecture and depth match a study model gets that role."""
    out = []
    for root in baseline_runs(baselines_dir):
        run = Run(root)
        out.append(Baseline(run, S.statistics(run), S.model_card(run)))
    arch = {role: (study.get("model", role)["architecture"], study.n_layers(role)) for role in ROLES}
    for b in out:
        b.role = next((r for r, a in arch.items() if a == (b.run.model.get("architecture"), b.n_layers)), None)
    return sorted(out, key=lambda b: (b.role is None, C._size(b.run), b.run.name, _profile_rank(b)))


def _profile_rank(b: Baseline) -> int:
    names = list(PROFILES)
    return names.index(b.card["profile"]) if b.card["profile"] in names else -1


def pair(baselines: Sequence[Baseline]) -> tuple[Baseline, Baseline] | None:
    """The (small, large) runs standing beside the study's two models: for each, the run of the
    highest profile (then the most experiments); ``None`` when either is missing."""
    picked = []
    for role in ROLES:
        cands = [b for b in baselines if b.role == role]
        if not cands:
            return None
        picked.append(max(cands, key=lambda b: (_profile_rank(b), len(b.run.docs), b.run.name)))
    return picked[0], picked[1]


# --------------------------------------------------------------------------------------------------
# formatting


def _layer(layer: int | None, n_layers: int) -> str:
    """``L9 (39.1%)``: a layer with its relative depth."""
    if layer is None:
        return NONE
    return f"L{layer} ({fmt(relative_depth(layer, n_layers), 'pct')})"


def _est(e: Mapping | Stat | None, kind: str = "auto") -> str:
    """``value [lo, hi]`` of an Estimate dict or a Stat (the value alone without an interval)."""
    if isinstance(e, Stat):
        e = {"value": e.value, "lo": e.lo, "hi": e.hi}
    if not e or e.get("value") is None:
        return NONE
    text = fmt(e["value"], kind)
    if e.get("lo") is not None and e.get("hi") is not None:
        text += f" [{fmt(e['lo'], kind)}, {fmt(e['hi'], kind)}]"
    return text


def _layers(layers: Iterable[int]) -> str:
    """``L4–L8`` for a contiguous block, else ``L4, L5, L9``."""
    ls = sorted(layers)
    if len(ls) > 2 and ls == list(range(ls[0], ls[-1] + 1)):
        return f"L{ls[0]}–L{ls[-1]}"
    return ", ".join(f"L{x}" for x in ls) or NONE


def _range(values: Iterable[float | None]) -> str:
    vals = [v for v in values if v is not None]
    return f"{fmt(min(vals))}–{fmt(max(vals))}" if vals else NONE


def _table(head: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    def cell(c: Any) -> str:
        return str(c).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(map(cell, head)) + " |", "|" + "|".join("---" for _ in head) + "|"]
    return lines + ["| " + " | ".join(map(cell, r)) + " |" for r in rows] + [""]


def _cells(b: Baseline, key: str, fn: Callable[[Baseline], list[str]], n: int) -> list[str]:
    """A run's column of ``n`` cells: ``not run`` when it lacks experiment ``key``."""
    if not b.has(key):
        return [NOT_RUN] + [""] * (n - 1)
    cells = fn(b)
    return cells[:n] + [NONE] * (n - len(cells))


def _grid(labels: Sequence[str], study: Sequence[tuple[str, Sequence[str]]], baselines: Sequence[Baseline],
          key: str, fn: Callable[[Baseline], list[str]], corner: str = "") -> list[str]:
    """A table: one row per label, the study's columns, then one column per run."""
    n = len(labels)
    cols = [list(cells)[:n] + [NONE] * (n - len(cells)) for _, cells in study]
    cols += [_cells(b, key, fn, n) for b in baselines]
    head = [corner] + [h for h, _ in study] + [b.label for b in baselines]
    return _table(head, [[labels[i]] + [c[i] for c in cols] for i in range(n)])


def _study_cols(study: Study, table: str, fn: Callable[[Any, str], list[str]]) -> list[tuple[str, list[str]]]:
    """The study's columns of a table (large model first), for the roles the study gives figures for."""
    return [(f"study {study.name(role)}", fn(study.get(table, role), role))
            for role in ("large", "small") if study.get(table, role) is not None]


# --------------------------------------------------------------------------------------------------
# sections


@dataclass
class Doc:
    """What every section reads: the study, the runs (in column order) and the pair for the verdicts."""

    study: Study
    baselines: list[Baseline]
    pair: tuple[Baseline, Baseline] | None = None


def _prompts_per_family(b: Baseline) -> str:
    values = {b.n_items(k) for k, d in b.run.docs.items() if k == d["experiment"]}
    nums = sorted(v for v in values if isinstance(v, int))
    text = (str(nums[0]) if len(nums) == 1 else f"{nums[0]}–{nums[-1]}") if nums else ""
    return ", ".join(t for t in (text, "all" if None in values else "") if t) or NONE


def intro(doc: Doc) -> list[str]:
    """The title, where the numbers come from, the command, and what was run (study and runs)."""
    st = doc.study
    lines = [
        "# Replication of “Qwen2.5-1.5B: Scaling the Atlas”", "",
        f"<!-- Generated from the committed baseline runs; do not edit. Regenerate with: {REGENERATE} -->", "",
        "The study (Bilawal Riaz, 2026; `shared/seed/qwen2.5-1.5b-atlas.txt`) published one atlas of "
        f"{st.name('large')} and quoted its {st.name('small')} predecessor. This document sets its tables beside "
        "what Atlas measured on the baseline runs committed under `atlas_core/data/baselines/`. Every measured number "
        "is read from those runs' JSON (intervals are 95% bootstrap intervals over prompts); every study figure "
        f"comes from `{_rel(st.source)}` or, where that file lacks it, from the table transcribed from the seed "
        "in `atlas_core/report/replication.py` (`SEED`). Depth is relative: layer / (n_layers − 1), 0 the first "
        f"layer and 100% the last (the study prints layer / n_layers: {_study_depth(st)}).", "",
        "Regenerate this document (it reads only the stored JSON; no model is loaded):", "",
        f"    {REGENERATE}", "",
        "## What was run", "",
    ]
    sm = st.get("model", "large")
    rows = [[f"study: {st.name('large')} (base)", "—", sm["architecture"], str(sm["n_layers"]), sm["n_heads"],
             fmt(sm["d_model"]), "—", "not stated", str(sm["families"]), sm["dtype"], sm["device"], "—"],
            [f"study: {st.name('small')} (quoted)", "—", "qwen2", str(st.n_layers("small")), NONE, NONE, "—",
             "not stated", NONE, NONE, NONE, "—"]]
    for b in doc.baselines:
        m = b.run.model
        heads = f"{m.get('n_heads', NONE)} ({m.get('n_kv_heads', NONE)} KV)"
        fams = len(b.run.manifest.get("families") or {}) or NONE
        rows.append([b.run.name, f"`{b.run.root.name}`", m.get("architecture", NONE), fmt(m.get("n_layers")), heads,
                     fmt(m.get("d_model")), b.card["profile"], _prompts_per_family(b), str(fams),
                     m.get("dtype", NONE), m.get("device", NONE), f"`{str(m.get('weights_sha256', ''))[:12]}`"])
    lines += _table(["model", "run folder", "architecture", "layers", "heads", "d_model", "profile",
                     "prompts per family", "families", "dtype", "device", "weights SHA-256"], rows)
    return lines


def _study_depth(st: Study) -> str:
    hub, n = st.get("layer_top", "large")[0][0], st.n_layers("large")
    return f"{round(100 * hub / n)}% for L{hub} of {n}"


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(CLAIMS_DIR.parents[2]))
    except ValueError:
        return path.name


_EXPERIMENTS = tuple(k for _, k, _, _ in S.SECTIONS if k is not None)  # in report order


def timings(doc: Doc) -> list[str]:
    """Per run: device, dtype, profile, versions, wall seconds per experiment and in total."""
    lines = ["## Run timings", "",
             "Wall time of each experiment as the run's manifest records it (seconds), with the prompts per "
             "family it ran on.", ""]
    rows = [[k] + [str(b.card["profile"] if k == "profile" else b.run.model.get(k, NONE)) for b in doc.baselines]
            for k in ("profile", "device", "dtype")]
    for pkg in ("torch", "transformers", "peft"):
        rows.append([pkg] + [str((b.run.manifest.get("versions") or {}).get(pkg, NONE)) for b in doc.baselines])
    for key in _EXPERIMENTS:
        rows.append([key] + [f"{fmt(_wall(b, key))} s ({b.n_items(key) or 'all'} per family)" if b.has(key)
                             else NOT_RUN for b in doc.baselines])
    rows.append(["**total**"] + [f"**{fmt(b.card['total'].value)} s** ({fmt(b.card['total'].value / 60)} min)"
                                 for b in doc.baselines])
    return lines + _table([""] + [b.label for b in doc.baselines], rows) + _timing_notes(doc)


def _timing_notes(doc: Doc) -> list[str]:
    """What the wall times include: sessions an experiment was resumed across, and the CPU threads it ran on."""
    resumed, threads = [], []
    for b in doc.baselines:
        provs = {k: b.run.docs[k].get("provenance", {}) for k in _EXPERIMENTS if b.has(k)}
        back = [f"{k} ({fmt(p['resumed_after_seconds'])} s before its last session)"
                for k, p in provs.items() if (p.get("resumed_after_seconds") or 0) > 0]
        if back:
            resumed.append(f"{b.label}: {', '.join(back)}")
        used = sorted({p["torch_threads"] for p in provs.values() if p.get("torch_threads")})
        if used:
            threads.append(f"{b.label}: {', '.join(map(str, used))}")
    out = []
    if resumed:
        out.append("Resumed from checkpoints across sessions (the wall time adds the earlier sessions, each up to its "
                   "last checkpoint): " + "; ".join(resumed) + ".")
    out.append("CPU threads of the session that finished each experiment: " + "; ".join(threads) + "." if threads else
               "The records do not say how many CPU threads each session used (Atlas records it from this version "
               "on); a run that shared its CPU with another ran slower than it would alone.")
    return [x for line in out for x in (line, "")]


def _wall(b: Baseline, key: str) -> float | None:
    """The experiment's wall seconds: the manifest's, else the record's provenance."""
    walls = {k: secs.value for k, secs, _ in b.card["walls"]}
    return walls[key] if key in walls else b.run.docs[key].get("provenance", {}).get("wall_seconds")


def _sweep(b: Baseline, key: str, target: str, mode: str) -> dict | None:
    return next((s for s in b.result(key)["sweeps"] if (s["target"], s["mode"]) == (target, mode)), None)


def _sweep_top(b: Baseline, key: str, target: str, mode: str, k: int = S.TOP_K) -> list[str]:
    """``L9 (39.1%) 14.3 [13.7, 14.9]`` for the sweep's top ``k`` layers (mean KL over all prompts)."""
    s = _sweep(b, key, target, mode)
    if s is None:
        return [f"{NOT_RUN} at this profile"]
    if is_tie(s["family_mean_kl"]):
        return [_tie(s)]
    return [f"{b.layer(layer)} {_est(s['mean_kl'][s['layers'].index(layer)])}" for layer in s["ranking"][:k]]


def _tie(s: dict) -> str:
    """A sweep whose layers all give the same KL: no ranking to show."""
    return f"all {len(s['layers'])} layers tie at {_est(s['mean_kl'][0])}: no layer stands out (see below)"


def _study_top(rows: Sequence[tuple], role: str, study: Study) -> list[str]:
    return [study.layer(r[0], role) + ("" if r[1] is None else f" {fmt(r[1])}") for r in rows]


def layer_ablation(doc: Doc) -> list[str]:
    """The study's top-5 layers beside each run's, for the study's target and for the layer write."""
    st = doc.study
    labels = [str(i + 1) for i in range(S.TOP_K)]
    lines = ["## Layer ablation: top layers", "",
             "Target `resid`, mode `zero`: the layer's whole output hidden state is zeroed, so everything written "
             "to the residual stream up to that layer is lost. This is the study's definition (its "
             f"{fmt(st.get('layer_min', 'large')[1])} to {fmt(st.get('layer_top', 'large')[0][1])} nats per layer "
             "match it). Cells: layer (depth), KL (nats) at the last position, mean over all prompts "
             "[95% interval]; layers ranked by the mean of the per-family means (the study's measure).", ""]
    lines += _grid(labels, _study_cols(st, "layer_top", lambda rows, role: _study_top(rows, role, st)),
                   doc.baselines, "layer_ablation", lambda b: _sweep_top(b, "layer_ablation", "resid", "zero"), "rank")
    lo = st.get("layer_min", "large")
    lines += [f"Lowest layer: study {st.name('large')} {st.layer(lo[0], 'large')} {fmt(lo[1])}; "
              + "; ".join(f"{b.label} {_sweep_min(b, 'layer_ablation', 'resid', 'zero')}" for b in doc.baselines), ""]
    ties = [b.label for b in doc.baselines if b.has("layer_ablation") and (t := _sweep(b, "layer_ablation", "resid", "zero"))
            and is_tie(t["family_mean_kl"])]
    if ties:
        lines += [f"{', '.join(ties)}: every layer gives the same KL when its whole output is zeroed, so this target "
                  "ranks nothing there. A model without biases (Gemma has none) computes nothing from a zero residual: "
                  "every later layer's attention and MLP output is zero and the logits are uniform, whichever layer "
                  "was zeroed. Its layers are told apart by the `delta` target and by the mean and resample modes "
                  "below.", ""]
    lines += ["Target `delta`, mode `zero`: only the layer's write (output − input) is zeroed and the residual it "
              "received flows on; zeroing it is exactly skipping the layer. The study did not measure this target.", ""]
    lines += _grid(labels, [("study", ["not measured"])], doc.baselines, "layer_ablation",
                   lambda b: _sweep_top(b, "layer_ablation", "delta", "zero"), "rank")
    return lines


def _sweep_min(b: Baseline, key: str, target: str, mode: str) -> str:
    s = _sweep(b, key, target, mode) if b.has(key) else None
    if s is None:
        return NOT_RUN
    vals = s["family_mean_kl"]
    if is_tie(vals):
        return f"none (all layers tie at {fmt(vals[0])})"
    j = min((i for i, v in enumerate(vals) if v is not None), key=lambda i: vals[i], default=None)
    return NONE if j is None else f"{b.layer(s['layers'][j])} {fmt(vals[j])}"


def ablation_modes(doc: Doc) -> list[str]:
    """Top layers and KL range per target and mode, the modes the study lacks included."""
    st = doc.study
    lines = ["## Mean and resample ablation (missing from the study)", "",
             "The study zero-ablated only and lists it as a limitation (“Mean/resample ablation would be more "
             "principled”). Atlas runs each target with every mode of the profile: `mean` replaces the activation "
             "with its mean over the run's prompts, `resample` with another prompt's. Cells: the top three layers, "
             "then the range of the per-layer mean KL across families (nats).", ""]
    large = st.get("layer_top", "large")
    lo = st.get("layer_min", "large")
    study_zero = f"{', '.join(f'L{r[0]}' for r in large[:3])} · {fmt(lo[1])}–{fmt(large[0][1])}"
    labels = [f"{t} / {m}" for t in ("resid", "delta") for m in ("zero", "mean", "resample")]
    study = [("study " + st.name("large"), [study_zero] + ["not measured"] * (len(labels) - 1))]
    lines += _grid(labels, study, doc.baselines, "layer_ablation",
                   lambda b: [_mode_cell(b, "layer_ablation", *lab.split(" / ")) for lab in labels], "target / mode")
    matched = [b for b in doc.baselines if b.role is not None]
    if matched:
        tops = " and ".join(f"{st.layer(st.get('layer_top', r)[0][0], r)} of {st.name(r)}"
                            for r in ("large", "small") if any(b.role == r for b in matched))
        lines += [f"Where the study's top layer ({tops}) ranks in each sweep of the run of the same architecture "
                  "and depth (rank by the mean of the per-family means · its KL):", ""]
        lines += _grid(labels, [], matched, "layer_ablation",
                       lambda b: [_study_layer_rank(b, st, *lab.split(" / ")) for lab in labels], "target / mode")
    lines += ["The MLP output (the study: the top three MLPs and the largest KL; zero ablation only):", ""]
    mlp = [f"mlp / {m}" for m in ("zero", "mean", "resample")]
    top = st.get("mlp_top", "large")
    study = [("study " + st.name("large"), [f"{', '.join(f'L{r[0]}' for r in top[:3])} · max {fmt(top[0][1])}"]
              + ["not measured"] * (len(mlp) - 1))]
    return lines + _grid(mlp, study, doc.baselines, "mlp_ablation",
                         lambda b: [_mode_cell(b, "mlp_ablation", *lab.split(" / ")) for lab in mlp], "target / mode")


def _study_layer_rank(b: Baseline, study: Study, target: str, mode: str) -> str:
    """``#3 of 28 · 14.3``: the rank in this sweep of the layer the study found strongest for ``b``'s role."""
    s = _sweep(b, "layer_ablation", target, mode)
    if s is None:
        return f"{NOT_RUN} at this profile"
    layer = study.get("layer_top", b.role)[0][0]
    if layer not in s["layers"]:
        return f"L{layer} not swept"
    if is_tie(s["family_mean_kl"]):
        return "all layers tie"
    rank = list(s["ranking"]).index(layer) + 1
    return f"#{rank} of {len(s['ranking'])} · {fmt(s['family_mean_kl'][s['layers'].index(layer)])}"


def _mode_cell(b: Baseline, key: str, target: str, mode: str) -> str:
    s = _sweep(b, key, target, mode)
    if s is None:
        return f"{NOT_RUN} at this profile"
    if is_tie(s["family_mean_kl"]):
        return f"all layers tie · {_range(s['family_mean_kl'])}"
    return f"{', '.join(f'L{x}' for x in s['ranking'][:3])} · {_range(s['family_mean_kl'])}"


def mlp_ablation(doc: Doc) -> list[str]:
    """The top MLPs and the strongest MLP's share of the top layer's effect."""
    st = doc.study
    lines = ["## MLP ablation: top layers", "",
             "Each layer's MLP output (its write to the residual) zeroed; cells as for the layer ablation.", ""]
    lines += _grid([str(i + 1) for i in range(S.TOP_K)],
                   _study_cols(st, "mlp_top", lambda rows, role: _study_top(rows, role, st)),
                   doc.baselines, "mlp_ablation", lambda b: _sweep_top(b, "mlp_ablation", "mlp", "zero"), "rank")
    share = [("study " + st.name(r), [fmt(st.get("mlp_share", r), "pct")]) for r in ("large", "small")]
    lines += ["Share of the top layer's effect carried by the strongest MLP (max MLP KL / top layer KL):", ""]
    lines += _grid(["MLP share"], share, doc.baselines, "mlp_ablation",
                   lambda b: [b.stat("mlp.share_of_top_layer", "pct")], "")
    return lines


def head_ablation(doc: Doc) -> list[str]:
    """The strongest head per family, the strongest head overall and the layer/head gap."""
    st = doc.study
    fams = list(FAMILIES)
    lines = ["## Head ablation: specialist heads", "",
             "One query head zeroed at a time (at the `o_proj` input); the strongest head per family, KL (nats; "
             "no interval is stored per head). The ci profile samples a few layers; the full profile sweeps all.", ""]
    large = st.get("heads", "large")
    study = [("study " + st.name("large"), [f"{large[f][0]} {fmt(large[f][1])}" if f in large else NONE for f in fams])]
    lines += _grid(fams, study, doc.baselines, "head_ablation", lambda b: [_head_cell(b, f) for f in fams], "family")
    labels = ["strongest head", "top layer KL / strongest head", "layers swept"]
    study = []
    for role in ("large", "small"):
        where, kl = st.get("heads_max", role)
        study.append((f"study {st.name(role)}", [fmt(kl) + (f" ({where})" if where else ""),
                                                 fmt(st.get("layer_head_gap", role), "x"),
                                                 f"all {st.n_layers(role)}" if role == "large" else NONE]))
    lines += _grid(labels, study, doc.baselines, "head_ablation", _head_cells, "")
    return lines


def _head_cells(b: Baseline) -> list[str]:
    return [f"{b.stat('heads.max_kl')} ({b.stats['heads.max_kl'].label})", _gap_cell(b),
            f"{_layers(b.result('head_ablation')['layers'])} of {b.n_layers}"]


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


def steering(doc: Doc) -> list[str]:
    """Best boost, the boost at the study's layer, and the study's two prompts."""
    st = doc.study
    lines = ["## Steering", "",
             "The factual-recall direction (mean last-token residual after the layer, items − contrast) added at "
             "each steered layer and strength; boost = steered − clean target probability, mean over the family's "
             f"prompts. The study steered L{st.get('steering', 'large')['layer']} only; Atlas also steers that layer "
             f"scaled to depth (round({st.get('steering', 'large')['layer']}·n_layers/{st.n_layers('large')})).", ""]
    labels = ["layers steered", "best boost (layer, strength)", "boost at the study's layer",
              "clean target probability", "direction norm at the study's layer"]
    study = []
    for role in ("large", "small"):
        s = st.get("steering", role)
        study.append((f"study {st.name(role)}",
                      [st.layer(s["layer"], role) + " only", f"{fmt(s['best_boost'])} at {st.layer(s['layer'], role)}",
                       f"{fmt(s['best_boost'])} at {st.layer(s['layer'], role)}", NONE,
                       fmt(s["norm"]) if "norm" in s else NONE]))
    lines += _grid(labels, study, doc.baselines, "steering", _steer_cells, "")
    prompts, at = st.get("steering", "large")["prompts"], st.get("steering", "large")["layer"]
    lines += ["The study's own prompts (target probability: clean → best, at layer and strength):", ""]
    study = [("study " + st.name("large"), [f"{fmt(p[1])} → {fmt(p[2])}" + (f" (L{at}, {p[3]:+g})" if p[3] is not None
                                                                          else "") for p in prompts])]
    lines += _grid([f"`{p[0]!r}`" for p in prompts], study, doc.baselines, "steering",
                   lambda b: [_steer_prompt(b, p[0]) for p in prompts], "prompt")
    return lines


def _steer_cells(b: Baseline) -> list[str]:
    r = b.result("steering")
    j = r["layers"].index(r["study_layer"]) if r["study_layer"] in r["layers"] else None
    return [f"{len(r['layers'])}: {_layers(r['layers'])}",
            f"{_est(r['best_boost'])} at {b.layer(r['best_layer'])}, strength {r['best_strength']:+g}",
            f"{_est(r['study_layer_best_boost'])} at {b.layer(r['study_layer'])}",
            fmt(r["baseline_prob"]), NONE if j is None else fmt(r["direction_norm"][j])]


def _steer_prompt(b: Baseline, prompt: str) -> str:
    p = next((p for p in b.result("steering").get("prompts") or [] if p["prompt"] == prompt), None)
    if p is None:
        return NONE
    return f"{fmt(p['baseline_prob'])} → {fmt(p['best_prob'])} (L{p['best_layer']}, {p['best_strength']:+g})"


def knockout(doc: Doc) -> list[str]:
    """Best selectivity, the drops behind it, and every swept layer's selectivity."""
    st = doc.study
    lines = ["## Skill knockout", "",
             "Negative steering along the factual-recall direction; selectivity = skill drop / non-skill drop "
             "(target-probability drops; > 1× suppresses the skill more than the rest).", ""]
    labels = ["best selectivity", "skill drop at best layer", "non-skill drop at best layer",
              "per-layer selectivity", "selective layers (> 1×)"]
    rows = st.get("knockout", "large")
    study = []
    for role in ("large", "small"):
        best = st.get("knockout_best", role)
        row = next((r for r in rows if r[0] == best[0]), None) if role == "large" else None
        study.append((f"study {st.name(role)}",
                      [f"{fmt(best[1], 'x')} at {st.layer(best[0], role)}",
                       fmt(row[2]) if row else NONE, fmt(row[3]) if row else NONE,
                       ", ".join(f"L{r[0]} {fmt(r[1], 'x')}" for r in rows) if role == "large" else NONE,
                       f"{sum(r[1] > 1 for r in rows)} of {len(rows)}" if role == "large" else NONE]))
    return lines + _grid(labels, study, doc.baselines, "knockout", _knock_cells, "")


def _knock_cells(b: Baseline) -> list[str]:
    r = b.result("knockout")
    ls = r["layers"]
    return [f"{fmt(r['best_selectivity'], 'x')} at {b.layer(r['best_layer'])}", b.stat("knockout.skill_drop"),
            b.stat("knockout.nonskill_drop"), ", ".join(f"L{k['layer']} {fmt(k['selectivity'], 'x')}" for k in ls),
            f"{sum((k['selectivity'] or 0) > 1 for k in ls)} of {len(ls)} (strength {r['strength']:+g})"]


def lora(doc: Doc) -> list[str]:
    """Base -> trained KL per family (study order) and the training figures."""
    st = doc.study
    kl = st.get("lora_kl", "large")
    fams = list(kl) + [f for f in FAMILIES if f not in kl]
    lines = ["## LoRA training: base → trained KL per family", "",
             "A LoRA adapter trained on the task families; KL(base ‖ trained) at the last position per family "
             "(nats).", ""]
    study = [("study " + st.name("large"), [fmt(kl[f]) if f in kl else NONE for f in fams])]
    lines += _grid(fams, study, doc.baselines, "lora_training",
                   lambda b: [_est(b.result("lora_training")["kl_per_family"].get(f)) for f in fams], "family")
    params = st.get("lora", "large")
    labels = ["rank / alpha", "batch size", "peak learning rate", "final loss", "steps (converged)"]
    study = [("study " + st.name("large"), [f"{params['rank']} / {params['alpha']}", fmt(params["batch_size"]),
                                            NONE, fmt(params["final_loss"]), NONE])]
    lines += _grid(labels, study, doc.baselines, "lora_training", _lora_cells, "")
    return lines


def _lora_cells(b: Baseline) -> list[str]:
    r = b.result("lora_training")
    return [f"{r['rank']} / {r['alpha']}", fmt(r["batch_size"]), fmt(r["learning_rate"]), fmt(r["final_loss"]),
            f"{r['steps']} ({'yes' if r['converged'] else 'no'})"]


def transfer(doc: Doc) -> list[str]:
    """Recovery per layer, strongest first, and the final fraction of depth the top three occupy."""
    st = doc.study
    n = max(len(st.get("transfer", "large")), 3)
    lines = ["## Cross-model transfer", "",
             "The trained model's residual after layer L patched into the base model; recovery = 1 − "
             "KL(trained ‖ patched) / KL(trained ‖ base), over all prompts. Layers by mean recovery, strongest first.", ""]
    study = _study_cols(st, "transfer", lambda rows, role: [f"{st.layer(r[0], role)} {fmt(r[1], 'pct')}" for r in rows])
    lines += _grid([str(i + 1) for i in range(n)], study, doc.baselines, "transfer", lambda b: _transfer_top(b, n), "rank")
    study = [(f"study {st.name(role)}", [fmt(final_fraction(st.get(key, role), st.n_layers(role)), "pct")
                                         for key in ("transfer_top", "transfer_zone")]) for role in ("large", "small")]
    lines += ["Final fraction of depth ((n_layers − shallowest) / n_layers) holding the top three layers (the study's "
              "“final ~10%”) and the transfer zone, the layers recovering at least 95% (what H005 reads: the top "
              "three are the last three of any model whose recovery rises with depth):", ""]
    lines += _grid(["top-3 final fraction", "zone final fraction"], study, doc.baselines, "transfer",
                   lambda b: [f"{b.stat('transfer.top_final_fraction', 'pct')} "
                              f"({_layers(b.result('transfer')['top_layers'][:3])})",
                              f"{b.stat('transfer.zone_final_fraction', 'pct')} "
                              f"({_layers(b.result('transfer')['zone'])})"], "")
    return lines


def _transfer_top(b: Baseline, n: int) -> list[str]:
    r = b.result("transfer")
    rec = r["mean_recovery"]
    order = sorted((j for j, e in enumerate(rec) if e.get("value") is not None), key=lambda j: -rec[j]["value"])
    return [f"{b.layer(r['layers'][j])} {_est(rec[j], 'pct')}" for j in order[:n]]


def adapter(doc: Doc) -> list[str]:
    """Norm-effect correlation and the layers where switching the adapter off matters most."""
    st = doc.study
    lines = ["## Adapter ablation", "",
             "The trained adapter switched off in one layer at a time: KL(trained ‖ adapter off at L) against the "
             "adapter's weight norm per layer; Pearson r over layers with a bootstrap interval over layers (the "
             "study's statistic), and Spearman's rank correlation ρ beside it, which one outlying layer cannot decide.",
             ""]
    labels = (["Pearson r (norm vs effect)", "Spearman ρ (norm vs effect)", "norm range"]
              + [f"top {i + 1}: layer KL (norm)" for i in range(S.TOP_K)])
    study = []
    for role in ("large", "small"):
        a = st.get("adapter", role)
        top = [f"{st.layer(r[0], role)} {fmt(r[1])} ({fmt(r[2])})" for r in a.get("top", ())]
        rng = f"{fmt(a['norm_range'][0])}–{fmt(a['norm_range'][1])}" if "norm_range" in a else NONE
        study.append((f"study {st.name(role)}", [fmt(a["pearson"]), NONE, rng] + top))
    return lines + _grid(labels, study, doc.baselines, "adapter_ablation", _adapter_cells, "")


def _adapter_cells(b: Baseline) -> list[str]:
    r = b.result("adapter_ablation")
    top = [f"{b.layer(x)} {_est(r['kl'][r['layers'].index(x)])} ({fmt(r['norm'][r['layers'].index(x)])})"
           for x in r["top_layers"][:S.TOP_K]]
    return [b.stat("adapter.pearson"), b.stat("adapter.spearman"), _range(r["norm"])] + top


def skipping(doc: Doc) -> list[str]:
    """The study's four skip configurations: layers, KL and top-5 overlap."""
    st = doc.study
    skip = st.get("skip", "large")
    names = list(skip)
    lines = ["## Layer skipping", "",
             "A skipped layer passes its input residual on unchanged. The study's four configurations, placed by "
             "depth for other models: the weakest single layer, a mid block of five, the six and the eight weakest "
             "layers. Cells: layers skipped · mean KL (nats) · top-5 overlap with the full model. "
             f"The study's {st.name('small')}: {fmt(st.get('skip_best', 'small'), 'pct')} top-5 overlap in all "
             f"{st.get('skip_count', 'small')} of its configurations.", ""]
    study = [("study " + st.name("large"), [f"{_layers(skip[c][0])} · {fmt(skip[c][1])} · {fmt(skip[c][2], 'pct')}"
                                            for c in names])]
    return lines + _grid(names, study, doc.baselines, "efficiency", lambda b: [_skip_cell(b, c) for c in names], "config")


def _skip_cell(b: Baseline, name: str) -> str:
    c = next((c for c in b.result("efficiency")["skip_configs"] if c["name"] == name), None)
    if c is None:
        return NONE
    return f"{_layers(c['layers'])} · {_est(c['mean_kl'])} · {_est(c['top5_overlap'], 'pct')}"


def early_exit(doc: Doc) -> list[str]:
    """Exits matched by layers skipped: KL, argmax match, speedup; the best exit's argmax match."""
    st = doc.study
    rows = st.get("exit", "large")
    lines = ["## Early exit", "",
             "The final norm and LM head read the residual after the exit layer (logit lens); rows matched by "
             "layers skipped. Cells: exit layer · mean KL vs full depth · argmax match · speedup (full-depth "
             "forward time / this one).", ""]
    labels = [f"{r[1]} skipped" for r in rows] + ["best argmax match (≥ 1 skipped)"]
    best = max((r for r in rows if r[1] > 0), key=lambda r: r[3])
    study = [("study " + st.name("large"),
              [f"L{r[0]} · {fmt(r[2])} · {fmt(r[3], 'pct')} · {fmt(r[4], 'x')}" for r in rows]
              + [f"{fmt(best[3], 'pct')} (exit L{best[0]})"])]
    return lines + _grid(labels, study, doc.baselines, "efficiency", lambda b: _exit_cells(b, rows), "")


def _exit_cells(b: Baseline, rows: Sequence[tuple]) -> list[str]:
    best = b.stats.get("efficiency.best_exit_argmax")
    return [_exit_cell(b, r[1]) for r in rows] + [NONE if best is None else f"{_est(best, 'pct')} ({best.label})"]


def _exit_cell(b: Baseline, skipped: int) -> str:
    e = next((e for e in b.result("efficiency")["exits"] if e["layers_skipped"] == skipped), None)
    if e is None:
        return NONE
    return (f"L{e['layer']} · {_est(e['mean_kl'])} · {_est(e['argmax_match'], 'pct')} · "
            f"{fmt(e['speedup'], 'x')}")


# --------------------------------------------------------------------------------------------------
# hypotheses

VERDICT_KIND = {"H002": "x", "H003": "x", "H004": "x", "H006": "x", "H005": "pct", "H007": "pct"}


def _evidence(hid: str, ev: Mapping[str, Any]) -> str:
    def kind(k: str) -> str:
        if hid == "H004" and k in ROLES:
            return "x"
        return "pct" if hid == "H007" or "depth" in k or "fraction" in k else "auto"

    return ", ".join(f"{k} {fmt(v, kind(k))}" for k, v in ev.items() if v is not None)


def hypotheses(doc: Doc) -> list[str]:
    """H001-H008: the study's verdict beside the pair's, and single-model readings for the rest."""
    st = doc.study
    lines = ["## Hypotheses H001–H008", ""]
    if doc.pair is None:
        need = " and one beside ".join(f"{st.name(r)} ({st.get('model', r)['architecture']}, {st.n_layers(r)} layers)"
                                       for r in ROLES)
        lines += [f"No pair: the verdicts need one run beside {need}.", ""]
    else:
        small, large = doc.pair
        lines += [f"Verdicts by `atlas_core.verdicts.decide` on the pair {small.label} (small) and {large.label} "
                  f"(large), with the study's thresholds from `{_rel(st.source)}`.", ""]
    rows = []
    for hid, text, status, _ in S.HYPOTHESES:
        verdict, value, evidence = _verdict(doc, hid)
        rows.append([hid, text, status, verdict, value, evidence])
    lines += _table(["", "hypothesis", "study", "measured verdict", "decisive statistic", "evidence"], rows)
    singles = [b for b in doc.baselines if doc.pair is None or b not in doc.pair]
    if singles:
        lines += ["Single-model readings (every verdict needs a pair):", ""]
        lines += _table(["", "hypothesis"] + [b.label for b in singles],
                        [[hid, text] + [_single(doc, b, hid) for b in singles] for hid, text, *_ in S.HYPOTHESES])
    return lines


def _verdict(doc: Doc, hid: str) -> tuple[str, str, str]:
    if doc.pair is None:
        return "needs a pair", NONE, NONE
    small, large = doc.pair
    try:
        v = decide(hid, small.stats, large.stats, doc.study.thresholds.get(hid, {}))
    except AtlasError as exc:
        return NOT_RUN, NONE, str(exc)
    value = _est({"value": v.value, "lo": v.lo, "hi": v.hi}, VERDICT_KIND.get(hid, "auto"))
    return f"**{v.verdict.upper()}**", f"{v.statistic}: {value}", f"{_evidence(hid, v.evidence)}; rule: {v.rule}"


def _single(doc: Doc, b: Baseline, hid: str) -> str:
    parts = []
    for name in S.EVIDENCE[hid]:
        s = b.stats.get(name)
        if s is not None and s.tie and s.kind == "index":
            parts.append(f"{name.split('.', 1)[1]} none ({s.label})")
        elif s is not None and s.value is not None:
            kind = "auto" if s.kind in ("index", "ranking") else "x" if "selectivity" in name else S.stat_kind(name)
            text = s.label if s.kind == "index" and s.label else _est(s, kind)
            parts.append(f"{name.split('.', 1)[1]} {text}")
    if not parts:
        return NOT_RUN
    return f"needs a pair: {'; '.join(parts)}"


# --------------------------------------------------------------------------------------------------
# what differs


@dataclass(frozen=True)
class Check:
    """One study figure against the measured one: ``agrees`` under the rule stated in the document."""

    table: str
    what: str
    study: str
    measured: str
    agrees: bool


def _within(study: float, s: Stat | None) -> bool | None:
    """The study's figure inside the measured interval, or within :data:`REL_TOL` without one."""
    if s is None or s.value is None:
        return None
    if s.lo is not None and s.hi is not None:
        return s.lo <= study <= s.hi
    return abs(s.value - study) <= REL_TOL * abs(study)


def _depth_check(b: Baseline, study: Study, role: str, table: str, what: str, layer: int, name: str,
                 tol: float) -> Check | None:
    s = b.stats.get(name)
    if s is None or s.value is None:
        return None
    d = abs(relative_depth(s.value, b.n_layers) - relative_depth(layer, study.n_layers(role)))
    return Check(table, what, study.layer(layer, role), b.layer(int(s.value)), d <= tol)


def _value_check(b: Baseline, table: str, what: str, study: float, name: str, kind: str = "auto") -> Check | None:
    ok = _within(study, b.stats.get(name))
    if ok is None:
        return None
    s = b.stats[name]
    label = f" ({s.label})" if s.label else ""
    return Check(table, what, fmt(study, kind), _est(s, kind) + label, ok)


def checks(b: Baseline, study: Study) -> list[Check]:
    """The headline figure of each table for the run's study counterpart (none without one)."""
    role = b.role
    if role is None:
        return []
    th = study.thresholds
    get = lambda t: study.get(t, role)  # noqa: E731
    out = [
        _depth_check(b, study, role, "Layer ablation", "top layer", get("layer_top")[0][0], "hub.top_layer",
                     th["H001"]["tolerance"]),
        _value_check(b, "Layer ablation", "top layer KL", get("layer_top")[0][1], "hub.top_layer_kl")
        if get("layer_top")[0][1] is not None else None,
        _value_check(b, "MLP ablation", "max MLP KL", get("mlp_top")[0][1], "mlp.max_kl"),
        _value_check(b, "Head ablation", "strongest head KL", get("heads_max")[1], "heads.max_kl"),
        _value_check(b, "Steering", "boost at the study's layer", get("steering")["best_boost"],
                     "steering.study_layer_best_boost"),
        _value_check(b, "Skill knockout", "best selectivity", get("knockout_best")[1], "knockout.best_selectivity", "x"),
        _lora_check(b, get("lora_kl")),
        _fraction_check(b, study, role, th["H005"]["tolerance"]),
        _value_check(b, "Adapter ablation", "Pearson r", get("adapter")["pearson"], "adapter.pearson"),
        _value_check(b, "Layer skipping", "best top-5 overlap", get("skip_best"), "efficiency.best_top5_overlap", "pct"),
    ]
    exits = get("exit")
    if exits:
        best = max((r for r in exits if r[1] > 0), key=lambda r: r[3])
        out.append(_value_check(b, "Early exit", "best argmax match", best[3], "efficiency.best_exit_argmax", "pct"))
    return [c for c in out if c is not None]


def _lora_check(b: Baseline, kl: Mapping[str, float] | None) -> Check | None:
    if not kl or not b.has("lora_training"):
        return None
    fams = {f: e.get("value") for f, e in b.result("lora_training")["kl_per_family"].items() if e.get("value") is not None}
    if not fams:
        return None
    want, got = max(kl, key=kl.get), max(fams, key=fams.get)
    return Check("LoRA training", "family shifted most", f"{want} {fmt(kl[want])}", f"{got} {fmt(fams[got])}",
                 want == got)


def _fraction_check(b: Baseline, study: Study, role: str, tol: float) -> Check | None:
    s = b.stats.get("transfer.zone_final_fraction")
    if s is None or s.value is None:
        return None
    want = final_fraction(study.get("transfer_zone", role), study.n_layers(role))
    return Check("Cross-model transfer", "zone final fraction of depth", fmt(want, "pct"), _est(s, "pct"),
                 abs(s.value - want) <= tol)


def differences(doc: Doc) -> list[str]:
    """Generated lines where a run disagrees with its study model, then the standing differences."""
    st = doc.study
    lines = ["## What differs", "",
             "Each run against the study model of its architecture and depth. A figure agrees when the study's "
             "value lies inside the measured 95% interval, or, without an interval, within "
             f"{fmt(REL_TOL, 'pct')} of it; a layer agrees when its relative depth is within the H001 tolerance "
             f"({fmt(st.thresholds['H001']['tolerance'])}); the transfer zone when its final fraction is within the "
             f"H005 tolerance ({fmt(st.thresholds['H005']['tolerance'])}).", ""]
    for b in doc.baselines:
        lines += [f"**{b.label}**" + (f" vs study {st.name(b.role)}:" if b.role else ":"), ""]
        if b.role is None:
            lines += ["- no study model of this architecture and depth; its tables stand on their own.", ""]
            continue
        cs = checks(b, st)
        lines += [f"- {c.table}, {c.what}: study {c.study}, measured {c.measured}." for c in cs if not c.agrees]
        agree = [f"{c.table} ({c.what})" for c in cs if c.agrees]
        lines += [f"- agrees: {', '.join(agree)}." if agree else "- agrees: none of the checked figures.", ""]
    lines += ["Known differences between this replication and the study:", ""] + _known(doc)
    lines += ["Decision rules that read a hypothesis differently from the study's own verdict "
              "(`atlas_core.verdicts`; each rule's docstring says why):", ""] + _rules(doc)
    return lines


def _pair_stat(doc: Doc, role: str, name: str, kind: str = "auto") -> str:
    if doc.pair is None:
        return NONE
    s = doc.pair[ROLES.index(role)].stats.get(name)
    return NONE if s is None or s.value is None else fmt(s.value, kind)


def _rules(doc: Doc) -> list[str]:
    """The rules changed so that each tests what its hypothesis says (thresholds from the study's claims file;
    figures from the pair's runs)."""
    th = doc.study.thresholds
    h3, h4, h5, h7 = th["H003"], th["H004"], th["H005"], th["H007"]
    small = lambda name, kind="auto": _pair_stat(doc, "small", name, kind)  # noqa: E731
    large = lambda name, kind="auto": _pair_stat(doc, "large", name, kind)  # noqa: E731
    return [
        "- H002 is measured only where every layer's heads are ablated (the full profile): a maximum over sampled "
        "layers is a lower bound, and the ci profile's three head layers skip L1, where Coder-1.5B's strongest "
        "head is. Claims on H002 at the ci profile are refused.",
        f"- H003 divides the large model's boost by max(small, {fmt(h3['min_boost'])}): a small-scale boost below "
        f"{fmt(h3['min_boost'])} (one point of target probability) is no leverage to scale from, so it counts as "
        f"{fmt(h3['min_boost'])} and the ratio stays finite (the small model's boost at the study's layer here: "
        f"{small('steering.study_layer_best_boost')}); no leverage at either scale is rejected. The former rule "
        "divided by 0 and called any large boost an infinite scaling.",
        f"- H004 needs the small model to be selective first (best selectivity ≥ {fmt(h4['min_selectivity'])}×: the "
        "skill drops more than the rest) and, for supported, the large one too; two anti-selective models are "
        "rejected, where the former ratio rule called them preserved.",
        f"- H005 reads the transfer zone (layers recovering ≥ 95%), not the top three layers, which are the last "
        "three of any model whose recovery rises with depth (the last layer recovers 1 by construction). Supported "
        f"when the two zones' final fractions of depth differ by ≤ {fmt(h5['tolerance'])} (H001's “same relative "
        f"depth”) and both zones are non-empty and ≤ {fmt(h5['max_fraction'], 'pct')} of depth. The study's own "
        "zones (its table stops at L22 of the 1.5B model, 95.5%) give it SUPPORTED, as the study said; here: "
        f"{small('transfer.zone_final_fraction', 'pct')} and {large('transfer.zone_final_fraction', 'pct')}.",
        f"- H007 compares the scales: redundancy emerges when the best skip configuration's top-5 overlap rises by "
        f"≥ {fmt(h7['min_gain'])} from the small model to the large one (then supported above "
        f"{fmt(h7['threshold'], 'pct')}, partially supported below; the study: 0% → 10%). The former rule read the "
        f"large model alone ({large('efficiency.best_top5_overlap', 'pct')} here, beside "
        f"{small('efficiency.best_top5_overlap', 'pct')} at the small scale).",
        "- Claims: a claims file refuses a claim that cannot fail (`atlas_core.claim_hygiene`): a statistic true by "
        "construction (recovery at the last layer, the top-3 transfer fraction), a tolerance holding a decision "
        "threshold, or one holding the statistic's whole plausible range or its null while expecting an effect.",
        "",
    ]


def _known(doc: Doc) -> list[str]:
    """The standing differences (fixed text; the figures in it come from the runs and the study tables)."""
    st = doc.study
    sm = st.get("model", "large")
    runs = "; ".join(f"{b.label}: {b.run.model.get('dtype', NONE)} on {b.run.model.get('device', NONE)}, "
                     f"{_prompts_per_family(b)} prompts per family" for b in doc.baselines)
    alone = sorted({b.run.name for b in doc.baselines if b.role is None})
    prompts = " and ".join(f"“{p[0]}”" for p in st.get("steering", "large")["prompts"])
    skip_kl = [c[1] for c in st.get("skip", "large").values()]
    return [
        f"- Models: the Qwen2.5-Coder instruct models, not the study's base {st.name('large')} and "
        f"{st.name('small')}: the same architecture and depth, with weights trained further on code and "
        "instructions." + (f" {', '.join(alone)} has no counterpart in the study." if alone else ""),
        "- Weights: the Q4_K_M GGUF files published for these models, dequantized to ordinary torch weights; "
        "quantization error is part of every measured figure.",
        "- Prompts: Atlas's eight task families (`atlas_core/data/tasks/`), written for this suite; the study's own prompts "
        f"are kept where it gave them (the steering prompts {prompts}). The study does not state its prompt counts.",
        f"- Precision and hardware: the study ran {sm['dtype']} on a {sm['device']}; the runs here: {runs}.",
        "- Ablation definitions: layer ablation zeroes the layer's whole output (`resid`, the study's) and also the "
        "layer's write alone (`delta`); mean and resample ablation, which the study lacks, run where the profile "
        "asks for them (the full profile). Steering and knockout directions are the mean last-token residual "
        "difference between the family's items and its contrast prompts. Layer skipping passes the residual on "
        f"unchanged: the study's skip KLs of {_range(skip_kl)} nats are the size of zeroing a layer's whole output, "
        "which a skip does not do.",
        "- Statistics: Atlas reports 95% bootstrap intervals over prompts; the study ran one seed and gives none.",
    ] + _lora_known(doc) + _adapter_known(doc) + [""]


def _lora_known(doc: Doc) -> list[str]:
    """The LoRA protocol: what the study states, what Atlas chose, and the adapter sizes that follow."""
    trained = [b for b in doc.baselines if b.has("lora_training")]
    if not trained:
        return []
    runs = "; ".join(f"{b.label}: peak {fmt(r['learning_rate'])}, {r['steps']} steps, final loss {fmt(r['final_loss'])}"
                     for b in trained for r in [b.result("lora_training")])
    norms = "; ".join(f"{b.label} {fmt(min(b.result('adapter_ablation')['norm']))}–"
                      f"{fmt(max(b.result('adapter_ablation')['norm']))}" for b in trained if b.has("adapter_ablation"))
    lo, hi = doc.study.get("adapter", "large")["norm_range"]
    return [
        "- LoRA training: the study gives rank, alpha, batch size 1 and its final loss "
        f"({fmt(doc.study.get('lora', 'large')['final_loss'])}), not its learning rate, "
        "schedule or step count. Atlas uses AdamW at a peak learning rate decaying linearly to 0 and trains until the "
        f"loss is under the target ({runs}). Per-layer adapter weight norms ({norms}) differ from the study's "
        f"{fmt(lo)}–{fmt(hi)}, so adapter-ablation KLs compare across studies by how they go with the norm over layers "
        "(Pearson r, Spearman ρ), not by size.",
    ]


OUTLIER_GAP = 0.3  # |Spearman rho - Pearson r| above which a run's strongest adapter layer is reported


def _adapter_known(doc: Doc) -> list[str]:
    """Runs whose Pearson r and Spearman rho part ways: the strongest layer, how far it stands out, and r
    without it."""
    out = []
    for b in doc.baselines:
        r, rho = b.stats.get("adapter.pearson"), b.stats.get("adapter.spearman")
        if r is None or rho is None or r.value is None or rho.value is None or abs(rho.value - r.value) <= OUTLIER_GAP:
            continue
        res = b.result("adapter_ablation")
        kl = [e["value"] for e in res["kl"]]
        j = max(range(len(kl)), key=kl.__getitem__)
        e, mid = res["kl"][j], statistics.median(kl)
        few = (f"; its interval reaches down to {fmt(e['lo'])}, the other layers' size, so a few prompts carry it"
               if e.get("lo") is not None and e["lo"] <= 10 * mid else "")
        rest = [i for i in range(len(kl)) if i != j]
        without = pearson([res["norm"][i] for i in rest], [kl[i] for i in rest])
        out.append(
            f"- Adapter ablation on {b.label}: Pearson r {fmt(r.value)}, Spearman ρ {fmt(rho.value)}. Switching the "
            f"adapter off at {b.layer(res['layers'][j])} costs {_est(e)} nats, {fmt(kl[j] / mid)}× the median "
            f"layer's {fmt(mid)}{few}; without that layer r is {fmt(without)}. The H008 verdict follows r, as the "
            f"study's did; ρ counts the layer as one rank among {len(kl)}.")
    return out


# --------------------------------------------------------------------------------------------------

SECTIONS: tuple[Callable[[Doc], list[str]], ...] = (
    intro, timings, layer_ablation, ablation_modes, mlp_ablation, head_ablation, steering, knockout, lora,
    transfer, adapter, skipping, early_exit, hypotheses, differences,
)


def render_replication_doc(baselines_dir: str | Path, claims: str | Path = STUDY_CLAIMS) -> str:
    """The Markdown of the replication document for the runs under ``baselines_dir``."""
    study = load_study(claims)
    baselines = load_baselines(baselines_dir, study)
    doc = Doc(study, baselines, pair(baselines))
    lines = [line for section in SECTIONS for line in section(doc)]
    while lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"


def write_replication_doc(baselines_dir: str | Path, out: str | Path, claims: str | Path = STUDY_CLAIMS) -> Path:
    """Write the replication document (``docs/REPLICATION.md``) and return its path."""
    text = render_replication_doc(baselines_dir, claims)
    path = Path(out)
    atomic_write_text(path, text)
    return path
