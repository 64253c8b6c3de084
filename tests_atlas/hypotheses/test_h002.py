"""H002: specialist attention heads emerge at scale.

The study: SUPPORTED, max head KL 0.046 -> 1.02 (22x).
Rule (atlas_core.hypotheses.h002): max head KL ratio large/small >= min_ratio; measurable only where the
head ablation swept every layer (the full profile: the ci profile's three layers skip L1).

One test per claim on H002 in the claims files, per model pair (the plugin's ``claim`` parametrization).
"""

import pytest

pytestmark = [pytest.mark.h002, pytest.mark.real_model]


def test_h002(claim, check_claim):
    check_claim(claim)
