"""The atlas as HTML: one self-contained page per run, per comparison and for the replication.

Pages are rendered with jinja2 (autoescape on: every string from data is escaped), with inline CSS and
inline SVG plots (matplotlib, Agg); they hold no external URL and open from disk offline. Every number
is a span carrying its exact value and where it came from (see :mod:`atlas_core.report.data`).

- :func:`write_report` — ``RUN_DIR/atlas.html`` for one run (``atlas report RUN_DIR``, end of ``atlas run``);
- :func:`write_comparison` — two runs side by side, per-layer curves on relative depth, deltas highlighted
  (``atlas report --compare RUN_A RUN_B``);
- :func:`write_replication` — every baseline run under a folder side by side (``atlas report --replication``).
"""

from __future__ import annotations

import time
from importlib import metadata
from pathlib import Path

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from atlas_core import AtlasError
from atlas_core.baselines import baseline_runs
from atlas_core.report.data import ReportedRun
from atlas_core.results import atomic_write_text

__all__ = ["write_report", "write_comparison", "write_replication", "render_report", "render_comparison"]


def _env() -> Environment:
    env = Environment(
        loader=PackageLoader("atlas_core.report", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env


def _common(title: str) -> dict:
    try:
        version = metadata.version("atlas-interp")
    except metadata.PackageNotFoundError:
        version = "dev"
    css = (Path(__file__).parent / "templates" / "style.css").read_text()
    return {
        "title": title,
        "css": Markup(css),
        "version": version,
        "generated": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def render_report(run_dir: str | Path) -> str:
    """The HTML of one run's atlas (see :func:`write_report`)."""
    from atlas_core.report import sections as S

    run = ReportedRun(run_dir)
    run.require_records()  # a manifest alone must not be drawn as a finished run
    toc = []
    for sid, key, title, what in S.sections():
        if sid == "model":
            data, present = S.model_card(run), True
        elif sid == "hypotheses":
            data, present = None, True
        else:
            data = S.builder(sid)(run)
            present = data is not None
        toc.append(
            {
                "id": sid,
                "key": key or sid,
                "title": title,
                "what": what,
                "present": present,
                "data": data,
                "macro": S.macro(sid),
            }
        )
    experiments = [s for s in toc if s["id"] not in ("model", "hypotheses")]
    ctx = _common(f"Atlas · {run.name}")
    ctx.update(
        card=toc[0]["data"],
        toc=toc,
        hyp_rows=S.hypothesis_rows(run),
        present_count=sum(s["present"] for s in experiments),
        experiment_count=len(experiments),
    )
    return _env().get_template("report.html").render(**ctx)


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the run's atlas to ``out`` (default ``RUN_DIR/atlas.html``) and return its path.

    Sections whose experiment the run lacks say "not run"; a folder without any result is an error."""
    html = render_report(run_dir)
    return atomic_write_text(Path(out) if out else Path(run_dir) / "atlas.html", html)


def render_comparison(run_dirs: list[str | Path], title: str | None = None, replication: bool = False) -> str:
    """The HTML of several runs side by side (two: a comparison with deltas)."""
    from atlas_core.report import compare_page as C

    if len(run_dirs) < 2:
        raise AtlasError("a comparison needs at least two run folders")
    labels = "abcdefghijklmnopqrstuvwxyz"
    runs = [ReportedRun(d, label=labels[i]) for i, d in enumerate(run_dirs)]
    return C.render(_env(), _common(title or " vs ".join(r.name for r in runs)), runs, replication=replication)


def write_comparison(run_a: str | Path, run_b: str | Path, out: str | Path | None = None) -> Path:
    """Write two runs' atlases side by side (for example Coder 0.5B vs 1.5B, or a baseline vs a
    candidate) with relative depth on a shared axis and the headline deltas highlighted; default
    output ``RUN_B/compare-<name of RUN_A>.html``."""
    html = render_comparison([run_a, run_b])
    return atomic_write_text(Path(out) if out else Path(run_b) / f"compare-{Path(run_a).resolve().name}.html", html)


def write_replication(baselines_dir: str | Path, out: str | Path | None = None) -> Path:
    """Every committed baseline run under ``baselines_dir`` side by side: model cards, the finding
    statistics of each run in one table, per-layer curves on relative depth, and each run's sections.
    The study's figures beside them are in the Markdown document (``report.replication``). Default output
    ``BASELINES_DIR/replication.html``."""
    runs = baseline_runs(baselines_dir)
    if len(runs) == 1:
        html = render_report(runs[0])
    else:
        html = render_comparison(
            runs, title="Atlas replication · " + ", ".join(ReportedRun(r).name for r in runs), replication=True
        )
    return atomic_write_text(Path(out) if out else Path(baselines_dir) / "replication.html", html)
