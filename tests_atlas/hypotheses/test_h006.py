"""H006: MLP dominance scales with parameters.

The study: REJECTED, max MLP KL 8.12 -> 2.58 (3x weaker with 3x the parameters).
Rule (atlas_core.hypotheses.h006): max MLP KL ratio large/small >= min_ratio supports it,
< reject_below rejects it.

One test per claim on H006 in the claims files, per model pair (the plugin's ``claim`` parametrization).
"""

import pytest

pytestmark = [pytest.mark.h006, pytest.mark.real_model]


def test_h006(claim, check_claim):
    check_claim(claim)
