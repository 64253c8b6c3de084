"""Shared by every Atlas test: the model fixtures of this repository, and one model cache.

The Atlas pytest plugin (installed with atlas-interp; see pyproject's ``addopts`` for this checkout) provides
what any project needs: the ``atlas`` session, ``claim``/``drift`` parametrization, tiers and the hook-leak
guard. The models below are this repository's own test fixtures, each loaded once per session; after them,
the helpers that several test modules share (one thread for tiny-model tests, a forward counter, the body of
the claims tests).

`pytester` gives each test a temporary HOME, and the cache defaults to ``~/.cache/atlas``, so a suite run
in a pytester subprocess would fetch every real model again (gigabytes for the Coder pair). Pinning
``ATLAS_CACHE`` to the cache root resolved at import, before any HOME is swapped, keeps one cache.

`pytester` also restores ``sys.modules`` after each test, dropping what the test imported first. ``cattrs`` is
imported lazily by the results converter (cached for the session): dropped, the next ``import cattrs`` is a new
module whose ``BaseValidationError`` no longer catches what the cached converter raises. Imported here, before any
pytester test, it stays one module.
"""

from __future__ import annotations

from contextlib import contextmanager

import cattrs  # noqa: F401
import pytest
import torch

from atlas_core import AtlasError
from atlas_core.hooks import hooked
from atlas_core.models.adapters import decoder, embeddings, final_norm, layers, lm_head
from atlas_core.models.offline import cache_root

_CACHE = cache_root()
_LOADED: dict[tuple, object] = {}
_LOAD_FAILED: dict[tuple, str] = {}


def load_cached(name: str, device: str | None = "cpu", dtype: str | None = None):
    """One LoadedModel per (name, device, dtype) per session; a load that failed is not retried: every
    later test that needs the model fails at once with the first failure's message."""
    key = (name, device, dtype)
    if key in _LOAD_FAILED:
        raise AtlasError(_LOAD_FAILED[key])
    if key not in _LOADED:
        from atlas_core import models

        try:
            _LOADED[key] = models.load(name, device=device, dtype=dtype, progress=True)
        except Exception as exc:
            _LOAD_FAILED[key] = f"loading {name} failed once this session, not retried: {type(exc).__name__}: {exc}"
            raise
    return _LOADED[key]


@pytest.fixture(scope="session", name="load_cached")
def _load_cached():
    """:func:`load_cached` itself, for the tests of its load-once behaviour."""
    return load_cached


@pytest.fixture(scope="session")
def tiny():
    return load_cached("tiny-qwen2")


@pytest.fixture(scope="session")
def coder05():
    return load_cached("qwen2.5-coder-0.5b-instruct")


@pytest.fixture(scope="session")
def coder15():
    return load_cached("qwen2.5-coder-1.5b-instruct")


@pytest.fixture(scope="session")
def gemma270():
    return load_cached("gemma-3-270m")


@pytest.fixture(autouse=True)
def _one_model_cache(monkeypatch):
    monkeypatch.setenv("ATLAS_CACHE", str(_CACHE))


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
