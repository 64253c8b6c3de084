"""The one converter (``atlas_core.results``): what ``unstructure`` writes is plain JSON that ``structure`` reads back
as the same typed value, and the config hashes stored in the committed records are the hashes of their configs."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import cattrs
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from atlas_core.baselines import BASELINES_DIR
from atlas_core.metrics import Estimate
from atlas_core.results import RecordStore, canonical, config_hash, structure, unstructure


@dataclass
class Inner:
    est: Estimate
    counts: dict[str, list[int]]


@dataclass
class Outer:
    name: str
    values: list[float]
    inner: list[Inner]
    maybe: Estimate | None = None
    notes: list[dict] = field(default_factory=list)


def test_unstructure_writes_plain_json():
    value = {
        "a": (1, 2),
        3: np.float32(0.5),
        "arr": np.arange(3),
        "nan": float("nan"),
        "inf": np.float64("inf"),
        "p": Path("/x/y"),
        "b": np.bool_(True),
    }
    out = unstructure(value)
    assert out == {"a": [1, 2], "3": 0.5, "arr": [0, 1, 2], "nan": None, "inf": None, "p": "/x/y", "b": True}
    assert type(out["arr"][0]) is int and type(out["b"]) is bool
    json.dumps(out, allow_nan=False)  # nothing JSON cannot hold


def test_a_typed_value_round_trips_and_null_reads_as_nan():
    value = Outer(
        "x",
        [np.float64(1.5), float("nan")],
        [Inner(Estimate(np.float32(0.25), 0.0, 1.0, 4), {"f": [np.int64(3)]})],
        notes=[{"k": 1}],
    )
    data = json.loads(json.dumps(unstructure(value), allow_nan=False))
    assert data["values"] == [1.5, None] and data["maybe"] is None
    back = structure(data, Outer)
    assert back.values[0] == 1.5 and math.isnan(back.values[1]) and back.inner[0].est.value == 0.25
    assert unstructure(back) == data
    with pytest.raises(cattrs.BaseValidationError) as err:
        structure({**data, "bogus": 1}, Outer)
    assert "bogus" in " ".join(cattrs.transform_error(err.value))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=5) | st.integers(0, 20), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(json_values)
def test_canonical_is_the_json_of_the_plain_form(value):
    """Tuples become lists and keys strings before the keys are sorted, so an int-keyed config hashes as the
    string-keyed JSON it is stored as."""
    plain = json.loads(json.dumps(unstructure(value)))
    assert canonical(value) == json.dumps(plain, sort_keys=True, separators=(",", ":"))
    assert canonical(plain) == canonical(value)


@pytest.mark.parametrize("root", sorted(p for p in BASELINES_DIR.iterdir() if p.is_dir()), ids=lambda p: p.name)
def test_every_committed_record_keeps_its_config_hash_and_round_trips(root):
    for key, rec in RecordStore(root).records().items():
        assert config_hash(rec.config) == rec.config_hash, key
        assert json.loads(json.dumps(rec.to_dict())) == json.loads(
            json.dumps(unstructure(structure(rec.to_dict(), type(rec))))
        )
