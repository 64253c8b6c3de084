"""H007: mid-layer redundancy emerges at scale.

The study: PARTIALLY SUPPORTED, skip_mid_5 keeps 10% top-5 overlap at 1.5B (0% at 0.5B).
Rule (atlas_core.hypotheses.h007): the best top-5 overlap among skip configurations must rise by
>= min_gain from the small model to the large one, else rejected; then > threshold at the large scale
supports it, below partially.

One test per claim on H007 in the claims files, per model pair (the plugin's ``claim`` parametrization).
"""

import pytest

pytestmark = [pytest.mark.h007, pytest.mark.real_model]


def test_h007(claim, check_claim):
    check_claim(claim)
