"""Every headline finding the registry declares (an experiment spec with ``finding=``), as one marked claims test:
``pytest -m finding_hub`` runs the hub layer's. The plugin parametrizes ``claim`` with the claims on the finding's
statistics, per model; measured values with their bootstrap intervals are checked against the claims' tolerances,
ranks or thresholds. The tests are derived from the specs, so a new experiment with a finding brings its test."""

import pytest

from atlas_core.spec import experiments


def _claims_test(marker: str, doc: str):
    def test(claim, check_claim):
        check_claim(claim)

    test.__doc__ = doc
    return pytest.mark.real_model(getattr(pytest.mark, marker)(test))


for _spec in experiments().values():
    if _spec.marker:
        globals()[f"test_{_spec.group}"] = _claims_test(_spec.marker, f"{_spec.title}: {_spec.finding}")
