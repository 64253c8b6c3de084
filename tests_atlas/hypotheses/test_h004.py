"""H004: skill knockout selectivity is preserved at scale.

The study: REJECTED, best selectivity 11,654x -> 0.24x.
Rule (atlas_core.hypotheses.h004): the small model must be selective (>= min_selectivity) or it is rejected;
then the large one must be selective too and keep >= min_ratio of it (supported), < reject_below rejects.

One test per claim on H004 in the claims files (the verdict, and the decisive statistic with its
tolerance), per model pair; thresholds and expected verdicts come from the claims file. Claims for
models this session does not run are skipped with the option that would run them.
"""

import pytest

pytestmark = [pytest.mark.h004, pytest.mark.real_model]


def test_h004(claim, atlas, record_property):
    ev = atlas.evaluate(claim)
    record_property("atlas", ev.row())
    passed = ev.passed  # the message names the claim, the measured value with its interval, the threshold and the model
    assert passed, ev.message
