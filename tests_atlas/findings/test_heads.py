"""Headline finding: specialist heads.

Ablating one attention head at a time: the study's strongest head is arithmetic L0 H3 (KL 1.02)
at 1.5B. Claims: the max head KL, its depth, and the strongest head per family.

One test per claim in the claims files, per model; measured values with their bootstrap intervals
are checked against the claims' tolerances, ranks or thresholds.
"""

import pytest

pytestmark = [pytest.mark.finding_heads, pytest.mark.real_model]


def test_heads(claim, check_claim):
    check_claim(claim)
