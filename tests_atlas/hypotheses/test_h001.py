"""H001: the universal hub persists at the same relative depth.

The study: REJECTED, the hub migrates from L2 (8% depth) at 0.5B to L26 (93%) at 1.5B.
Rule (atlas_core.hypotheses.h001): |relative depth of the top layer, large - small| <= tolerance.

One test per claim on H001 in the claims files, per model pair (the plugin's ``claim`` parametrization).
"""

import pytest

pytestmark = [pytest.mark.h001, pytest.mark.real_model]


def test_h001(claim, check_claim):
    check_claim(claim)
