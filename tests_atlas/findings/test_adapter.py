"""Adapter ablation: where the LoRA adapter's effect sits.

Removing the trained adapter from one layer at a time and measuring the KL from the trained model gives a
per-layer profile. Claims: where its top layers are (top-k on absolute layers) and the profile's rank
correlation with the claimed one; the study published no adapter-ablation figure, so these come from
measured runs only.

One test per claim in the claims files, per model.
"""

import pytest

pytestmark = [pytest.mark.finding_adapter, pytest.mark.real_model]


def test_adapter(claim, check_claim):
    check_claim(claim)
