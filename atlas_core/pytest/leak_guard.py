"""The hook-leak guard: an autouse fixture that fails a test leaving a hook on a loaded model or a torch global
module hook behind (and removes it, so that the next test starts clean)."""

from __future__ import annotations

import pytest

from atlas_core.hooks import global_hooks, module_hooks, remove_hooks


@pytest.fixture(autouse=True)
def _no_hook_leaks():
    """Every test ends with no hook of any kind left on any model the session loaded (through
    ``atlas_core.models.load``, which every model fixture uses), and no torch global module hook it did not
    start with. What it finds it removes before failing, so the next test starts clean."""
    from atlas_core.models.loader import LOADED_MODELS

    before = set(global_hooks())
    yield
    found = []
    for model, name in list(LOADED_MODELS.items()):
        left = module_hooks(model)
        remove_hooks(left)
        found += [f"{len(left)} hook(s) left on {name}"] if left else []
    stray = [h for h in global_hooks() if h not in before]
    remove_hooks(stray)
    found += [f"{len(stray)} global module hook(s) left"] if stray else []
    assert not found, f"{'; '.join(found)} after the test (removed now): an intervention did not clean up"
