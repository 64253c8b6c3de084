"""Every headline finding the registry declares (an experiment spec with ``finding=``), as one marked claims test:
``pytest -m finding_hub`` runs the hub layer's. The plugin parametrizes ``claim`` with the claims on the finding's
statistics, per model; measured values with their bootstrap intervals are checked against the claims' tolerances,
ranks or thresholds. The tests are derived from the specs, so a new experiment with a finding brings its test."""

from atlas_core.pytest.binding import claims_test
from atlas_core.spec import experiments


for _spec in experiments().values():
    if _spec.marker:
        globals()[f"test_{_spec.group}"] = claims_test(_spec.marker, f"{_spec.title}: {_spec.finding}")
