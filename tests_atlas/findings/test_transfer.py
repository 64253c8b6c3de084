"""Headline finding: the transfer zone.

Patching the LoRA-trained model's residual into the base model: the study's recovery is 99.9%
at L27 and the top layers are the final ~10%. Claims: the final fraction of depth the transfer zone
(layers recovering >= 95%) occupies. Recovery at the last layer (1 by construction) and the top-3
fraction (the last three layers whenever recovery rises with depth) are refused as claims.

One test per claim in the claims files, per model; measured values with their bootstrap intervals
are checked against the claims' tolerances, ranks or thresholds.
"""

import pytest

pytestmark = [pytest.mark.finding_transfer, pytest.mark.real_model]


def test_transfer(claim, check_claim):
    check_claim(claim)
