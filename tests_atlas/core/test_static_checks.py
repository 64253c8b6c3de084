"""The static checks, configured in pyproject.toml: ruff's lint rules and its formatter over the library and the
tests (the root conftest.py among them), the import-linter layering contract over ``atlas_core``, and mypy over
``atlas_core``. Each runs as its own process on this checkout and fails with the tool's own report.

mypy keeps its cache in ``.mypy_cache`` (ignored by git): a fresh clone's first run analyses everything
(about 45 s of CPU), later runs only what changed (a few seconds).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = "from importlinter.cli import lint_imports_command; lint_imports_command()"
LINTED = ["atlas_core", "tests_atlas", "conftest.py"]  # what ruff checks and formats: the library and the tests
CHECKS = {
    "ruff": [sys.executable, "-m", "ruff", "check", "--no-cache", *LINTED],
    "ruff-format": [sys.executable, "-m", "ruff", "format", "--check", "--no-cache", *LINTED],
    "import-linter": [sys.executable, "-c", LINT_IMPORTS, "--no-cache"],
    "mypy": [sys.executable, "-m", "mypy"],
}


def run_check(name: str, root: Path = ROOT) -> subprocess.CompletedProcess:
    """One check as a process in ``root`` (a checkout with pyproject.toml), its package importable from there."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    return subprocess.run(CHECKS[name], cwd=root, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("name", list(CHECKS))
def test_static_check_passes(name):
    if not (ROOT / "pyproject.toml").is_file():
        pytest.skip("the static checks run on a checkout (pyproject.toml), not on an installed package")
    r = run_check(name)
    assert r.returncode == 0, f"{name} failed ({r.returncode}):\n{r.stdout[-6000:]}\n{r.stderr[-3000:]}"


# Each check must be able to fail: the same command on a copy of this checkout with one defect planted.
DEFECTS = {
    "ruff": (
        "atlas_core/metrics.py",
        "\n\ndef _defect(values=[]):  # B006: a mutable default\n    return values\n",
        "B006",
    ),
    "ruff-format": ("atlas_core/metrics.py", "\n\nDEFECT = [1,2 ,3]\n", "--> atlas_core/metrics.py"),
    # the bottom layer imports the top one: data flowing upward
    "import-linter": (
        "atlas_core/hooks.py",
        "\n\nfrom atlas_core import cli  # noqa: E402,F401\n",
        "atlas_core.hooks -> atlas_core.cli",
    ),
    "mypy": (
        "atlas_core/metrics.py",
        '\n\ndef _defect() -> int:\n    return "not an int"\n',
        "Incompatible return value type",
    ),
}


@pytest.mark.parametrize("name", list(CHECKS))
def test_static_check_fails_on_a_planted_defect(name, tmp_path):
    if not (ROOT / "pyproject.toml").is_file():
        pytest.skip("the static checks run on a checkout (pyproject.toml), not on an installed package")
    for part in ("atlas_core", "tests_atlas"):
        shutil.copytree(ROOT / part, tmp_path / part, ignore=shutil.ignore_patterns("__pycache__", "*.json", "*.html"))
    for part in ("pyproject.toml", "conftest.py"):
        shutil.copy(ROOT / part, tmp_path)
    path, defect, named = DEFECTS[name]
    with open(tmp_path / path, "a") as fh:
        fh.write(defect)
    r = run_check(name, tmp_path)
    assert r.returncode != 0 and named in r.stdout + r.stderr, (r.stdout[-3000:], r.stderr[-2000:])


def main() -> int:
    """Every check on this checkout, each with the tool's own report: what ``.ci/run`` runs before the tests (and
    ``python tests_atlas/core/test_static_checks.py`` by hand). The exit status is the number of checks that
    failed."""
    failed = []
    for name in CHECKS:
        r = run_check(name)
        print(f"{name}: {'ok' if r.returncode == 0 else f'FAILED ({r.returncode})'}", flush=True)
        if r.returncode:
            print(r.stdout[-6000:], r.stderr[-3000:], sep="\n")
            failed.append(name)
    return len(failed)


if __name__ == "__main__":
    sys.exit(main())
