"""Regression across model versions: every finding statistic of a candidate model against a stored
run of the baseline.

``pytest --atlas-model CANDIDATE --atlas-baseline RUN_DIR`` computes (or reuses) the candidate's run
of the baseline's experiments at the baseline's profile and fails once per drifted statistic,
naming it with both values. Tolerance: layer/head indices must match; values may differ by
``max(2 * combined bootstrap half-width, 1e-3, 5% of the value)`` (atlas_core.claims.compare_stats).
Without --atlas-baseline the test is skipped.
"""

import pytest

pytestmark = pytest.mark.real_model


def test_no_drift(drift, atlas, record_property):
    row = atlas.drift(drift)
    b = row.b
    record_property(
        "atlas",
        {
            "claim": f"regression:{row.statistic}",
            "models": [row.model_a, row.model_b],
            "statistic": row.statistic,
            "value": None if b is None else b.value,
            "lo": None if b is None else b.lo,
            "hi": None if b is None else b.hi,
            "threshold": "absent in one run"
            if row.tolerance is None
            else f"baseline {row.a.text()} ± {row.tolerance:.4g}",
            "verdict": None,
            "expected_verdict": None,
            "series": None,
        },
    )
    assert row.b is not None, f"{row.statistic}: measured in the baseline but not in the candidate's run"
    drifted = row.drifted
    assert not drifted, row.message()
