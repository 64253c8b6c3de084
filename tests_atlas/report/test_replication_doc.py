"""docs/REPLICATION.md: rendered deterministically from baseline runs (copies of stored run JSON), every
section present, sampled numbers equal to the JSON as the document formats them, "not run" where a run
lacks an experiment, the committed document equal to a regeneration, and the CLI refusing bad input.
No model is loaded."""

from __future__ import annotations

import difflib
import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from atlas_core.baselines import export_baseline
from atlas_core.cli import main
from atlas_core.metrics import is_tie
from atlas_core.data import BASELINES_DIR
from atlas_core.orchestrate import RunPlan, run_plan
from atlas_core.report.data import fmt
from atlas_core.report.replication import REGENERATE, render_replication_doc
from atlas_core.verdicts import relative_depth

REPO = Path(__file__).resolve().parents[2]
BASELINES = BASELINES_DIR
DOC = REPO / "docs" / "REPLICATION.md"
HEADINGS = (
    "# Replication of “Qwen2.5-1.5B: Scaling the Atlas”", "## What was run", "## Run timings",
    "## Layer ablation: top layers", "## Mean and resample ablation (missing from the study)",
    "## MLP ablation: top layers", "## Head ablation: specialist heads", "## Steering", "## Skill knockout",
    "## LoRA training: base → trained KL per family", "## Cross-model transfer", "## Adapter ablation",
    "## Layer skipping", "## Early exit", "## Hypotheses H001–H008", "## What differs",
)
EXPERIMENT_SECTIONS = {  # experiment -> the section whose first table has a column per run
    "layer_ablation": "## Layer ablation: top layers", "mlp_ablation": "## MLP ablation: top layers",
    "head_ablation": "## Head ablation: specialist heads", "steering": "## Steering", "knockout": "## Skill knockout",
    "lora_training": "## LoRA training: base → trained KL per family", "transfer": "## Cross-model transfer",
    "adapter_ablation": "## Adapter ablation", "efficiency": "## Layer skipping",
}


@pytest.fixture(scope="module")
def baselines(tmp_path_factory) -> Path:
    """The committed baselines when they exist; else every experiment of tiny-qwen2 at the smoke profile, run
    here (never whatever happens to lie in reports/runs: the tests must not depend on local state)."""
    dest = tmp_path_factory.mktemp("repl") / "baselines"
    runs = sorted({p.parent for p in BASELINES.rglob("manifest.json")}) if BASELINES.is_dir() else []
    if runs:
        for run in runs:
            export_baseline(run, dest)
        return dest
    run_plan(RunPlan(model="tiny-qwen2", experiments="all", profile="smoke", out=dest / "tiny-qwen2-smoke",
                     report=False, progress=False))
    return dest


@pytest.fixture(scope="module")
def doc(baselines) -> str:
    return render_replication_doc(baselines)


def section(text: str, heading: str) -> str:
    start = text.index(heading + "\n")
    end = text.find("\n## ", start + len(heading))
    return text[start:] if end < 0 else text[start:end]


def first_table(text: str) -> tuple[list[str], list[list[str]]]:
    """The header and the rows of the first Markdown table in ``text``."""
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("|"))
    block = list(itertools.takewhile(lambda ln: ln.startswith("|"), lines[start:]))
    cells = [[c.strip() for c in ln[2:-2].split(" | ")] for ln in block]
    return cells[0], cells[2:]


def column(text: str, heading: str, label: str) -> list[str]:
    head, rows = first_table(section(text, heading))
    j = head.index(label)
    return [r[j] for r in rows]


def run_label(run: Path) -> str:
    m = json.loads((run / "manifest.json").read_text())
    return f"{m['model']['name']} ({m['profile']['name']})"


def ranks(x) -> list[float]:
    """Ranks from 0 by definition, ties sharing the mean rank (Spearman's convention)."""
    return [sum(b < a for b in x) + (sum(b == a for b in x) - 1) / 2 for a in x]


def load(run: Path, key: str) -> dict:
    return json.loads((run / f"{key}.json").read_text())["result"]


def est(e: dict, kind: str = "auto") -> str:
    return f"{fmt(e['value'], kind)} [{fmt(e['lo'], kind)}, {fmt(e['hi'], kind)}]"


# ---------------------------------------------------------------------------------------------------
def test_deterministic_and_independent_of_location(baselines, doc, tmp_path):
    assert render_replication_doc(baselines) == doc
    moved = shutil.copytree(baselines, tmp_path / "elsewhere" / "baselines")
    assert render_replication_doc(moved) == doc
    assert str(baselines) not in doc and REGENERATE in doc


def test_every_section_in_order(doc):
    at = [doc.index(h + "\n") for h in HEADINGS]
    assert at == sorted(at), "sections out of order"
    for hid in ("H001", "H002", "H003", "H004", "H005", "H006", "H007", "H008"):
        assert f"| {hid} |" in section(doc, "## Hypotheses H001–H008")


def test_sampled_numbers_equal_the_json(baselines, doc):
    sampled = 0
    for run in sorted(p for p in baselines.iterdir() if p.is_dir()):
        label = run_label(run)
        manifest = json.loads((run / "manifest.json").read_text())
        n = manifest["model"]["n_layers"]
        assert manifest["model"]["weights_sha256"][:12] in section(doc, "## What was run")
        timings = section(doc, "## Run timings")
        for key, info in manifest["experiments"].items():
            assert f"{fmt(info['wall_seconds'])} s" in timings, key
            before = load(run, key).get("provenance", {}).get("resumed_after_seconds") or 0
            assert (f"{key} ({fmt(before)} s before its last session)" in timings) == (before > 0), key
        if (run / "layer_ablation.json").exists():
            r = load(run, "layer_ablation")
            s = next(s for s in r["sweeps"] if (s["target"], s["mode"]) == ("resid", "zero"))
            top = s["ranking"][0]
            want = f"L{top} ({fmt(relative_depth(top, n), 'pct')}) {est(s['mean_kl'][s['layers'].index(top)])}"
            if is_tie(s["family_mean_kl"]):  # every layer the same KL (a bias-free model): no ranking shown
                want = f"all {n} layers tie at {est(s['mean_kl'][0])}: no layer stands out (see below)"
            assert column(doc, "## Layer ablation: top layers", label)[0] == want
            sampled += 1
            study_top = {28: 26, 24: 2}.get(n) if manifest["model"]["architecture"] == "qwen2" else None
            if study_top is not None and not is_tie(s["family_mean_kl"]):  # the study's strongest layer, ranked here
                sec = section(doc, "## Mean and resample ablation (missing from the study)")
                head, rows = first_table(sec[sec.index("Where the study's top layer"):])
                rank = list(s["ranking"]).index(study_top) + 1
                kl = fmt(s["family_mean_kl"][s["layers"].index(study_top)])
                assert rows[0][0] == "resid / zero" and rows[0][head.index(label)] == f"#{rank} of {n} · {kl}"
                sampled += 1
        if (run / "steering.json").exists():
            r = load(run, "steering")
            assert est(r["study_layer_best_boost"]) in column(doc, "## Steering", label)[2]
            sampled += 1
        if (run / "knockout.json").exists():
            r = load(run, "knockout")
            assert column(doc, "## Skill knockout", label)[0].startswith(fmt(r["best_selectivity"], "x") + " at ")
            sampled += 1
        if (run / "transfer.json").exists():
            r = load(run, "transfer")
            j = r["layers"].index(r["top_layers"][0])
            assert est(r["mean_recovery"][j], "pct") in column(doc, "## Cross-model transfer", label)[0]
            sampled += 1
        if (run / "efficiency.json").exists():
            c = load(run, "efficiency")["skip_configs"][0]
            assert est(c["top5_overlap"], "pct") in column(doc, "## Layer skipping", label)[0]
            sampled += 1
        if (run / "adapter_ablation.json").exists():
            r = load(run, "adapter_ablation")
            kl = [e["value"] for e in r["kl"]]
            rho = float(np.corrcoef(ranks(r["norm"]), ranks(kl))[0, 1])
            col = column(doc, "## Adapter ablation", label)
            assert col[0].startswith(f"{fmt(r['pearson'])} [") and col[1].startswith(f"{fmt(rho)} [")
            outlier = f"- Adapter ablation on {label}: Pearson r {fmt(r['pearson'])}, Spearman ρ {fmt(rho)}."
            differs = section(doc, "## What differs")
            assert (outlier in differs) == (abs(rho - r["pearson"]) > 0.3)
            if outlier in differs:  # r without the strongest layer, computed here
                keep = [i for i in range(len(kl)) if i != int(np.argmax(kl))]
                without = np.corrcoef([r["norm"][i] for i in keep], [kl[i] for i in keep])[0, 1]
                assert f"without that layer r is {fmt(float(without))}." in differs
            sampled += 1
    assert sampled >= 3
    assert "L26 (96.3%) 13.7" in section(doc, "## Layer ablation: top layers")  # the study's, from the claims file


def test_missing_experiments_render_not_run(baselines, tmp_path):
    run = next(p for p in sorted(baselines.iterdir()) if (p / "clean.json").exists())
    minimal = tmp_path / "baselines" / run.name
    minimal.mkdir(parents=True)
    for name in ("manifest.json", "clean.json"):
        shutil.copy2(run / name, minimal / name)
    text = render_replication_doc(minimal.parent)
    label = run_label(minimal)
    for key, heading in EXPERIMENT_SECTIONS.items():
        assert column(text, heading, label)[0] == "not run", key
    timings = dict((r[0], r[1]) for r in first_table(section(text, "## Run timings"))[1])
    assert timings["transfer"] == "not run" and timings["clean"].endswith("per family)")
    assert "needs a pair" in section(text, "## Hypotheses H001–H008")


def test_committed_document_matches_the_baselines():
    if not BASELINES.is_dir():
        pytest.skip("atlas_core/data/baselines/ does not exist yet: commit the baseline runs, then run " + REGENERATE)
    assert DOC.is_file(), f"{DOC.relative_to(REPO)} is missing; generate it with: {REGENERATE}"
    want, have = render_replication_doc(BASELINES), DOC.read_text()
    diff = list(difflib.unified_diff(have.splitlines(), want.splitlines(), "committed", "regenerated", lineterm="", n=0))
    assert not diff, (f"{DOC.relative_to(REPO)} is out of date with atlas_core/data/baselines/; regenerate it with: "
                      f"{REGENERATE}\n" + "\n".join(diff[:20]))


def test_cli_writes_the_document_only(baselines, doc, tmp_path, capsys):
    out = tmp_path / "docs" / "REPLICATION.md"
    assert main(["report", "--replication", str(baselines), "--doc", str(out)]) == 0
    assert out.read_text() == doc
    assert capsys.readouterr().out.strip() == str(out)
    assert not (baselines / "replication.html").exists()


@pytest.mark.parametrize("case, needed", [
    ("missing", ("does not exist", "atlas_core/data/baselines")),
    ("empty", ("holds no run folders", "commit runs there")),
    ("no-replication", ("--replication", REGENERATE.split(" --doc")[0])),
])
def test_cli_refuses_bad_input(case, needed, tmp_path, capsys):
    out = tmp_path / "REPLICATION.md"
    target = tmp_path / "baselines"
    if case == "empty":
        target.mkdir()
    args = ["report", "--doc", str(out)] + ([] if case == "no-replication" else ["--replication", str(target)])
    assert main(args) == 2
    err = capsys.readouterr().err
    assert all(n in err for n in needed), err
    assert not out.exists()
