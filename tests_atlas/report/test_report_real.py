"""The atlas of a real model: a small ci-profile run of Qwen2.5-Coder-0.5B-Instruct (two families, a few
experiments) rendered to HTML; sections present or "not run", numbers equal to the JSON, no external
URL, and the finding statistics equal to ``atlas_core.verdicts`` on the same JSON."""

from __future__ import annotations

import re

import pytest

from atlas_core.orchestrate import RunPlan, run_plan
from atlas_core.report import sections as S
from atlas_core.report import write_report
from atlas_core.report.check import external_references, numbers, verify_numbers
from atlas_core.report.data import ReportedRun
from atlas_core.verdicts import model_statistics

MODEL = "qwen2.5-coder-0.5b-instruct"
EXPERIMENTS = ("clean", "steering", "knockout")  # the per-layer curves; < 60 s on a 2-core CPU
FAMILIES = ["factual_recall", "arithmetic"]

pytestmark = [pytest.mark.real_model, pytest.mark.pair]  # a ci-profile run (minutes): the pair tier


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("atlas-real") / "coder05-ci"
    run_plan(
        RunPlan(
            model=MODEL,
            experiments=list(EXPERIMENTS),
            profile="ci",
            families=FAMILIES,
            out=out,
            report=True,
            progress=False,
        )
    )
    return out


def test_real_model_atlas(real_run):
    page = (real_run / "atlas.html").read_text()  # written at the end of the run
    states = dict(re.findall(r'data-section="([^"]+)" data-state="([^"]+)"', page))
    for sid, key, *_ in S.sections():
        assert states[sid] == ("present" if key is None or key in EXPERIMENTS else "not-run"), sid
    run = ReportedRun(real_run)
    assert run.n_layers == 24 and run.name == MODEL
    checked, problems = verify_numbers(page, {None: real_run})
    assert problems == [] and checked >= 100, (checked, problems[:5])
    assert external_references(page) == []
    # every swept layer of steering and knockout is in the page, traced to its JSON entry
    srcs = {n.src for n in numbers(page) if n.src}
    steer, knock = run.typed("steering"), run.typed("knockout")
    assert len(steer.layers) >= 6 and len(knock.layers) >= 6
    for j in range(len(steer.layers)):
        assert {f"steering#/result/direction_norm/{j}", f"steering#/result/layers/{j}"} <= srcs
    for i in range(len(knock.layers)):
        assert {f"knockout#/result/layers/{i}/selectivity", f"knockout#/result/layers/{i}/skill_drop/value"} <= srcs
    assert section_svgs(page, "steering") >= 3 and section_svgs(page, "knockout") >= 2
    stats = model_statistics(run.results, 24)
    shown = {
        n.derived.split(": ", 1)[1]: float(n.value)
        for n in numbers(page)
        if (n.derived or "").startswith("atlas_core.verdicts.model_statistics: ") and "(" not in n.derived
    }
    assert shown["steering.best_boost"] == stats["steering.best_boost"].value
    assert shown["knockout.best_selectivity"] == stats["knockout.best_selectivity"].value
    # rewriting from the stored JSON gives the same numbers
    again = write_report(real_run, out=real_run / "again.html").read_text()
    assert [(n.src, n.value) for n in numbers(again)] == [(n.src, n.value) for n in numbers(page)]


def section_svgs(page: str, sid: str) -> int:
    return re.search(rf'<section id="{sid}".*?</section>', page, flags=re.S).group(0).count("<svg")
