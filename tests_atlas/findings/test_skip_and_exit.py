"""Early exit and layer skipping: how much of the model's output survives leaving layers out.

The study: an early exit that skips any layer matches the full model's top token on at most 7.14% of
prompts (1 in 14). Claims: the best argmax match of an exit that skips a layer, and the match of the
exits that skip 1, 2, 4 and 10 layers (the rows of the study's table).

One test per claim in the claims files, per model.
"""

import pytest

pytestmark = [pytest.mark.finding_efficiency, pytest.mark.real_model]


def test_efficiency(claim, check_claim):
    check_claim(claim)
