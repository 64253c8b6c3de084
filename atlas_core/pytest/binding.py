"""Claims-driven parametrization and tier selection: ``pytest_generate_tests`` binds each claims test's
``claim`` argument to the claims of its group marker (and ``drift`` to the baseline's statistics), and
``pytest_collection_modifyitems`` keeps the tier's tests, deselects the claims this session cannot bind (another
profile's, another model's: the terminal summary says how many and the option that runs them), records the selection
for the session and skips GPU tests where there is no GPU."""

from __future__ import annotations

from collections import Counter

import pytest

from atlas_core.pytest.drift import parametrize_drift
from atlas_core.pytest.options import GROUPS, in_tier
from atlas_core.pytest.session import SESSION, ResolvedClaim


def pytest_generate_tests(metafunc):
    session = metafunc.config.stash[SESSION]
    if "claim" in metafunc.fixturenames:
        known = metafunc.config.stash[GROUPS]
        groups = [m.name for m in metafunc.definition.iter_markers() if m.name in known]
        if len(groups) != 1:
            raise pytest.UsageError(
                f"{metafunc.definition.nodeid}: a claims test carries exactly one of the "
                f"markers {', '.join(known)} (found {groups or 'none'})"
            )
        metafunc.parametrize("claim", session.params_for(groups[0]))
    if "drift" in metafunc.fixturenames:
        parametrize_drift(metafunc, session.baseline, session.model, metafunc.config.stash[GROUPS])


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    import torch

    if not config.option.markexpr:  # an explicit -m expression selects by itself
        tier = config.stash[SESSION].tier
        dropped = [item for item in items if not in_tier(item, tier)]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
            items[:] = [item for item in items if in_tier(item, tier)]
    unbound = {item: reason for item in items if (reason := _unbound(item))}
    if unbound:
        config.hook.pytest_deselected(items=list(unbound))
        items[:] = [item for item in items if item not in unbound]
        config.stash[SESSION].unbound = Counter(unbound.values())
    config.stash[SESSION].items = items  # the selected items (the mark/keyword plugins deselect before us)
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU; none on this machine (runs where one exists)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


def _unbound(item) -> str | None:
    """How to run a claim this session cannot bind (``pass --atlas-profile ci to run them``), or None. A report
    of what was checked has no row for it: pytest's own deselection, counted in the summary line."""
    rc = getattr(getattr(item, "callspec", None), "params", {}).get("claim")
    if not isinstance(rc, ResolvedClaim) or not rc.skip:
        return None
    return rc.skip.rpartition("; ")[2]


def claims_test(marker: str, doc: str):
    """A claims test for group ``marker``: ``claim`` is parametrized with the group's claims
    (:func:`pytest_generate_tests`) and each is checked by the ``check_claim`` fixture. A module makes one per
    declared hypothesis or finding, so ``pytest -m <marker>`` selects it."""

    def test(claim, check_claim):
        check_claim(claim)

    test.__doc__ = doc
    return pytest.mark.real_model(getattr(pytest.mark, marker)(test))
