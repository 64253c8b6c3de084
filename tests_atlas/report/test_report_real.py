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
from atlas_core.report.data import Run
from atlas_core.verdicts import model_statistics

MODEL = "qwen2.5-coder-0.5b-instruct"
EXPERIMENTS = ("clean", "layer_ablation", "steering")
FAMILIES = ["factual_recall", "arithmetic"]

pytestmark = pytest.mark.real_model


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("atlas-real") / "coder05-ci"
    run_plan(RunPlan(model=MODEL, experiments=list(EXPERIMENTS), profile="ci", families=FAMILIES, out=out,
                     report=True, progress=False))
    return out


def test_real_model_atlas(real_run):
    page = (real_run / "atlas.html").read_text()  # written at the end of the run
    states = dict(re.findall(r'data-section="([^"]+)" data-state="([^"]+)"', page))
    for sid, key, *_ in S.SECTIONS:
        assert states[sid] == ("present" if key is None or key in EXPERIMENTS else "not-run"), sid
    run = Run(real_run)
    assert run.n_layers == 24 and run.name == MODEL
    checked, problems = verify_numbers(page, {None: real_run})
    assert problems == [] and checked >= 150, (checked, problems[:5])
    assert external_references(page) == []
    # the layer ablation swept all 24 layers and the page shows the primary sweep's 24 x 2 grid
    la = run.result("layer_ablation")
    srcs = {n.src for n in numbers(page) if n.src}
    for f in FAMILIES:
        for j in range(24):
            p = la["primary"]
            i = [f"{s['target']}/{s['mode']}" for s in la["sweeps"]].index(p)
            assert f"layer_ablation#/result/sweeps/{i}/kl/{f}/{j}" in srcs
    stats = model_statistics(S.base_results(run), 24)
    shown = {n.derived.split(": ", 1)[1]: float(n.value) for n in numbers(page)
             if (n.derived or "").startswith("atlas_core.verdicts.model_statistics: ") and "(" not in n.derived}
    assert shown["hub.top_layer_kl"] == stats["hub.top_layer_kl"].value
    assert shown["steering.best_boost"] == stats["steering.best_boost"].value
    # rewriting from the stored JSON gives the same numbers
    again = write_report(real_run, out=real_run / "again.html").read_text()
    assert [(n.src, n.value) for n in numbers(again)] == [(n.src, n.value) for n in numbers(page)]
