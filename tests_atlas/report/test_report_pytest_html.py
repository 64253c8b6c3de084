"""pytest-html integration: a test that records ("atlas", {...}) in its user properties gets the
Model(s) / Statistic [95% CI] / Threshold / Verdict columns and an inline SVG plot in its row; the plugin
is harmless without pytest-html or without --html. Each case runs an inner pytest in a subprocess."""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from atlas_core.report.pytest_html_hooks import atlas_properties, row_cells

PLUGIN = "atlas_core.report.pytest_html_hooks"
INNER = """
import pytest

def test_h003_ratio(request):
    request.node.user_properties.append(("atlas", {
        "claim": "H003: steering leverage scales <with> capacity", "models": ["small-model", "large-model"],
        "statistic": "best boost ratio large/small", "value": 0.4125, "lo": 0.2, "hi": 0.7,
        "threshold": 0.5, "verdict": "rejected", "expected_verdict": "rejected",
        "series": {"x": [0, 1, 2, 3], "y": [0.1, 0.3, 0.2, 0.05], "xlabel": "layer", "ylabel": "boost"},
    }))
    assert 0.4125 < 0.5

def test_h008_mismatch(request):
    request.node.user_properties.append(("atlas", {
        "claim": "H008", "models": "one-model", "statistic": "pearson r", "value": 0.61, "lo": None, "hi": None,
        "threshold": "rejected if < 0.3", "verdict": "partially supported", "expected_verdict": "weakened",
        "series": None,
    }))

def test_plain():
    assert True
"""


def inner_pytest(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    (tmp_path / "test_inner.py").write_text(INNER)
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "--rootdir",
        str(tmp_path),
        "-c",
        str(tmp_path / "none.ini"),
        "test_inner.py",
        *args,
    ]
    (tmp_path / "none.ini").write_text("[pytest]\n")
    return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)


def report_tests(page: str) -> dict[str, list[dict]]:
    blob = re.search(r'data-jsonblob="([^"]*)"', page)
    assert blob, "no data blob in the pytest-html page"
    return json.loads(html.unescape(blob.group(1)))["tests"]


def test_rows_carry_the_figures_and_a_plot(tmp_path):
    res = inner_pytest(tmp_path, "-p", PLUGIN, "--html=out.html", "--self-contained-html")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    page = (tmp_path / "out.html").read_text()
    for title in ("Model(s)", "Statistic [95% CI]", "Threshold / claim", "Verdict"):
        assert title in page
    tests = report_tests(page)
    row = {k.split("::")[-1]: v[0] for k, v in tests.items()}
    cells = " ".join(row["test_h003_ratio"]["resultsTableRow"])
    assert "small-model, large-model" in cells
    assert "best boost ratio large/small = 0.412 [0.2, 0.7]" in cells
    assert "H003: steering leverage scales &lt;with&gt; capacity" in cells  # escaped
    assert ">rejected<" in cells
    plots = [e for e in row["test_h003_ratio"]["extras"] if e["format_type"] == "html"]
    assert len(plots) == 1 and "<svg" in plots[0]["content"] and "http" not in plots[0]["content"]
    mismatch = " ".join(row["test_h008_mismatch"]["resultsTableRow"])
    assert '<b style="color:#b3261e">partially supported</b> <small>(expected weakened)</small>' in mismatch
    assert "pearson r = 0.61" in mismatch and "[" not in mismatch.split("pearson r = 0.61")[1][:3]
    assert not [e for e in row["test_h008_mismatch"]["extras"] if e["format_type"] == "html"]  # no series
    plain = row["test_plain"]["resultsTableRow"]
    assert len(plain) == len(row["test_h003_ratio"]["resultsTableRow"])  # empty cells keep the table square


@pytest.mark.parametrize("args", [(), ("-p", "no:html")], ids=["no-html-option", "pytest-html-disabled"])
def test_harmless_without_pytest_html(tmp_path, args):
    res = inner_pytest(tmp_path, "-p", PLUGIN, *args)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "3 passed" in res.stdout


def test_properties_and_cells():
    assert atlas_properties([("other", 1), ("atlas", {"value": 1}), ("atlas", {"value": 2})]) == {"value": 2}
    assert atlas_properties([("atlas", "not a dict")]) is None
    empty = row_cells(None)
    assert len(empty) == 4 and all(c.endswith("></td>") for c in empty)
    cells = row_cells(
        {
            "models": ["m<1>"],
            "statistic": "s",
            "value": 1234.5,
            "lo": 1000.0,
            "hi": 1500.0,
            "threshold": 0.5,
            "verdict": "supported",
            "expected_verdict": "supported",
        }
    )
    assert "m&lt;1&gt;" in cells[0] and "s = 1,234 [1,000, 1,500]" in cells[1] and "0.5" in cells[2]
    assert "expected" not in cells[3]
