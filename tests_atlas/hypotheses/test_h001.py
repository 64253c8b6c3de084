"""H001: the universal hub persists at the same relative depth.

The study: REJECTED, the hub migrates from L2 (8% depth) at 0.5B to L26 (93%) at 1.5B.
Rule (atlas_core.hypotheses.h001): |relative depth of the top layer, large - small| <= tolerance.

One test per claim on H001 in the claims files (the verdict, and the decisive statistic with its
tolerance), per model pair; thresholds and expected verdicts come from the claims file. Claims for
models this session does not run are skipped with the option that would run them.
"""

import pytest

pytestmark = [pytest.mark.h001, pytest.mark.real_model]


def test_h001(claim, atlas, record_property):
    ev = atlas.evaluate(claim)
    record_property("atlas", ev.row())
    passed = ev.passed  # the message names the claim, the measured value with its interval, the threshold and the model
    assert passed, ev.message
