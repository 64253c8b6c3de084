"""Hooks the Atlas pytest plugin adds: a project declares its own experiments and hypotheses by
implementing them in its root ``conftest.py`` (or in an installed pytest plugin), e.g.::

    def pytest_atlas_hypotheses(config):
        return [H009]

Each returns a list of specs (:class:`atlas_core.spec.ExperimentSpec`,
:class:`atlas_core.spec.HypothesisSpec`); the plugin registers them before tests are collected, so
their markers (``h009``), claims and statistics work as the built-in ones do.
"""

import pluggy

hookspec = pluggy.HookspecMarker("pytest")


@hookspec
def pytest_atlas_experiments(config):
    """Return experiment specs to add to this session."""


@hookspec
def pytest_atlas_hypotheses(config):
    """Return hypothesis specs to add to this session."""
