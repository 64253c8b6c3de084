"""Headline finding: knockout selectivity.

Negative steering with the skill direction: the study's best selectivity is 0.24x at L21 of
1.5B (11,654x at 0.5B). Claims: the best selectivity and the skill / non-skill drops there.

One test per claim in the claims files, per model; measured values with their bootstrap intervals
are checked against the claims' tolerances, ranks or thresholds.
"""

import pytest

pytestmark = [pytest.mark.finding_knockout, pytest.mark.real_model]


def test_knockout(claim, check_claim):
    check_claim(claim)
