"""Headline finding: MLP weakening.

MLP-output ablation: the study's max MLP KL is 2.58 (L0) at 1.5B, 19% of the top layer's effect
(8.12 and 42% at 0.5B). Claims: the max MLP KL, the top MLP layer's rank, the MLP share.

One test per claim in the claims files, per model; measured values with their bootstrap intervals
are checked against the claims' tolerances, ranks or thresholds.
"""

import pytest

pytestmark = [pytest.mark.finding_mlp, pytest.mark.real_model]


def test_mlp(claim, check_claim):
    check_claim(claim)
