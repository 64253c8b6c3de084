"""Code fingerprints and the stale-baseline rule: a stored record made by other experiment code is reused
only when the golden record lists both codes as reproducing the golden slice; and stored-only runs of
registered models need no weights (the skeleton has the loaded model's identity)."""

from __future__ import annotations

import json

import pytest

from atlas_core import AtlasError, codehash, orchestrate
from atlas_core.codehash import UNRECORDED, baseline_stands, closure, fingerprint, syntax
from atlas_core.integrity import seal_doc
from atlas_core.orchestrate import RunPlan, run_plan
from atlas_core.results import RecordStore


def test_the_fingerprint_ignores_comments_and_docstrings_but_not_code():
    a = '"""Doc."""\nX = 1  # one\n\ndef f():\n    """Say."""\n    return X\n'
    b = '"""Other doc."""\nX = 1\n\n\ndef f():\n    return X  # same code\n'
    c = '"""Doc."""\nX = 2\n\ndef f():\n    return X\n'
    assert syntax(a) == syntax(b) != syntax(c)


def test_the_closure_is_the_code_an_experiment_runs():
    names = {str(p.relative_to(codehash.PACKAGE)) for p in closure("layer_ablation")}
    assert {
        "experiments/layer_ablation.py",
        "runner.py",
        "interventions.py",
        "metrics.py",
        "sites.py",
        "models/adapters.py",
    } <= names
    assert not names & {
        "claims/__init__.py",
        "runs.py",
        "verdicts.py",
        "cli.py",
        "pytest_plugin.py",
        "pytest/session.py",
        "report/replication.py",
    }
    assert "experiments/lora_training.py" in {str(p.relative_to(codehash.PACKAGE)) for p in closure("transfer")}
    assert len({fingerprint(e) for e in ("clean", "steering", "transfer")}) == 3


def test_the_rule():
    now = fingerprint("steering")
    assert baseline_stands("steering", now, []) is None  # made by this very code
    assert baseline_stands("steering", "old", [now, "old"]) is None  # both reproduce the golden slice
    assert "recompute it" in baseline_stands("steering", "old", [now])  # the definition changed since
    assert "atlas golden write" in baseline_stands("steering", "old", ["old"])  # this code was never checked
    assert baseline_stands("steering", None, [now, UNRECORDED]) is None
    assert baseline_stands("steering", None, [now]) is not None


def _plan(out, compute=True):
    return RunPlan(
        model="tiny-qwen2",
        experiments=["clean"],
        profile="smoke",
        out=out,
        device="cpu",
        families=["copying", "arithmetic"],
        progress=False,
        report=False,
        compute=compute,
    )


def test_a_record_of_other_code_is_reused_only_when_the_golden_slice_vouches_for_both(tmp_path, monkeypatch):
    out = tmp_path / "run"
    run_plan(_plan(out))
    record = json.loads((out / "clean.json").read_text())
    assert record["provenance"]["code"] == fingerprint("clean")
    run_plan(_plan(out, compute=False))  # same code: reused

    record["provenance"]["code"] = "0123456789abcdef"  # as if written by other code
    (out / "clean.json").write_text(json.dumps(seal_doc(record)))  # a sealed record of that other code
    monkeypatch.setattr(orchestrate, "verified_codes", lambda e: [fingerprint(e)])
    with pytest.raises(
        AtlasError,
        match=r"clean: the stored result is stale \(clean: the record was made by code "
        r"0123456789abcdef.*recompute it",
    ):
        run_plan(_plan(out, compute=False))
    monkeypatch.setattr(orchestrate, "verified_codes", lambda e: [fingerprint(e), "0123456789abcdef"])
    run_plan(_plan(out, compute=False))

    p = _plan(out)  # computing: the stale record is recomputed, now with this code's fingerprint
    monkeypatch.setattr(orchestrate, "verified_codes", lambda e: [fingerprint(e)])
    run_plan(p)
    assert any("clean: running" in m for m in p.log)
    assert RecordStore(out).load("clean").provenance["code"] == fingerprint("clean")


@pytest.mark.real_model
def test_the_skeleton_has_the_loaded_models_identity_and_configs(coder05):
    from atlas_core.spec import experiments
    from atlas_core.experiments.context import Context
    from atlas_core.models.skeleton import skeleton
    from atlas_core.run_records import experiment_config
    from atlas_core.profiles import get_profile
    from atlas_core.results import config_hash
    from atlas_core.tasks import load_families

    sk = skeleton(coder05.info.name, device="cpu")
    assert next(sk.model.parameters()).device.type == "meta"
    assert {**sk.info.to_dict(), "load_seconds": 0} == {**coder05.info.to_dict(), "load_seconds": 0}
    fams, prof = load_families(n_items=12), get_profile("full")
    for e in experiments():
        assert config_hash(experiment_config(e, Context(sk, fams, prof), 0)) == config_hash(
            experiment_config(e, Context(coder05, fams, prof), 0)
        ), e


def test_the_shipped_configs_are_the_fetched_ones():
    from atlas_core.models import OFFLINE_MODELS, cache_dir, is_cached
    from atlas_core.models.skeleton import comparable, shipped_config

    checked = 0
    for name in OFFLINE_MODELS:
        assert shipped_config(name)["num_hidden_layers"] > 0
        if is_cached(name):
            fetched = json.loads((cache_dir(name) / "config.json").read_text())
            assert comparable(shipped_config(name)) == comparable(fetched), name
            checked += 1
    with pytest.raises(AtlasError, match="unknown model 'nope'"):
        shipped_config("nope")
