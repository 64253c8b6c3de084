"""``docs/REPLICATION.md``: the study's tables beside the committed baseline runs, as Markdown.

One job: a baselines folder (run folders written by ``atlas run``, see
:func:`atlas_core.baselines.baseline_runs`) in, one deterministic Markdown document out (no render time,
no absolute paths: the same JSON gives the same bytes wherever the folder lies). Regenerate with
:data:`REGENERATE`; ``tests_atlas/report/test_replication_doc.py`` checks the committed copy.

The tables (rows of cells) each section shows are assembled by :mod:`~atlas_core.report.replication_ablation`
and :mod:`~atlas_core.report.replication_interventions` on the grid of :mod:`~atlas_core.report.replication_grid`;
this module adds what was run and the timings, and renders them; the prose and the layout are the template
``templates/replication.md``. Where the numbers come from:

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
from typing import Any, Callable

from jinja2 import Environment, PackageLoader, StrictUndefined

from atlas_core.claims import CLAIMS_DIR
from atlas_core.report.agreement import REL_TOL, differences, known, pair_stat, verdicts
from atlas_core.report.study_baselines import Baseline, Doc, load_doc
from atlas_core.report.cells import NONE, NOT_RUN, Table
from atlas_core.report.data import fmt
from atlas_core.report.study import STUDY_CLAIMS, load_study
from atlas_core.results import atomic_write_text
from atlas_core.spec import experiments
from atlas_core.experiments.efficiency import MID_BAND
from atlas_core.report.replication_ablation import ablation_modes, head_ablation, layer_ablation, mlp_ablation
from atlas_core.report.replication_interventions import (
    adapter,
    early_exit,
    knockout,
    lora,
    skipping,
    steering,
    transfer,
)

REGENERATE = "atlas report --replication atlas_core/data/baselines --doc docs/REPLICATION.md"
TEMPLATE = "replication.md"


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
