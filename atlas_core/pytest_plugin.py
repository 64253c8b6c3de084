"""The Atlas pytest plugin, as pytest registers it: the ``pytest11`` entry point ``atlas_core.pytest_plugin``
and ``-p atlas_core.pytest_plugin`` name this module, one registration, never two.

The code lives in the package :mod:`atlas_core.pytest` (its docstring lists the options and the tiers), one
module per job. This module is the one plugin object: it imports every hook implementation and fixture of
those modules, which are never registered themselves, so each hook runs once; and the session's classes and
the tiers, for code that names them.
"""

import pytest

# before the package's modules are imported: pytest rewrites their asserts as it rewrites this module's
# (the leak guard's failure shows what it found)
pytest.register_assert_rewrite("atlas_core.pytest")

from atlas_core.pytest.binding import pytest_collection_modifyitems, pytest_generate_tests  # noqa: E402
from atlas_core.pytest.drift import DriftCheck  # noqa: E402
from atlas_core.pytest.leak_guard import _no_hook_leaks  # noqa: E402
from atlas_core.pytest.options import DEFAULT_PAIR, DEFAULT_PROFILE, TIERS, Tier, pytest_addoption  # noqa: E402
from atlas_core.pytest.registration import pytest_addhooks, pytest_unconfigure  # noqa: E402
from atlas_core.pytest.session import (  # noqa: E402
    SESSION,
    AtlasSession,
    ResolvedClaim,
    atlas,
    pytest_configure,
    pytest_terminal_summary,
)

# the atlas columns and plots in pytest-html reports (all optional hooks: harmless without pytest-html)
pytest_plugins = ["atlas_core.report.pytest_html_hooks"]

__all__ = [
    # hooks
    "pytest_addhooks",
    "pytest_addoption",
    "pytest_configure",
    "pytest_unconfigure",
    "pytest_generate_tests",
    "pytest_collection_modifyitems",
    "pytest_terminal_summary",
    # fixtures
    "atlas",
    "_no_hook_leaks",
    # the session (in ``config.stash[SESSION]``, the ``atlas`` fixture's value) and the tiers; the helpers are
    # the package's
    "AtlasSession",
    "ResolvedClaim",
    "DriftCheck",
    "SESSION",
    "Tier",
    "TIERS",
    "DEFAULT_PAIR",
    "DEFAULT_PROFILE",
]
