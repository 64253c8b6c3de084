"""Headline finding: the hub layer.

Zero-ablating one layer's output and ranking layers by mean KL over families: the study's L26
(13.70 nats, 93% depth) at 1.5B. Claims: the top layer's rank (rank claims), its KL with
tolerance, and its KL per family.

One test per claim in the claims files, per model; measured values with their bootstrap intervals
are checked against the claims' tolerances, ranks or thresholds.
"""

import pytest

pytestmark = [pytest.mark.finding_hub, pytest.mark.real_model]


def test_hub(claim, check_claim):
    check_claim(claim)
