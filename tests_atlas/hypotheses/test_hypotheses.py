"""Every hypothesis the registry declares (``atlas_core/hypotheses/hNNN.py``, or a user package's), as one marked
claims test: ``pytest -m h003`` runs H003's. The plugin parametrizes ``claim`` with the claims of the test's marker,
per model pair: the hypothesis's verdict, and its decisive statistic with its tolerance. The tests are derived from
the specs, so a new hypothesis module brings its test with it."""

from atlas_core.pytest.binding import claims_test
from atlas_core.spec import hypotheses


for _spec in hypotheses().values():
    globals()[f"test_{_spec.marker}"] = claims_test(_spec.marker, f"{_spec.id}: {_spec.text}")
