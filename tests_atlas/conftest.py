"""Shared by every Atlas test: the model cache stays where the session found it.

`pytester` gives each test a temporary HOME, and the cache defaults to ``~/.cache/atlas``, so a suite run
in a pytester subprocess would fetch every real model again (gigabytes for the Coder pair). Pinning
``ATLAS_CACHE`` to the cache root resolved at import, before any HOME is swapped, keeps one cache.
"""

from __future__ import annotations

import pytest

from atlas_core.models.offline import cache_root

_CACHE = cache_root()


@pytest.fixture(autouse=True)
def _one_model_cache(monkeypatch):
    monkeypatch.setenv("ATLAS_CACHE", str(_CACHE))

