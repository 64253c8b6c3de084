"""H006: MLP dominance scales with parameters.

The study: REJECTED, max MLP KL 8.12 -> 2.58 (3x weaker with 3x the parameters).
Rule (atlas_core.hypotheses.h006): max MLP KL ratio large/small >= min_ratio supports it,
< reject_below rejects it.

One test per claim on H006 in the claims files (the verdict, and the decisive statistic with its
tolerance), per model pair; thresholds and expected verdicts come from the claims file. Claims for
models this session does not run are skipped with the option that would run them.
"""

import pytest

pytestmark = [pytest.mark.h006, pytest.mark.real_model]


def test_h006(claim, atlas, record_property):
    ev = atlas.evaluate(claim)
    record_property("atlas", ev.row())
    passed = ev.passed  # the message names the claim, the measured value with its interval, the threshold and the model
    assert passed, ev.message
