"""Claims are checked against the statistics the experiments declare (``ExperimentSpec.declares``: one
``StatDecl`` per statistic, its name or name template with its facts) and
the task families the session loads before the first experiment: a misspelt statistic or a claim on a family
nothing measures is an error naming the file, the claim and the fix, not an "n/a" after the experiment ran."""

from __future__ import annotations

from pathlib import Path

import pytest

from atlas_core import AtlasError
from atlas_core.claims import load_claims
from atlas_core.claims.files import check_families
from atlas_core.runs import load_run
from atlas_core.spec import declaration, experiments, statistic_family
from atlas_core.baselines import BASELINES_DIR
from atlas_core.tasks import FAMILIES

PLUGIN = ["-p", "atlas_core.pytest_plugin", "-p", "no:cacheprovider"]
REPO = Path(__file__).resolve().parents[2]

CLAIM = """
[meta]
source = "measured"
profile = "smoke"
models = ["tiny-qwen2"]

[[claim]]
id = "mine"
model = "tiny-qwen2"
statistic = "{stat}"
kind = "at_least"
threshold = 0.5
"""
TEST = """
import pytest


@pytest.mark.atlas_claims
def test_claim(claim, atlas):
    assert atlas.evaluate(claim).passed
"""


def test_every_declared_statistic_is_computed_and_every_computed_one_declared():
    """The declarations are kept honest by the committed full-profile runs: each statistic they hold is declared
    (its first matching ``StatDecl`` in its experiment's spec: the one that gives its facts), and each declaration
    is the one of some statistic they hold (none unused, none shadowed by an earlier template; both directions,
    every spec)."""
    used = set()
    for run in sorted(p for p in BASELINES_DIR.iterdir() if p.is_dir()):
        for name in load_run(run).stats:
            statistic_family(name)  # raises on an undeclared statistic
            d = declaration(name)
            assert d is not None and d.matches(name), name
            used.add((name.split(".")[0], d.name))
    declared = {(s.group, d.name) for s in experiments().values() for d in s.declares}
    assert declared and declared == used, declared - used
    assert all(s.declares for s in experiments().values() if s.group)


def test_the_preflight_reads_the_declarations(monkeypatch):
    """The names the preflight accepts are the declarations' names: remove one declaration and its statistic is
    refused, naming the ones left."""
    from dataclasses import replace

    from atlas_core import spec as spec_mod

    assert statistic_family("heads.family_max_kl.copying") == "copying"
    heads = experiments()["head_ablation"]
    cut = replace(heads, declares=tuple(d for d in heads.declares if d.name != "heads.family_max_kl.{family}"))
    monkeypatch.setattr(
        spec_mod, "groups", lambda: {**{s.group: s for s in experiments().values() if s.group}, "heads": cut}
    )
    with pytest.raises(
        AtlasError,
        match=r"unknown statistic 'heads.family_max_kl.copying': the head_ablation "
        r"experiment computes heads.layer_profile, .*heads.max_kl",
    ):
        statistic_family("heads.family_max_kl.copying")


@pytest.mark.parametrize(
    "stat, needle",
    [
        (
            "hub.no_such_stat",
            "unknown statistic 'hub.no_such_stat': the layer_ablation experiment computes "
            "hub.ranking, hub.top_layer_depth",
        ),
        ("mlp.top_layer_kl", "unknown statistic 'mlp.top_layer_kl'"),  # the hub's name under the mlp group
        ("efficiency.exit.skip1.top1", "unknown statistic 'efficiency.exit.skip1.top1'"),
    ],
)
def test_a_statistic_no_experiment_computes_is_refused_when_the_file_is_read(stat, needle, tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text(CLAIM.format(stat=stat))
    with pytest.raises(AtlasError) as err:
        load_claims(path)
    assert str(path) in str(err.value) and "claim 'mine'" in str(err.value) and needle in str(err.value), err.value


def test_a_claim_on_a_family_the_session_does_not_load_is_refused(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text(CLAIM.format(stat="hub.family_kl.colours"))
    cf = load_claims(path)  # the name is well formed: a user family may be called so
    check_families(cf, FAMILIES + ("colours",))
    with pytest.raises(
        AtlasError,
        match=r"claim 'mine' \(hub.family_kl.colours\) names task family colours, "
        r"which this session does not load .*add the family's file",
    ):
        check_families(cf, FAMILIES)


@pytest.mark.parametrize(
    "stat, needle",
    [
        ("hub.no_such_stat", "unknown statistic 'hub.no_such_stat'"),
        ("clean.accuracy.colours", "names task family colours, which this session does not load"),
    ],
)
def test_the_plugin_refuses_such_claims_before_the_first_experiment(stat, needle, pytester, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # this checkout's plugin, whatever the environment installed
    pytester.makefile(".toml", claims=CLAIM.format(stat=stat))
    pytester.makepyfile(test_mine=TEST)
    result = pytester.runpytest_subprocess(
        *PLUGIN,
        "--atlas-model",
        "tiny-qwen2",
        "--atlas-profile",
        "smoke",
        "--atlas-claims",
        "claims.toml",
        "--atlas-runs",
        "runs",
        "--atlas-baselines",
        "none",
    )
    out = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR and needle in out, out[-2000:]
    assert "running on" not in out and not (pytester.path / "runs").exists()  # nothing computed
