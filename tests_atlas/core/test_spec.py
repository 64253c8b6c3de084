"""The specs: every table derives from them, the registry refuses what would make a table ambiguous,
and stored results load back as the types the experiments produce.

Each check comes with the perturbation that makes it fail: a duplicate name, a bad id, an experiment
ordered before what it requires, a stored result with a field its type lacks.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from dataclasses import fields, is_dataclass, replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atlas_core import AtlasError
from atlas_core.baselines import BASELINES_DIR
from atlas_core.claims import parse_claim
from atlas_core.experiments.schema import ADDED, REMOVED, SCHEMA, load_result, migrate
from atlas_core.results import unstructure
from atlas_core.spec import (
    HypothesisSpec,
    Knob,
    default_thresholds,
    experiment,
    experiments,
    finding_markers,
    groups,
    hypotheses,
    hypothesis_markers,
    register,
    statistic_experiments,
    unregister,
)
from atlas_core.stat import REJECTED, SUPPORTED, Verdict
from atlas_core.verdicts import decide, need


@pytest.fixture
def registered():
    """Register specs for one test and remove them after it."""
    keys: list[str] = []

    def add(*specs):
        register(specs, where="test")
        keys.extend(getattr(s, "name", None) or s.id for s in specs)

    yield add
    unregister(keys)


def _h010_rule(small, large, th):
    s, l = need(small, "hub.top_layer_kl", "small"), need(large, "hub.top_layer_kl", "large")
    ok = min(s.value, l.value) >= th["min_kl"]
    return Verdict(
        "H010",
        SUPPORTED if ok else REJECTED,
        "strongest layer KL, the weaker model's",
        min(s.value, l.value),
        None,
        None,
        f"supported if both >= {th['min_kl']:g}",
        {"small": s.value, "large": l.value},
    )


H010 = HypothesisSpec(
    id="H010",
    text="Some layer carries the output at both scales",
    experiments=("layer_ablation",),
    statistics=("hub.top_layer_kl",),
    rule=_h010_rule,
    thresholds={"min_kl": 1.0},
)


# ---- the tables are the specs' -----------------------------------------------------------------------
def test_every_experiment_module_declares_one_spec_and_the_run_order_follows_requires():
    specs = experiments()
    assert list(specs)[0] == "clean" and len(specs) == 10
    order = list(specs)
    for s in specs.values():
        assert s.module == f"atlas_core.experiments.{s.name}"
        for dep in s.requires + s.reuses:
            assert order.index(dep) < order.index(s.name), (s.name, dep)
    assert set(groups()) == {
        "clean",
        "hub",
        "mlp",
        "heads",
        "steering",
        "knockout",
        "lora",
        "transfer",
        "adapter",
        "efficiency",
    }


def test_markers_thresholds_and_statistic_sources_come_from_the_specs():
    assert set(hypothesis_markers()) == {f"h00{i}" for i in range(1, 9)}
    assert set(finding_markers()) == {
        "finding_hub",
        "finding_heads",
        "finding_steering",
        "finding_knockout",
        "finding_transfer",
        "finding_mlp",
        "finding_lora",
        "finding_efficiency",
        "finding_adapter",
    }
    assert default_thresholds()["H003"]["min_boost"] == 0.01
    assert statistic_experiments("mlp.share_of_top_layer") == ("mlp_ablation", "layer_ablation")
    assert statistic_experiments("heads.layer_head_gap") == ("head_ablation", "layer_ablation")
    assert statistic_experiments("hub.top_layer") == ("layer_ablation",)
    assert statistic_experiments("H005") == ("transfer",)
    with pytest.raises(AtlasError, match="unknown statistic 'nope.x'"):
        statistic_experiments("nope.x")


# ---- the registry refuses ambiguity --------------------------------------------------------------------
def test_a_second_declaration_of_a_name_is_refused_naming_both_places(registered):
    twin = replace(hypotheses()["H001"], text="another H001")
    with pytest.raises(
        AtlasError, match=r"hypothesis H001 is declared twice: in atlas_core\.hypotheses\.h001 and in test"
    ):
        registered(twin)
    clone = replace(experiment("steering"))
    with pytest.raises(AtlasError, match="experiment steering is declared twice"):
        registered(clone)


def test_a_hypothesis_id_must_be_h_and_digits():
    with pytest.raises(AtlasError, match=r"'H9' must be H followed by three or more digits"):
        replace(H010, id="H9")
    assert replace(H010, id="H0010").marker == "h0010"


def test_an_experiment_ordered_before_what_it_requires_is_refused(registered):
    late = replace(experiment("knockout"), name="knock2", order=5, requires=("steering",), group=None)
    with pytest.raises(AtlasError, match=r"knock2 \(order 5\) needs steering \(order 40\) to run first"):
        registered(late)
    unknown = replace(experiment("knockout"), name="knock3", order=500, requires=("stearing",), group=None)
    with pytest.raises(AtlasError, match="names 'stearing', which is not a known experiment"):
        registered(unknown)


def test_an_experiment_on_a_worker_that_requires_an_artifact_is_refused(registered):
    """A Ray worker is sent the results an experiment reads, never an artifact (the trained adapter's folder): an
    ``on_worker`` experiment that requires one is refused at declaration; one that only reuses results is kept."""
    adapted = replace(experiment("adapter_ablation"), name="adapter2", order=500, on_worker=True, group=None)
    with pytest.raises(AtlasError, match=r"adapter2 runs on a Ray worker.*lora_training.*declare on_worker=False"):
        registered(adapted)
    reading = replace(experiment("knockout"), name="knock5", order=500, on_worker=True, reuses=("clean",), group=None)
    registered(reading)
    assert experiment("knock5").on_worker


def test_a_hypothesis_reading_an_unknown_experiment_is_refused(registered):
    registered(replace(H010, id="H011", experiments=("layer_ablaton",)))
    with pytest.raises(AtlasError, match="H011 reads unknown experiment"):
        hypotheses()


def test_knobs_give_their_profile_value_or_the_default():
    k = Knob("window", default=4, per_profile={"full": 8})
    spec = replace(experiment("efficiency"), knobs=(k,))
    assert (spec.knob("window", "full"), spec.knob("window", "ci"), spec.knob("window", "golden")) == (8, 4, 4)
    with pytest.raises(AtlasError, match="declares no knob 'nope'"):
        spec.knob("nope", "ci")


# ---- H010: a hypothesis added by one declaration ------------------------------------------------------
def test_h010_registered_is_a_marker_a_claim_group_and_a_rule(registered):
    registered(H010)
    assert hypothesis_markers()["h010"] == "H010 Some layer carries the output at both scales"
    assert default_thresholds()["H010"] == {"min_kl": 1.0}
    claim = parse_claim(
        {"id": "H010", "statistic": "H010", "kind": "verdict", "expected_verdict": "supported"},
        {"models": ["a", "b"], "source": "measured"},
    )
    assert (claim.hypothesis, claim.group, claim.experiments) == ("H010", "h010", ("layer_ablation",))
    from atlas_core.stat import Stat

    strong, weak = {"hub.top_layer_kl": Stat(9.0)}, {"hub.top_layer_kl": Stat(0.2)}
    assert decide("H010", strong, strong, {"min_kl": 1.0}).verdict == SUPPORTED
    assert decide("H010", strong, weak, {"min_kl": 1.0}).verdict == REJECTED  # the perturbation
    with pytest.raises(AtlasError, match=r"\[thresholds.H010\] lacks min_kl"):
        decide("H010", strong, strong, {})
    with pytest.raises(AtlasError, match="statistic hub.top_layer_kl of the large model is missing"):
        decide("H010", strong, {}, {"min_kl": 1.0})


# ---- typed results ----------------------------------------------------------------------------------
def _records():
    return sorted(BASELINES_DIR.glob("*/*.json"))


@pytest.mark.parametrize(
    "path", [p for p in _records() if p.name != "manifest.json"], ids=lambda p: f"{p.parent.name}/{p.stem}"
)
def test_every_committed_record_loads_as_its_type_and_writes_back_the_same(path):
    doc = json.loads(path.read_text())
    typed = load_result(doc["experiment"], doc["result"])
    assert type(typed) is experiment(doc["experiment"]).result
    assert unstructure(typed) == _floats(migrate(doc["experiment"], doc["result"]))


def _floats(obj):
    """JSON ints in float fields come back as floats; compare numbers as numbers."""
    if isinstance(obj, dict):
        return {k: _floats(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_floats(v) for v in obj]
    return obj


def test_a_field_the_type_lacks_is_an_error_naming_it_and_the_fix():
    doc = json.loads(next(p for p in _records() if p.name == "steering.json").read_text())
    with pytest.raises(
        AtlasError,
        match=r"steering result does not match SteeringResult.*extra fields found \(bogus\)"
        r".*rerun the experiment",
    ):
        load_result("steering", {**doc["result"], "bogus": 1})
    with pytest.raises(AtlasError, match="best_layer"):
        load_result("steering", {k: v for k, v in doc["result"].items() if k != "best_layer"})


# Gemma-3-270M's head ablation as its baseline held it until 2026-12-07, written under schema 1: the record that
# the migrations read (the committed baselines are of the current schema now)
SCHEMA_1 = Path(__file__).resolve().parents[2] / "fixtures" / "schema" / "head_ablation-schema1.json"


def test_a_field_an_earlier_schema_had_is_dropped_on_reading():
    assert SCHEMA == 4 and REMOVED[2] == {"head_ablation": ("max_layer_kl",)}
    doc = json.loads(SCHEMA_1.read_text())
    assert doc["schema"] == 1 and "max_layer_kl" in doc["result"]
    assert not hasattr(load_result("head_ablation", doc["result"]), "max_layer_kl")
    # the record otherwise reads whole, as the current baseline's of the same model and profile does
    now = json.loads((BASELINES_DIR / "gemma-3-270m-full" / "head_ablation.json").read_text())
    assert "max_layer_kl" not in now["result"]
    assert load_result("head_ablation", doc["result"]).layers == load_result("head_ablation", now["result"]).layers


def test_a_field_a_later_schema_added_reads_as_its_default_from_older_records():
    """Schema 3 added the strongest head's KL interval (``HeadAblationResult.max_kl``): a record of schema 1
    lacks it and reads None; a record that has it (every committed baseline now) reads it back."""
    assert ADDED[3] == {"head_ablation": ("max_kl",)}
    doc = json.loads(SCHEMA_1.read_text())
    assert "max_kl" not in doc["result"]
    assert load_result("head_ablation", doc["result"]).max_kl is None
    new = {**doc["result"], "max_kl": {"value": 0.9, "lo": 0.7, "hi": 1.1, "n": 12}}
    assert load_result("head_ablation", new).max_kl.hi == 1.1
    for path in (p for p in _records() if p.name == "head_ablation.json"):
        got = load_result("head_ablation", json.loads(path.read_text())["result"]).max_kl
        assert got is not None and got.lo <= got.value <= got.hi, path


def test_schema_4_screen_reads_none_from_exhaustive_records():
    """Schema 4 added which heads a screened head ablation verified (``HeadAblationResult.screen``): an
    exhaustive record lacks it and reads None (every head measured)."""
    assert ADDED[4] == {"head_ablation": ("screen",)}
    doc = json.loads(next(p for p in _records() if p.name == "head_ablation.json").read_text())
    assert load_result("head_ablation", doc["result"]).screen is None


_finite = st.floats(allow_nan=False, allow_infinity=False, width=32)


def _strategy(cls):
    """Instances of a result dataclass with finite floats and short lists."""
    st.register_type_strategy(float, _finite)
    return st.from_type(cls)


@pytest.mark.parametrize("name", [n for n in experiments()])
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_results_round_trip_through_their_json_form(name, data):
    cls = experiment(name).result
    value = data.draw(_strategy(cls))
    back = load_result(name, json.loads(json.dumps(unstructure(value))))
    assert unstructure(back) == unstructure(value)
    assert is_dataclass(back) and [f.name for f in fields(back)] == [f.name for f in fields(cls)]


def test_undefined_numbers_are_stored_as_null_and_read_as_nan():
    doc = json.loads(next(p for p in _records() if p.name == "knockout.json").read_text())
    r = dict(doc["result"], best_selectivity=None)
    assert math.isnan(load_result("knockout", r).best_selectivity)
    assert unstructure(load_result("knockout", r))["best_selectivity"] is None


# ---- H010 from a project's conftest, end to end through the plugin --------------------------------
H010_CONFTEST = """
from atlas_core.spec import HypothesisSpec
from atlas_core.stat import REJECTED, SUPPORTED, Verdict
from atlas_core.verdicts import need


def rule(small, large, th):
    s, l = need(small, "hub.top_layer_kl", "small"), need(large, "hub.top_layer_kl", "large")
    ok = min(s.value, l.value) >= th["min_kl"]
    return Verdict("H010", SUPPORTED if ok else REJECTED, "strongest layer KL, the weaker model's",
                   min(s.value, l.value), None, None, f"supported if both >= {th['min_kl']:g}", {})


def pytest_atlas_hypotheses(config):
    return [HypothesisSpec(id="H010", text="Some layer carries the output at both scales",
                           experiments=("layer_ablation",), statistics=("hub.top_layer_kl",), rule=rule,
                           thresholds={"min_kl": 1.0})]
"""
H010_TEST = """
import pytest

pytestmark = pytest.mark.h010


def test_h010(claim, atlas):
    ev = atlas.evaluate(claim)
    assert ev.passed, ev.message
"""
H010_CLAIMS = """
[meta]
models = ["tiny-qwen2", "tiny-qwen2"]
profile = "smoke"
source = "measured"

[thresholds.H010]
min_kl = {min_kl}

[[claim]]
id = "H010"
statistic = "H010"
kind = "verdict"
expected_verdict = "supported"
"""


@pytest.mark.parametrize("min_kl,outcome", [(0.0, "passed"), (1e9, "failed")])
def test_h010_declared_in_a_conftest_runs_as_a_marked_claims_test(pytester, min_kl, outcome):
    """A hypothesis a project declares through ``pytest_atlas_hypotheses`` gets its marker, its claims and
    its verdict; a threshold no layer can meet turns the same claim into a failure naming it."""
    pytester.makeconftest(H010_CONFTEST)
    pytester.makepyfile(test_h010=H010_TEST)
    claims = pytester.path / "h010.toml"
    claims.write_text(H010_CLAIMS.format(min_kl=min_kl))
    result = pytester.runpytest_subprocess(
        "-p",
        "atlas_core.pytest_plugin",
        "-m",
        "h010",
        "--atlas-pair",
        "tiny-qwen2",
        "tiny-qwen2",
        "--atlas-profile",
        "smoke",
        "--atlas-claims",
        str(claims),
        "--atlas-baselines",
        "none",
        "--atlas-runs",
        str(pytester.path / "runs"),
        "-p",
        "no:cacheprovider",
        "-q",
        "-rN",
        timeout=300,
    )
    assert result.parseoutcomes().get(outcome) == 1, result.stdout.str()[-2000:]
    if outcome == "failed":
        result.stdout.fnmatch_lines(
            ["*claim H010 (measured) on tiny-qwen2 vs tiny-qwen2: H010 verdict REJECTED, expected SUPPORTED*-> FAIL"]
        )


def test_a_profile_field_the_profile_lacks_is_refused(registered):
    bad = replace(experiment("knockout"), name="knock4", order=500, profile_fields=("steer_layerz",), group=None)
    with pytest.raises(AtlasError, match=r"knock4 reads profile field\(s\) steer_layerz, which Profile lacks.*Knob"):
        registered(bad)


def test_an_experiments_knobs_enter_its_config_hash(registered, tiny):
    from atlas_core.experiments.context import Context
    from atlas_core.run_records import experiment_config
    from atlas_core.profiles import get_profile
    from atlas_core.tasks import load_families

    k = Knob("window", default=4, per_profile={"full": 8})
    registered(replace(experiment("knockout"), name="knock5", order=500, group=None, knobs=(k,)))
    ctx = Context(tiny, load_families(["copying"], n_items=1), get_profile("smoke"))
    assert experiment_config("knock5", ctx, 0)["extra"]["knobs"] == {"window": 4}
    assert "knobs" not in experiment_config("knockout", ctx, 0)["extra"]  # built-ins' hashes unchanged


# ---- installed packages: the entry-point groups ---------------------------------------------------------
def test_installed_packages_declare_specs_through_entry_points(tmp_path, monkeypatch):
    """A distribution naming a module (or a spec object) under ``atlas.hypotheses`` adds its hypothesis;
    one whose entry point does not load is an error naming it and the fix."""
    from importlib.metadata import EntryPoint

    from atlas_core import spec as spec_module

    (tmp_path / "their_pkg.py").write_text(
        "from atlas_core.spec import HypothesisSpec\n"
        "from atlas_core.hypotheses.h001 import rule\n"
        "SPEC = HypothesisSpec(id='H042', text='from a package', experiments=('layer_ablation',),\n"
        "                      statistics=('hub.top_layer_depth',), rule=rule, thresholds={'tolerance': 0.1})\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    found = [EntryPoint("h042", "their_pkg", "atlas.hypotheses")]
    monkeypatch.setattr(spec_module.metadata, "entry_points", lambda group: [e for e in found if e.group == group])
    reg = spec_module._Registry("hypothesis", "atlas_core.hypotheses")
    assert reg.all()["H042"].text == "from a package" and "H001" in reg.all()
    found.append(EntryPoint("broken", "their_pkg_missing", "atlas.hypotheses"))  # the perturbation
    with pytest.raises(
        AtlasError,
        match=r"entry point broken = their_pkg_missing \(atlas.hypotheses\) failed to "
        r"load.*fix or uninstall the package",
    ):
        spec_module._Registry("hypothesis", "atlas_core.hypotheses").all()
