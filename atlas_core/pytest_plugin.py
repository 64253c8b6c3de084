"""The Atlas pytest plugin: shared model fixtures and the hook-leak guard.

Model fixtures load through the project's own ``load`` (real models are fetched and cached on first
use), once per session. After every test, the guard checks that no intervention hook is left on any
model a fixture handed out.
"""

from __future__ import annotations

import pytest

from atlas_core.hooks import count_hooks

_LOADED: dict[tuple, object] = {}


def load_cached(name: str, device: str | None = "cpu", dtype: str | None = None):
    """One LoadedModel per (name, device, dtype) per session."""
    key = (name, device, dtype)
    if key not in _LOADED:
        from atlas_core.models import load

        _LOADED[key] = load(name, device=device, dtype=dtype, progress=True)
    return _LOADED[key]


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
def _no_hook_leaks():
    """Every test ends with no hook left on any model the session loaded."""
    yield
    for (name, *_), lm in list(_LOADED.items()):
        left = count_hooks(lm.model)
        assert left == 0, f"{left} hook(s) left on {name} after the test: an intervention did not clean up"


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU; none on this machine (runs where one exists)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
