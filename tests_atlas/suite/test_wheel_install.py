"""Atlas used from another project: the wheel installed in a fresh virtual environment outside this checkout.

The wheel is built from a copy of the package sources (``pip wheel --no-deps --no-build-isolation``, so the
checkout gets no ``build/``), installed with ``--no-deps --no-index`` into a venv under ``tmp_path`` that sees
the running environment's dependencies through a ``.pth`` file (torch is not installed twice; nothing is
fetched). A throwaway project there, with its own task family, claims file, test modules and hypothesis H009
(declared in its conftest through the plugin's ``pytest_atlas_hypotheses`` hook; the conftest does not
register the plugin), runs pytest: the plugin arrives through its ``pytest11`` entry point alone. Each check is shown to bite: a
wheel built without the baselines' package-data glob misses them, a child that sees the checkout on its path
imports the checkout's package, the project without the entry point's plugin has no ``claim`` fixture, and a
claim the model cannot meet fails with its message.

To add to the throwaway project (say a user hypothesis), add its file to :data:`PROJECT`.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from atlas_core.data import DATA_DIR
from atlas_core.models.offline import cache_root

REPO = Path(__file__).resolve().parents[2]
PLUGIN = "atlas_core.pytest_plugin"
BASELINES_GLOB = '"data/baselines/*/*.json", '

COLOURS = """\
{"family": "colours", "description": "a colour after its usual object",
 "items": [{"id": "sky", "prompt": "The sky is", "target": " blue"},
           {"id": "grass", "prompt": "The grass is", "target": " green"}],
 "contrast": [{"prompt": "The car is", "target": " fast"}]}
"""
CLAIMS = """\
[meta]
label = "a downstream project's claims on tiny-qwen2"
source = "measured"
profile = "smoke"
models = ["tiny-qwen2"]

[[claim]]
id = "colours-unknown"
model = "tiny-qwen2"
statistic = "clean.accuracy.colours"
kind = "at_most"
threshold = 0.5
description = "a random model does not know its colours"

[thresholds.H009]
max_drop = 0.0

[[claim]]
id = "H009"
statistic = "H009"
models = ["tiny-qwen2", "tiny-qwen2"]
kind = "verdict"
expected_verdict = "supported"
description = "the larger model knows its colours at least as well"
"""
# The project's own hypothesis, declared in its conftest (the plugin registers it through a hook).
CONFTEST = """\
from atlas_core.spec import HypothesisSpec
from atlas_core.stat import REJECTED, SUPPORTED, Verdict
from atlas_core.verdicts import need

STAT = "clean.accuracy.colours"


def rule(small, large, th):
    s, l = need(small, STAT, "small"), need(large, STAT, "large")
    drop = s.value - l.value
    verdict = SUPPORTED if drop <= th["max_drop"] else REJECTED
    return Verdict("H009", verdict, "colours accuracy drop, small - large", drop, None, None,
                   f"supported if the drop <= {th['max_drop']:g}", {"small": s.value, "large": l.value})


def pytest_atlas_hypotheses(config):
    return [HypothesisSpec(id="H009", text="Colour knowledge does not fall with scale", experiments=("clean",),
                           statistics=(STAT,), rule=rule, thresholds={"max_drop": 0.0})]
"""
H009_TEST = """\
import pytest

pytestmark = pytest.mark.h009


def test_h009(claim, atlas):
    ev = atlas.evaluate(claim)
    assert ev.passed, ev.message
"""
TEST_MODULE = """\
import pytest


@pytest.mark.atlas_claims
def test_my_claims(claim, atlas):
    ev = atlas.evaluate(claim)
    assert ev.passed, ev.message
"""
# The throwaway project: path -> content. The entry point registers the plugin; the conftest only declares H009.
PROJECT = {
    "tasks/colours.json": COLOURS,
    "claims/mine.toml": CLAIMS,
    "test_mine.py": TEST_MODULE,
    "conftest.py": CONFTEST,
    "test_h009.py": H009_TEST,
}
PYTEST_ARGS = [
    "-p",
    "no:cacheprovider",
    "-q",
    "-rN",
    "--atlas-model",
    "tiny-qwen2",
    "--atlas-pair",
    "tiny-qwen2",
    "tiny-qwen2",
    "--atlas-profile",
    "smoke",
    "--atlas-tasks",
    "tasks",
    "--atlas-claims",
    "claims/mine.toml",
    "--atlas-runs",
    "runs",
]


def build_wheel(into: Path, pyproject: str | None = None) -> Path:
    """The wheel of a copy of the package sources (``pyproject``: another pyproject.toml text to build with)."""
    src = into / "src"
    shutil.copytree(REPO / "atlas_core", src / "atlas_core", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(REPO / "README.md", src / "README.md")
    (src / "pyproject.toml").write_text(pyproject or (REPO / "pyproject.toml").read_text())
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            "-w",
            str(into / "dist"),
            str(src),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    (wheel,) = (into / "dist").glob("atlas_interp-*.whl")
    return wheel


def missing_from_wheel(wheel: Path) -> list[str]:
    """The checkout's shipped data files (atlas_core/data) that the wheel lacks."""
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = [p for p in DATA_DIR.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    return sorted(rel for rel in (p.relative_to(DATA_DIR.parents[1]).as_posix() for p in shipped) if rel not in names)


def child_env(**extra: str) -> dict[str, str]:
    """The environment for the venv's processes: nothing that points at this checkout, the model cache handed on."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in (
            "PYTHONPATH",
            "PYTHONHOME",
            "PYTEST_ADDOPTS",
            "PYTEST_PLUGINS",
            "ATLAS_TASKS_DIR",
            "PYTEST_DISABLE_PLUGIN_AUTOLOAD",
            "VIRTUAL_ENV",
        )
    }
    env.update(ATLAS_CACHE=str(cache_root()), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", **extra)
    return env


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 300):
    return subprocess.run(cmd, cwd=cwd, env=env or child_env(), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh venv holding the wheel; the running environment's site-packages visible through a .pth file
    (a path line only: the .pth files there, an editable install of atlas_core among them, are not run)."""
    root = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=60)
    (purelib,) = root.glob("lib/python3*/site-packages")
    (purelib / "_parent_env.pth").write_text("\n".join(p for p in site.getsitepackages() if Path(p).is_dir()) + "\n")
    # --ignore-installed: the running environment's own atlas-interp (seen through the .pth) is not this one
    done = run(
        [
            str(root / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-index",
            "--ignore-installed",
            "-q",
            str(wheel),
        ],
        cwd=root,
    )
    assert done.returncode == 0, done.stderr
    return root


@pytest.fixture
def project(tmp_path) -> Path:
    for rel, text in PROJECT.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    return tmp_path


def test_the_wheel_ships_the_data_and_the_entry_point(wheel):
    assert missing_from_wheel(wheel) == []
    names = zipfile.ZipFile(wheel).namelist()
    for part in (
        "tasks/copying.json",
        "claims/coder-pair-ci.toml",
        "golden/qwen2.5-coder-0.5b-instruct.json",
        "baselines/qwen2.5-coder-0.5b-instruct-full/manifest.json",
    ):
        assert f"atlas_core/data/{part}" in names
    (eps,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    assert f"[pytest11]\n{PLUGIN} = {PLUGIN}" in zipfile.ZipFile(wheel).read(eps).decode()


def test_a_wheel_without_the_baselines_glob_misses_them(tmp_path):
    pyproject = (REPO / "pyproject.toml").read_text()
    assert BASELINES_GLOB in pyproject
    missing = missing_from_wheel(build_wheel(tmp_path, pyproject.replace(BASELINES_GLOB, "")))
    assert missing and all(m.startswith("atlas_core/data/baselines/") for m in missing), missing


WHERE = (
    "import atlas_core, atlas_core.data as d, importlib.metadata as md; print(atlas_core.__file__); "
    "print(d.CLAIMS_DIR); print(sorted(e.value for e in md.entry_points(group='pytest11')))"
)


def test_the_venv_imports_the_wheel_not_the_checkout(venv, tmp_path):
    out = run([str(venv / "bin" / "python"), "-c", WHERE], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    package, claims, entry_points = out.stdout.splitlines()
    assert Path(package).is_relative_to(venv) and Path(claims).is_relative_to(venv), out.stdout
    assert (Path(claims) / "coder-pair-ci.toml").is_file() and PLUGIN in entry_points
    leaky = run([str(venv / "bin" / "python"), "-c", WHERE], cwd=tmp_path, env=child_env(PYTHONPATH=str(REPO)))
    assert not Path(leaky.stdout.splitlines()[0]).is_relative_to(venv)  # the check sees a leak


def test_a_project_checks_its_own_claims_through_the_entry_point(venv, project):
    pytest_cmd = [str(venv / "bin" / "python"), "-m", "pytest", *PYTEST_ARGS]
    good = run(pytest_cmd, cwd=project)
    assert (
        good.returncode == 0 and "3 passed" in good.stdout
    )  # test_mine runs both claims, test_h009 the H009 one, good.stdout[-3000:] + good.stderr[-2000:]
    only_h009 = run(pytest_cmd + ["-m", "h009"], cwd=project)  # the hypothesis's marker, registered from its spec
    assert only_h009.returncode == 0 and "1 passed, 2 deselected" in only_h009.stdout, only_h009.stdout[-2000:]
    without = run(pytest_cmd[:3] + ["-p", "no:cacheprovider", "-p", f"no:{PLUGIN}", "--noconftest"], cwd=project)
    assert without.returncode != 0 and "fixture 'claim' not found" in without.stdout, without.stdout[-2000:]
    # the conftest's hook is the plugin's: without the plugin it is an unknown hook
    hookless = run(pytest_cmd[:3] + ["-p", "no:cacheprovider", "-p", f"no:{PLUGIN}"], cwd=project)
    assert hookless.returncode != 0 and "unknown hook 'pytest_atlas_hypotheses'" in hookless.stdout + hookless.stderr

    claims = project / "claims" / "mine.toml"
    claims.write_text(
        claims.read_text().replace('kind = "at_most"', 'kind = "at_least"').replace("max_drop = 0.0", "max_drop = -1.0")
    )  # no model can gain a whole accuracy
    # -p with the module's name beside the entry point: one registration, not an error for a second one
    bad = run(pytest_cmd + ["-p", PLUGIN], cwd=project)
    assert bad.returncode == 1 and "3 failed" in bad.stdout, bad.stdout[-3000:]
    assert "claim H009 (measured) on tiny-qwen2 vs tiny-qwen2: H009 verdict REJECTED, expected SUPPORTED" in bad.stdout
    assert "claim colours-unknown (measured) on tiny-qwen2: clean.accuracy.colours measured" in bad.stdout
    assert "expected >= 0.5 -> FAIL" in bad.stdout


def test_the_console_script_runs_a_user_family(venv, project):
    out = run(
        [
            str(venv / "bin" / "atlas"),
            "run",
            "--model",
            "tiny-qwen2",
            "--profile",
            "smoke",
            "--tasks",
            "tasks",
            "--experiments",
            "clean",
            "--out",
            "run",
            "--no-report",
        ],
        cwd=project,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    record = json.loads((project / "run" / "clean.json").read_text())
    assert "colours" in record["config"]["families"] and "copying" in record["config"]["families"]
    measured = {fa["family"]: fa["n"] for fa in record["result"]["families"]}
    assert measured["colours"] == len(json.loads(COLOURS)["items"]) and len(measured) == 9, measured
