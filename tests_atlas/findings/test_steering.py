"""Headline finding: steering collapse.

Steering along the factual-recall direction: the study's best boost is 0.003 at 1.5B (0.213 at
0.5B). Claims: the best boost over layers and strengths and the boost at the study's layer.

One test per claim in the claims files, per model; measured values with their bootstrap intervals
are checked against the claims' tolerances, ranks or thresholds.
"""

import pytest

pytestmark = [pytest.mark.finding_steering, pytest.mark.real_model]


def test_steering(claim, check_claim):
    check_claim(claim)
