"""Repository-wide fixtures: this repository's real models, each loaded once per session, and one model cache.

The Atlas pytest plugin (installed with atlas-interp; see pyproject's ``addopts`` for this checkout) provides
what any project needs: the ``atlas`` session, ``claim``/``drift`` parametrization, tiers, the run store
(``--atlas-runs``) and the hook-leak guard. This file, at the root of the checkout (pytest's rootdir, so every
test under it sees it, a pytester subprocess running the suite's own folders included), adds the models that
are this repository's own fixtures; ``tests_atlas/conftest.py`` keeps what only the tests share (one thread for
tiny-model tests, a forward counter, the experiment context, the body of the claims tests).

`pytester` gives each test a temporary HOME, and the cache defaults to ``~/.cache/atlas``, so a suite run
in a pytester subprocess would fetch every real model again (gigabytes for the Coder pair). Pinning
``ATLAS_CACHE`` to the cache root resolved at import, before any HOME is swapped, keeps one cache.
"""

from __future__ import annotations

import pytest

from atlas_core import AtlasError
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
