"""H002: specialist attention heads emerge at scale.

The study: SUPPORTED, max head KL 0.046 -> 1.02 (22x).
Rule (atlas_core.hypotheses.h002): max head KL ratio large/small >= min_ratio; measurable only where the
head ablation swept every layer (the full profile: the ci profile's three layers skip L1).

One test per claim on H002 in the claims files (the verdict, and the decisive statistic with its
tolerance), per model pair; thresholds and expected verdicts come from the claims file. Claims for
models this session does not run are skipped with the option that would run them.
"""

import pytest

pytestmark = [pytest.mark.h002, pytest.mark.real_model]


def test_h002(claim, atlas, record_property):
    ev = atlas.evaluate(claim)
    record_property("atlas", ev.row())
    passed = ev.passed  # the message names the claim, the measured value with its interval, the threshold and the model
    assert passed, ev.message
