"""A user project under pytest-xdist from an empty run store: the workers need the same experiments, one
computes each and the others wait for it and read its record (``RunPlan.wait``). The pass count equals the
serial run's, and each experiment is computed once: counted by the orchestrator's "running on" lines, which
the project's conftest appends to a file from every worker (records would not show a second computation,
which overwrites the first)."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest

from atlas_core.tasks import FAMILIES, tasks_dir

REPO = Path(__file__).resolve().parents[2]
PLUGIN = ["-p", "atlas_core.pytest_plugin", "-p", "no:cacheprovider"]
CLAIMS = """\
[meta]
source = "measured"
profile = "smoke"
models = ["tiny-qwen2"]
""" + "".join(
    f"""
[[claim]]
id = "{stat}"
model = "tiny-qwen2"
statistic = "{stat}"
kind = "at_least"
threshold = 1e-6
"""
    for stat in ("hub.top_layer_kl", "mlp.max_kl", "hub.family_kl.copying", "mlp.family_kl.copying")
)
CONFTEST = """\
import os
import atlas_core.orchestrate as orchestrate

_say = orchestrate._say


def _counted(plan, msg):  # every worker appends its computations to one file (O_APPEND: whole lines)
    if ": running on " in msg:
        with open(os.environ["ATLAS_COMPUTATIONS"], "a") as fh:
            fh.write(msg.split(":")[0].split()[-1] + "\\n")
    _say(plan, msg)


orchestrate._say = _counted
"""
TESTS = """\
import pytest


@pytest.mark.atlas_claims
def test_claim(claim, atlas):
    ev = atlas.evaluate(claim)
    assert ev.passed, ev.message


@pytest.mark.parametrize("i", range(4))
def test_unrelated(i):
    pass
"""


def _small_tasks(folder: Path) -> Path:
    """The built-in families cut to one item and one contrast prompt each (``$ATLAS_TASKS_DIR``): the
    computations under test are the same, on fewer prompts."""
    folder.mkdir()
    for name in FAMILIES:
        doc = json.loads((tasks_dir() / f"{name}.json").read_text())
        doc["items"], doc["contrast"] = doc["items"][:1], doc["contrast"][:1]
        (folder / f"{name}.json").write_text(json.dumps(doc))
    return folder


def _run(pytester, monkeypatch, name: str, *extra: str):
    log = pytester.path / f"{name}.log"
    monkeypatch.setenv("ATLAS_COMPUTATIONS", str(log))
    # the workers import this checkout's package, not whichever one the environment installed
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    result = pytester.runpytest_subprocess(
        *PLUGIN,
        "-q",
        "--atlas-model",
        "tiny-qwen2",
        "--atlas-profile",
        "smoke",
        "--atlas-claims",
        "claims.toml",
        "--atlas-runs",
        f"runs-{name}",
        "--atlas-baselines",
        "none",
        *extra,
        timeout=600,
    )
    counts = Counter(log.read_text().split()) if log.exists() else Counter()
    return result.parseoutcomes(), counts, result


@pytest.mark.slow  # two pytest runs of a project from an empty store: about two minutes on 2 cores
@pytest.mark.parametrize("workers", [2, 4])
def test_a_user_project_under_xdist_computes_each_experiment_once(pytester, monkeypatch, workers):
    pytest.importorskip("xdist")
    monkeypatch.setenv("ATLAS_TASKS_DIR", str(_small_tasks(pytester.path / "tasks")))
    pytester.makefile(".toml", claims=CLAIMS)
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_mine=TESTS)
    serial, serial_counts, _ = _run(pytester, monkeypatch, "serial")
    assert serial.get("passed", 0) >= 4 and set(serial_counts.values()) == {1}, (serial, serial_counts)
    parallel, counts, result = _run(pytester, monkeypatch, "xdist", "-n", str(workers))
    out = result.stdout.str()
    assert "bringing up nodes" in out, out[-2000:]  # xdist ran it
    assert parallel == serial, (parallel, serial, out[-3000:])
    assert counts == serial_counts, (counts, serial_counts)  # each experiment computed once, by one worker
