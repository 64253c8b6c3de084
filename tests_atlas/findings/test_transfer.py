"""Headline finding: the transfer zone.

Patching the LoRA-trained model's residual into the base model: the study's recovery is 99.9%
at L27 and the top layers are the final ~10%. Claims: recovery at the last layer (overall and
per family) and the final fraction of depth the top 3 transfer layers occupy.

One test per claim in the claims files, per model; measured values with their bootstrap intervals
are checked against the claims' tolerances, ranks or thresholds.
"""

import pytest

pytestmark = [pytest.mark.finding_transfer, pytest.mark.real_model]


def test_transfer(claim, atlas, record_property):
    ev = atlas.evaluate(claim)
    record_property("atlas", ev.row())
    passed = ev.passed  # the message names the claim, the measured value with its interval, the threshold and the model
    assert passed, ev.message
