"""H005: the cross-model transfer zone is defined by relative depth.

The study: SUPPORTED, the top transfer layers are the final ~10% at both scales.
Rule (atlas_core.hypotheses.h005): the transfer zones (layers recovering >= 95%) occupy final fractions of
depth within tolerance of each other, both non-empty and <= max_fraction (the top 3 layers are the last 3
of any model whose recovery rises with depth, so the rule does not read them).

One test per claim on H005 in the claims files, per model pair (the plugin's ``claim`` parametrization).
"""

import pytest

pytestmark = [pytest.mark.h005, pytest.mark.real_model]


def test_h005(claim, check_claim):
    check_claim(claim)
