"""H004: skill knockout selectivity is preserved at scale.

The study: REJECTED, best selectivity 11,654x -> 0.24x.
Rule (atlas_core.hypotheses.h004): the small model must be selective (>= min_selectivity) or it is rejected;
then the large one must be selective too and keep >= min_ratio of it (supported), < reject_below rejects.

One test per claim on H004 in the claims files, per model pair (the plugin's ``claim`` parametrization).
"""

import pytest

pytestmark = [pytest.mark.h004, pytest.mark.real_model]


def test_h004(claim, check_claim):
    check_claim(claim)
