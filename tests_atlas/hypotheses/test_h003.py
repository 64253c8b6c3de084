"""H003: steering leverage scales with capacity.

The study: REJECTED, best steering boost 0.213 -> 0.003 (70x weaker).
Rule (atlas_core.hypotheses.h003): boost ratio large / max(small, min_boost) >= min_ratio supports it,
< reject_below rejects it, in between weakens it; a small boost below min_boost is no leverage to scale
from (it counts as min_boost: the ratio is finite); no leverage at either scale rejects it.

One test per claim on H003 in the claims files, per model pair (the plugin's ``claim`` parametrization).
"""

import pytest

pytestmark = [pytest.mark.h003, pytest.mark.real_model]


def test_h003(claim, check_claim):
    check_claim(claim)
