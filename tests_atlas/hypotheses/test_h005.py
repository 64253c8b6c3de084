"""H005: the cross-model transfer zone is defined by relative depth.

The study: SUPPORTED, the top transfer layers are the final ~10% at both scales.
Rule (atlas_core.hypotheses.h005): the transfer zones (layers recovering >= 95%) occupy final fractions of
depth within tolerance of each other, both non-empty and <= max_fraction (the top 3 layers are the last 3
of any model whose recovery rises with depth, so the rule does not read them).

One test per claim on H005 in the claims files (the verdict, and the decisive statistic with its
tolerance), per model pair; thresholds and expected verdicts come from the claims file. Claims for
models this session does not run are skipped with the option that would run them.
"""

import pytest

pytestmark = [pytest.mark.h005, pytest.mark.real_model]


def test_h005(claim, atlas, record_property):
    ev = atlas.evaluate(claim)
    record_property("atlas", ev.row())
    passed = ev.passed  # the message names the claim, the measured value with its interval, the threshold and the model
    assert passed, ev.message
