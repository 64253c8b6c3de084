"""pytest-html rows that carry the atlas figures.

A hypothesis or finding test records what it measured as a user property::

    request.node.user_properties.append(("atlas", {
        "claim": "H003: steering leverage scales with capacity", "models": ["coder-0.5b", "coder-1.5b"],
        "statistic": "best boost ratio large/small", "value": 0.41, "lo": 0.2, "hi": 0.7,
        "threshold": "supported if >= 1, rejected if < 0.5", "verdict": "rejected",
        "expected_verdict": "rejected", "series": {"x": [...], "y": [...], "xlabel": "layer", "ylabel": "boost"},
    }))

With ``pytest --html=reports/tests.html --self-contained-html`` every such row gets the columns
Model(s), Statistic [95% CI], Threshold / claim and Verdict, and its extras a small inline SVG plot of the
series (threshold dashed, measured interval shaded). Register the module as a pytest plugin
(``pytest_plugins = [..., "atlas_core.report.pytest_html_hooks"]``); every pytest-html hook is optional,
so nothing breaks when pytest-html is absent or ``--html`` is not given.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from markupsafe import escape

from atlas_core.report.data import fmt

KEY = "atlas"
COLUMNS = (
    ("atlas_models", "Model(s)"),
    ("atlas_statistic", "Statistic [95% CI]"),
    ("atlas_threshold", "Threshold / claim"),
    ("atlas_verdict", "Verdict"),
)


def atlas_properties(user_properties) -> dict | None:
    """The ``("atlas", {...})`` entry of a test's user properties (the last one wins), else None."""
    found = None
    for item in user_properties or ():
        if isinstance(item, (tuple, list)) and len(item) == 2 and item[0] == KEY and isinstance(item[1], dict):
            found = item[1]
    return found


def _num(v: Any) -> str:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return fmt(v)
    return "—" if v is None else str(v)


def row_cells(props: dict | None) -> list[str]:
    """The four ``<td>`` cells of a row (empty cells for a test that records no atlas figures)."""
    if props is None:
        return [f'<td class="col-{key}"></td>' for key, _ in COLUMNS]
    models = props.get("models")
    models = (
        ", ".join(map(str, models)) if isinstance(models, (list, tuple)) else ("" if models is None else str(models))
    )
    stat = f"{escape(str(props.get('statistic', '')))} = {escape(_num(props.get('value')))}"
    if props.get("lo") is not None and props.get("hi") is not None:
        stat += f" [{escape(_num(props['lo']))}, {escape(_num(props['hi']))}]"
    threshold = props.get("threshold")
    claim = props.get("claim")
    thr = str(escape(_num(threshold))) if threshold is not None else ""
    if claim:
        thr = f"{thr}<br><small>{escape(str(claim))}</small>" if thr else escape(str(claim))
    verdict, expected = props.get("verdict"), props.get("expected_verdict")
    v = str(escape(str(verdict))) if verdict is not None else ""
    if expected is not None and expected != verdict:
        v = f'<b style="color:#b3261e">{v}</b> <small>(expected {escape(str(expected))})</small>'
    return [
        f'<td class="col-atlas_models">{escape(models)}</td>',
        f'<td class="col-atlas_statistic">{stat}</td>',
        f'<td class="col-atlas_threshold">{thr}</td>',
        f'<td class="col-atlas_verdict">{v}</td>',
    ]


def plot(props: dict) -> str | None:
    """A small inline SVG of the row's series with the threshold and the measured interval, or None."""
    series = props.get("series")
    if not isinstance(series, dict) or not series.get("x") or not series.get("y"):
        return None
    from atlas_core.report import plots

    threshold = props.get("threshold")
    threshold = float(threshold) if isinstance(threshold, (int, float)) and not isinstance(threshold, bool) else None
    lo, hi = props.get("lo"), props.get("hi")
    value = props.get("value")
    ok = all(isinstance(v, (int, float)) and math.isfinite(v) for v in (value, lo, hi))
    svg = plots.sparkline(
        series["x"],
        series["y"],
        series.get("xlabel", ""),
        series.get("ylabel", ""),
        threshold=threshold,
        value=value if ok else None,
        lo=lo if ok else None,
        hi=hi if ok else None,
    )
    caption = escape(f"{props.get('statistic', '')}: {series.get('ylabel', '')} vs {series.get('xlabel', '')}")
    return f'<div class="atlas-plot"><div>{caption}</div>{svg}</div>'


@pytest.hookimpl(optionalhook=True)
def pytest_html_results_table_header(cells):
    at = 2 if len(cells) >= 2 else len(cells)
    for i, (key, title) in enumerate(COLUMNS):
        cells.insert(at + i, f'<th class="sortable" data-column-type="{key}">{title}</th>')


@pytest.hookimpl(optionalhook=True)
def pytest_html_results_table_row(report, cells):
    at = 2 if len(cells) >= 2 else len(cells)
    for i, cell in enumerate(row_cells(atlas_properties(getattr(report, "user_properties", ())))):
        cells.insert(at + i, cell)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach the inline plot to the call-phase report when pytest-html is active."""
    report = yield
    if report.when != "call" or not getattr(item.config.option, "htmlpath", None):
        return report  # pytest-html absent, or no --html report asked for
    props = atlas_properties(item.user_properties)
    if props is None:
        return report
    try:
        from pytest_html import extras
    except ImportError:
        return report
    html = plot(props)
    if html is not None:
        report.extras = list(getattr(report, "extras", []) or []) + [extras.html(html)]
    return report
