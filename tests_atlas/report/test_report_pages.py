"""The HTML atlas built from stored tiny-qwen2 runs: every section, every number traced to the JSON,
nothing fetched from the network, data escaped, comparisons and the replication page, and a headless
Chromium that opens the pages from disk without console errors (screenshots under reports/)."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import pytest

from atlas_core import AtlasError
from atlas_core.integrity import seal_doc
from atlas_core.orchestrate import RunPlan, run_plan
from atlas_core.report import sections as S
from atlas_core.report import write_comparison, write_replication, write_report
from atlas_core.report.check import external_references, numbers, verify_numbers
from atlas_core.report.compare_page import delta_rows
from atlas_core.report.data import ReportedRun
from atlas_core.report.screenshot import chromium, find_chromium
from atlas_core.spec import experiments
from atlas_core.verdicts import VERDICTS, model_statistics

REPO = Path(__file__).resolve().parents[2]
PARTIAL_EXPERIMENTS = ("clean", "layer_ablation", "head_ablation", "steering")
PARTIAL_FAMILIES = ["arithmetic", "factual_recall", "copying"]
CHROMIUM = find_chromium()
TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="module")
def full_run(tmp_path_factory) -> Path:
    """Every experiment on tiny-qwen2 at the smoke profile, stored (no report: the tests write it)."""
    out = tmp_path_factory.mktemp("atlas") / "tiny-full"
    run_plan(RunPlan(model="tiny-qwen2", experiments="all", profile="smoke", out=out, report=False, progress=False))
    return out


@pytest.fixture(scope="module")
def partial_run(tmp_path_factory) -> Path:
    """Four experiments on three families with another seed; ``atlas run`` writes its atlas.html."""
    out = tmp_path_factory.mktemp("atlas") / "tiny-partial"
    run_plan(
        RunPlan(
            model="tiny-qwen2",
            experiments=list(PARTIAL_EXPERIMENTS),
            profile="smoke",
            out=out,
            seed=1,
            families=PARTIAL_FAMILIES,
            report=True,
            progress=False,
        )
    )
    return out


@pytest.fixture(scope="module")
def full_page(full_run) -> str:
    t0 = time.perf_counter()
    path = write_report(full_run)
    TIMINGS["report"] = time.perf_counter() - t0
    assert path == full_run / "atlas.html"
    return path.read_text()


@pytest.fixture(scope="module")
def compare_page(partial_run, full_run, tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("cmp") / "compare.html"
    t0 = time.perf_counter()
    path = write_comparison(partial_run, full_run, out=out)
    TIMINGS["compare"] = time.perf_counter() - t0
    return path, path.read_text()


def sections_of(html: str) -> dict[str, str]:
    return dict(re.findall(r'data-section="([^"]+)" data-state="([^"]+)"', html))


def section_html(html: str, sid: str) -> str:
    m = re.search(rf'<section id="{sid}".*?</section>', html, flags=re.S)
    assert m, f"no section {sid}"
    return m.group(0)


# ---------------------------------------------------------------------------------------------------
def test_every_section_present(full_page, full_run):
    found = sections_of(full_page)
    assert list(found) == [sid for sid, *_ in S.sections()]
    assert set(found.values()) == {"present"}, found
    assert "not run" not in full_page
    # each experiment section draws at least one plot; the hypothesis table has evidence for all eight
    for sid in (
        "clean",
        "layer_ablation",
        "mlp_ablation",
        "head_ablation",
        "steering",
        "knockout",
        "lora_training",
        "transfer",
        "adapter_ablation",
        "efficiency",
    ):
        assert section_html(full_page, sid).count("<svg") >= 1, sid
    hyp = section_html(full_page, "hypotheses")
    for hid, *_ in S.hypothesis_table():
        row = re.search(rf'<tr data-hypothesis="{hid}">.*?</tr>', hyp, flags=re.S).group(0)
        assert 'data-stat="' in row, f"{hid} shows no evidence"
    assert ReportedRun(full_run).name in full_page and "smoke" in full_page
    # the LoRA pairs still above the target loss are named (smoke training is too short to fit them all)
    above = json.loads((full_run / "lora_training.json").read_text())["result"]["above_target"]
    lora = section_html(full_page, "lora_training")
    assert above and f"Pairs above the target loss after training ({len(above)}" in lora
    assert lora.count('data-src="lora_training#/result/above_target/') == min(len(above), S.UNFIT_ROWS)


def test_missing_experiments_say_not_run_and_atlas_run_writes_the_page(partial_run):
    page = (partial_run / "atlas.html").read_text()  # written by run_plan(report=True)
    found = sections_of(page)
    for sid, key, *_ in S.sections():
        if key is None:
            assert found[sid] == "present"
            continue
        expected = "present" if key in PARTIAL_EXPERIMENTS else "not-run"
        assert found[sid] == expected, sid
        if expected == "not-run":
            body = section_html(page, sid)
            assert "not run" in body and f"--experiments {key}" in body
    clean = section_html(page, "clean")
    assert all(f in clean for f in PARTIAL_FAMILIES) and "json_schema" not in clean


def test_numbers_equal_the_json(full_page, full_run, partial_run):
    checked, problems = verify_numbers(full_page, {None: full_run})
    assert problems == []
    assert checked >= 400, checked
    sources = {n.src.split("#")[0] for n in numbers(full_page) if n.src}
    assert sources >= {"manifest", *experiments()}, sources
    page = (partial_run / "atlas.html").read_text()
    checked, problems = verify_numbers(page, {None: partial_run})
    assert problems == [] and checked >= 100


def test_a_sweep_whose_layers_all_tie_is_flagged_not_ranked(full_run, full_page, tmp_path):
    """Zeroing the whole residual of a bias-free model (Gemma; tiny-qwen2, whose random init leaves its
    biases at zero) gives the same KL at every layer: the page says so instead of presenting the
    tie-broken order as the top layers. A sweep that does rank its layers carries no such flag."""
    from atlas_core.metrics import is_tie

    sweeps = json.loads((full_run / "layer_ablation.json").read_text())["result"]["sweeps"]
    tied = [s for s in sweeps if is_tie(s["family_mean_kl"])]
    assert [(s["target"], s["mode"]) for s in tied] == [("resid", "zero")]  # bias-free: zero in, zero out
    body = section_html(full_page, "layer_ablation")
    assert body.count("(all layers tie)") == 1
    assert "these ranks are a tie in layer order, not an order by effect" in body

    copy = tmp_path / "run"
    shutil.copytree(full_run, copy, ignore=shutil.ignore_patterns("lora_adapter*", "atlas.html"))
    doc = json.loads((copy / "layer_ablation.json").read_text())
    sweep = next(s for s in doc["result"]["sweeps"] if (s["target"], s["mode"]) == ("resid", "zero"))
    sweep["family_mean_kl"] = [1.0 + 0.5 * j for j in range(len(sweep["layers"]))]
    (copy / "layer_ablation.json").write_text(json.dumps(seal_doc(doc)))
    body = section_html(write_report(copy).read_text(), "layer_ablation")
    assert "all layers tie" not in body and "a tie in layer order" not in body


def test_number_check_catches_a_changed_value(full_page, full_run, tmp_path):
    """The check can fail: change one stored value after rendering and it is reported."""
    copy = tmp_path / "run"
    shutil.copytree(full_run, copy)
    doc = json.loads((copy / "steering.json").read_text())
    doc["result"]["best_boost"]["value"] += 0.125
    (copy / "steering.json").write_text(json.dumps(doc))
    _, problems = verify_numbers(full_page, {None: copy})
    assert problems and all("steering#/result/best_boost/value" in p for p in problems), problems


def test_shown_text_is_three_significant_digits(full_page):
    nums = [n for n in numbers(full_page) if n.kind == "auto" and n.value not in ("null",) and "." in n.value]
    assert nums
    for n in nums:
        digits = re.sub(r"[^0-9]", "", n.text.split("e")[0].lstrip("-0.").replace(",", ""))
        assert len(digits) <= 3 or float(n.value) >= 1000, (n.text, n.value)


def test_statistics_equal_atlas_core_verdicts(full_page, full_run):
    run = ReportedRun(full_run)
    stats = model_statistics(run.results, run.n_layers)
    seen = 0
    for n in numbers(full_page):
        if not (n.derived or "").startswith("atlas_core.verdicts.model_statistics: "):
            continue
        name, _, part = n.derived.split(": ", 1)[1].partition(" (")
        stat = stats[name]
        want = {"": stat.value, "lo)": stat.lo, "hi)": stat.hi}[part]
        assert float(n.value) == float(want), (name, part, n.value, want)
        seen += 1
    assert seen >= 15


def test_no_external_url(full_page, compare_page):
    for page in (full_page, compare_page[1]):
        assert external_references(page) == []
        assert "http://" not in page and "https://" not in page
        assert "<script" not in page.lower()  # nothing to load, nothing to run
    assert external_references('<img src="https://cdn.example/x.png">')  # the check itself can fail


def test_data_is_escaped(full_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(full_run, copy)
    evil = '<script>alert("atlas")</script>'
    doc = json.loads((copy / "clean.json").read_text())
    doc["result"]["prompts"][0]["prompt"] = evil
    doc["result"]["prompts"][1]["predicted"] = '<img src=x onerror="alert(1)">'
    (copy / "clean.json").write_text(json.dumps(seal_doc(doc)))
    doc = json.loads((copy / "efficiency.json").read_text())
    doc["result"]["skip_configs"][0]["name"] = "<b>bold</b> & co"
    (copy / "efficiency.json").write_text(json.dumps(seal_doc(doc)))
    page = write_report(copy).read_text()
    assert "<script" not in page and "<img" not in page and "<b>bold</b>" not in page
    assert "&lt;script&gt;alert(&#34;atlas&#34;)&lt;/script&gt;" in page
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; co" in page
    assert external_references(page) == []


def test_comparison(compare_page, partial_run, full_run):
    path, page = compare_page
    found = sections_of(page)
    assert list(found) == [sid for sid, *_ in S.sections()] and set(found.values()) == {"present"}
    checked, problems = verify_numbers(page, {"a": partial_run, "b": full_run})
    assert problems == [] and checked >= 500
    # per-layer curves share the relative-depth axis
    assert page.count("relative depth (layer / (n_layers − 1))") >= 8
    # the runs' own sections side by side; B's extra experiments say "not run" in A's column
    knock = section_html(page, "knockout")
    assert 'data-run="a"' in knock and 'data-run="b"' in knock and "not run" in knock
    # verdicts for the pair, or the reason there is none (A lacks the experiment; the smoke profile samples
    # head layers, so H002 is not measurable)
    hyp = section_html(page, "hypotheses")
    verdicts = re.findall(r'data-verdict="([^"]*)"', hyp)
    assert len(verdicts) == 8
    for (hid, *_), v in zip(S.hypothesis_table(), verdicts):
        row = re.search(rf'<tr data-hypothesis="{hid}">.*?</tr>', hyp, flags=re.S).group(0)
        assert (
            v in VERDICTS
            or "missing: run its experiment" in row
            or (hid == "H002" and "H002 is not measurable here" in row)
        ), (hid, v)
    assert sum(v in VERDICTS for v in verdicts) >= 2  # H001 and H003 have both sides


def test_comparison_deltas(partial_run, full_run, compare_page):
    runs = [ReportedRun(partial_run, "a"), ReportedRun(full_run, "b")]
    stats = [S.statistics(r) for r in runs]
    flagged = 0
    for sid in experiments():
        for row in delta_rows(sid, runs, stats):
            a, b = (stats[0].get(row["name"]), stats[1].get(row["name"]))
            if row["delta"] is None:
                assert a is None or b is None or a.value is None or b.value is None
                continue
            assert float(row["delta"].value) == b.value - a.value
            disjoint = None not in (a.lo, a.hi, b.lo, b.hi) and (a.hi < b.lo or b.hi < a.lo)
            assert row["beyond"] == disjoint, row["name"]
            flagged += row["beyond"]
    assert compare_page[1].count('data-beyond="true"') == flagged


def test_replication_renders_every_baseline(partial_run, full_run, tmp_path):
    base = tmp_path / "baselines"
    shutil.copytree(full_run, base / "1-full", ignore=shutil.ignore_patterns("lora_adapter*"))
    shutil.copytree(partial_run, base / "2-partial")
    page = write_replication(base).read_text()
    assert path_exists(base / "replication.html")
    checked, problems = verify_numbers(page, {"a": base / "1-full", "b": base / "2-partial"})
    assert problems == [] and checked >= 500
    assert 'data-run="a"' in page and 'data-run="b"' in page


def path_exists(p: Path) -> bool:
    return p.is_file() and p.stat().st_size > 0


def test_bad_input_is_a_clear_error(tmp_path, full_run):
    with pytest.raises(AtlasError, match="atlas run"):
        write_report(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AtlasError, match="no atlas results"):
        write_report(tmp_path / "empty")
    with pytest.raises(AtlasError, match="does not exist"):
        write_comparison(full_run, tmp_path / "missing")
    with pytest.raises(AtlasError, match="no run folders"):
        write_replication(tmp_path / "empty")
    assert not (tmp_path / "empty" / "atlas.html").exists()


# ---------------------------------------------------------------------------------------------------
# headless Chromium (Debian's chromium package; .ci/run installs it), run as atlas_core.report.screenshot runs it

CONSOLE_ERROR = re.compile(r"Uncaught|CONSOLE\(\d+\)\].*(?:error|Error)|Failed to load resource|net::ERR_")


def console_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if CONSOLE_ERROR.search(line)]


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="headless Chromium not installed: apt-get install -y chromium "
    "(.ci/run installs it); the browser check needs it",
)
def test_browser_opens_pages_without_console_errors(full_run, full_page, compare_page, tmp_path):
    from PIL import Image

    # the console check can fail: a page with a script error is caught
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><script>notDefinedAnywhere()</script></body></html>")
    res = chromium("--dump-dom", bad.as_uri(), profile=tmp_path / "p0")
    assert console_errors(res.stderr), res.stderr[-2000:]

    reports = REPO / "reports"
    reports.mkdir(exist_ok=True)
    for name, page_path, expected in (
        ("atlas-screenshot.png", full_run / "atlas.html", full_page),
        ("atlas-compare-screenshot.png", compare_page[0], compare_page[1]),
    ):
        dom = chromium("--dump-dom", page_path.as_uri(), profile=tmp_path / f"d-{name}")
        assert dom.returncode == 0, dom.stderr[-2000:]
        assert console_errors(dom.stderr) == [], console_errors(dom.stderr)
        # the browser built the whole page: every section and every plot is in its DOM
        assert list(sections_of(dom.stdout)) == [sid for sid, *_ in S.sections()]
        assert dom.stdout.count("<svg") == expected.count("<svg") > 10
        shot = reports / name
        shot.unlink(missing_ok=True)
        res = chromium(
            "--window-size=1400,2400", f"--screenshot={shot}", page_path.as_uri(), profile=tmp_path / f"s-{name}"
        )
        assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
        assert console_errors(res.stderr) == []
        im = Image.open(shot).convert("L")
        assert im.size == (1400, 2400)
        lo, hi = im.getextrema()
        assert hi - lo > 100  # drawn, not blank


@pytest.mark.parametrize(
    "value, kind, shown",
    [
        (13.70, "auto", "13.7"),
        (11654.3, "auto", "11,654"),
        (0.000919, "auto", "9.19e-04"),
        (0.24, "x", "0.24×"),
        (0.9286, "pct", "92.9%"),
        (None, "auto", "—"),
        (float("nan"), "auto", "—"),
        (float("inf"), "x", "∞"),
        (True, "auto", "yes"),
        (151936, "auto", "151,936"),
        (26, "auto", "26"),
        (-1.6189, "auto", "-1.62"),
        (0.0, "auto", "0"),
    ],
)
def test_number_format(value, kind, shown):
    from atlas_core.report.data import fmt

    assert fmt(value, kind) == shown
