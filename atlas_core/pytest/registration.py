"""The project's own experiments and hypotheses: the plugin adds the hooks of
:mod:`atlas_core.pytest.hookspecs`, registers the specs they return at configure (before collection) and
removes them again at unconfigure."""

from __future__ import annotations

import pytest

REGISTERED = pytest.StashKey[list]()  # what the project's hooks registered (removed at unconfigure)


def pytest_addhooks(pluginmanager):
    from atlas_core.pytest import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


def register_project_specs(config) -> list[str]:
    """Register what the project's ``pytest_atlas_experiments``/``pytest_atlas_hypotheses`` return; the
    keys registered (removed again at unconfigure)."""
    from atlas_core import AtlasError
    from atlas_core.spec import register

    keys = []
    for hook, attr in ((config.hook.pytest_atlas_experiments, "name"), (config.hook.pytest_atlas_hypotheses, "id")):
        for specs in hook(config=config):
            try:
                register(specs or (), where=hook.name)
            except AtlasError as exc:
                raise pytest.UsageError(f"{hook.name}: {exc}") from None
            keys += [getattr(s, attr) for s in specs or ()]
    return keys


def pytest_unconfigure(config):
    from atlas_core.spec import unregister

    unregister(config.stash.get(REGISTERED, ()))
