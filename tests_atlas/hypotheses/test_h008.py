"""H008: adapter norm predicts functional impact.

The study: WEAKENED, Pearson r of adapter norm vs ablation effect 0.85 -> 0.54.
Rule (atlas_core.hypotheses.h008): rejected if the large r < low, weakened if r drops by more than
drop_tolerance, supported if >= high at both scales.

One test per claim on H008 in the claims files (the verdict, and the decisive statistic with its
tolerance), per model pair; thresholds and expected verdicts come from the claims file. Claims for
models this session does not run are skipped with the option that would run them.
"""

import pytest

pytestmark = [pytest.mark.h008, pytest.mark.real_model]


def test_h008(claim, atlas, record_property):
    ev = atlas.evaluate(claim)
    record_property("atlas", ev.row())
    passed = ev.passed  # the message names the claim, the measured value with its interval, the threshold and the model
    assert passed, ev.message
