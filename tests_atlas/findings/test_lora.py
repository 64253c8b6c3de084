"""LoRA training: which task families the adapter shifts most.

The study: json_schema first (base -> trained KL 6.47), copying next (0.54). Claims: a family's rank
by base -> trained KL (rank claims on ``lora.ranking``) and each family's KL with tolerance.

One test per claim in the claims files, per model.
"""

import pytest

pytestmark = [pytest.mark.finding_lora, pytest.mark.real_model]


def test_lora(claim, check_claim):
    check_claim(claim)
