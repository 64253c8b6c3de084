"""H008: adapter norm predicts functional impact.

The study: WEAKENED, Pearson r of adapter norm vs ablation effect 0.85 -> 0.54.
Rule (atlas_core.hypotheses.h008): rejected if the large r < low, weakened if r drops by more than
drop_tolerance, supported if >= high at both scales.

One test per claim on H008 in the claims files, per model pair (the plugin's ``claim`` parametrization).
"""

import pytest

pytestmark = [pytest.mark.h008, pytest.mark.real_model]


def test_h008(claim, check_claim):
    check_claim(claim)
