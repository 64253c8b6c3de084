"""What only the tests share: the helpers that several test modules use (one thread for tiny-model tests, a
forward counter, an ``atlas run`` subprocess and a record's numbers, the experiment context, the body of the claims
tests).

The repository-wide fixtures, the real models (``tiny``, ``coder05``, ``coder15``, ``gemma270``, ``load_cached``)
and the one model cache, are in the root ``conftest.py``; the plugin provides the ``atlas`` session, the run store
and the rest (see there).

`pytester` restores ``sys.modules`` after each test, dropping what the test imported first. ``cattrs`` is
imported lazily by the results converter (cached for the session): dropped, the next ``import cattrs`` is a new
module whose ``BaseValidationError`` no longer catches what the cached converter raises. Imported here, before any
pytester test, it stays one module.
"""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager

import cattrs  # noqa: F401
import pytest
import torch

from atlas_core.hooks import hooked
from atlas_core.models.adapters import decoder, embeddings, final_norm, layers, lm_head


# ---- helpers shared by several test modules ---------------------------------------------------------------
@contextmanager
def one_thread():
    """torch on one thread inside the block. tiny-qwen2's ops are too small to split across threads: on a busy
    2-core machine two threads spin on each other (measured 60x slower), so the tiny tests run on one."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@pytest.fixture(scope="session", name="one_thread")
def _one_thread():
    """:func:`one_thread`, for module fixtures that run experiments on tiny-qwen2."""
    return one_thread


@pytest.fixture
def tiny_on_one_thread(request):
    """Every test not marked ``real_model`` on one thread (``pytestmark = pytest.mark.usefixtures(...)``);
    real-model tests keep torch's default."""
    if request.node.get_closest_marker("real_model"):
        yield
        return
    with one_thread():
        yield


@contextmanager
def forward_counter(model):
    """Counts calls into the model, its decoder, embeddings, every layer, the final norm and the LM head: the
    names, in call order."""
    calls: list[str] = []
    mods = {
        "model": model,
        "decoder": decoder(model),
        "embed": embeddings(model),
        "norm": final_norm(model),
        "head": lm_head(model),
        **{f"L{i}": m for i, m in enumerate(layers(model))},
    }

    def counter(name):
        return lambda module, args, kwargs: calls.append(name)

    with hooked([(m, "pre", counter(n)) for n, m in mods.items()]):
        yield calls


def atlas_cli(out, *extra, args, **kw) -> subprocess.Popen:
    """``python -m atlas_core.cli run *args --out OUT *extra`` in a subprocess on one thread (stdout and stderr
    together, as text); ``kw`` goes to ``Popen`` (``start_new_session=True`` for a driver a test kills)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "atlas_core.cli", "run", *args, "--out", str(out), *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kw,
    )


def record_numbers(obj, path: str = "") -> dict:
    """Every number of a record's result, by its JSON path (the end-to-end tests compare two runs' records)."""
    if isinstance(obj, dict):
        return {k: v for key, val in obj.items() for k, v in record_numbers(val, f"{path}.{key}").items()}
    if isinstance(obj, list):
        return {k: v for i, val in enumerate(obj) for k, v in record_numbers(val, f"{path}[{i}]").items()}
    return {path: obj} if isinstance(obj, (int, float)) and not isinstance(obj, bool) else {}


@pytest.fixture(scope="session", name="atlas_cli")
def _atlas_cli():
    """:func:`atlas_cli`: an ``atlas run`` subprocess (the Ray end-to-end tests)."""
    return atlas_cli


@pytest.fixture(scope="session", name="record_numbers")
def _record_numbers():
    """:func:`record_numbers`: a record's numbers by JSON path."""
    return record_numbers


@pytest.fixture(scope="session")
def smoke_ctx():
    """``smoke_ctx(lm, n_items=4, families=None, seed=0, profile=smoke)``: an experiment context over the first
    ``n_items`` items of the named task families (default all), as the experiment tests build one."""
    from atlas_core.experiments.context import Context
    from atlas_core.profiles import get_profile
    from atlas_core.tasks import load_families

    def make(lm, n_items: int = 4, families=None, seed: int = 0, profile=None) -> Context:
        return Context(lm, load_families(families, n_items=n_items), profile or get_profile("smoke"), seed=seed)

    return make


@pytest.fixture(scope="session", name="forward_counter")
def _forward_counter():
    """:func:`forward_counter` (session-scoped, so that hypothesis tests can take it)."""
    return forward_counter


@pytest.fixture
def check_claim(atlas, record_property):
    """``check_claim(claim)``: evaluate one claim in this session, record its row for the report, and fail with
    the evaluation's message (the claim, the measured value with its interval, the threshold, the model).

    The body of every test under ``hypotheses/`` and ``findings/``. The plugin parametrizes ``claim`` with the
    claims of the test's marker (a hypothesis's verdict and its decisive statistic with its tolerance; a
    finding's statistics); thresholds and expected verdicts come from the claims file, and claims for models
    this session does not run are skipped with the option that would run them."""

    def check(claim) -> None:
        ev = atlas.evaluate(claim)
        record_property("atlas", ev.row())
        passed = ev.passed  # a plain name, so that pytest's assertion report is the message alone
        assert passed, ev.message

    return check
