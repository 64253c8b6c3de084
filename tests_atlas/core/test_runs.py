"""The one run-folder reader (atlas_core.runs): what it reads from a committed baseline, a damaged manifest
rebuilt, extra seeds kept out of the statistics, each bad folder a clear error, one relative depth and one
run-folder name for every user."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from atlas_core import AtlasError, orchestrate, run_records
from atlas_core.baselines import BASELINES_DIR
from atlas_core.cli import main
from atlas_core.experiments.schema import load_result, migrate
from atlas_core.integrity import CorruptFile, seal_doc
from atlas_core.profiles import PROFILES
from atlas_core.report.data import ReportedRun
from atlas_core.results import unstructure
from atlas_core.runs import StoredRun, load_run, run_path
from atlas_core.verdicts import model_statistics, relative_depth

GEMMA = BASELINES_DIR / "gemma-3-270m-full"  # the smallest committed baseline: 18 layers, every experiment


def raw_results(folder: Path) -> dict[str, dict]:
    """Each base-seed result as the JSON files hold it, read without the reader under test."""
    docs = [json.loads(p.read_text()) for p in folder.glob("*.json") if p.name != "manifest.json"]
    return {d["experiment"]: d["result"] for d in docs if d["seed"] == d["config"].get("base_seed", d["seed"])}


def same_stats(a, b) -> bool:
    return a.keys() == b.keys() and all(repr(a[k]) == repr(b[k]) for k in a)  # repr: NaN equals NaN


@pytest.fixture
def gemma(tmp_path) -> Path:
    """A copy of the committed Gemma baseline to damage."""
    return Path(shutil.copytree(GEMMA, tmp_path / GEMMA.name))


def write_doc(path: Path, doc: dict) -> None:
    path.write_text(json.dumps(seal_doc(doc)))


def test_the_reader_gives_what_the_files_hold():
    run = StoredRun(GEMMA)
    manifest = json.loads((GEMMA / "manifest.json").read_text())
    assert (
        (run.name, run.n_layers, run.profile)
        == ("gemma-3-270m", 18, "full")
        == (manifest["model"]["name"], manifest["model"]["n_layers"], manifest["profile"]["name"])
    )
    assert sorted(run.experiments) == sorted(p.stem for p in GEMMA.glob("*.json") if p.name != "manifest.json")
    assert {k: run.records[k].result for k in run.experiments} == raw_results(GEMMA)  # as stored
    assert {k: unstructure(v) for k, v in run.results.items()} == {  # typed, writing back the same numbers
        k: unstructure(load_result(k, v)) for k, v in raw_results(GEMMA).items()
    }
    assert type(run.results["steering"]).__name__ == "SteeringResult"
    assert same_stats(run.stats, model_statistics(raw_results(GEMMA), 18))
    assert run.stats is run.stats  # computed once
    report_run = ReportedRun(GEMMA, "a")  # the report's view reads through the same reader and adds its pointers
    assert isinstance(report_run, StoredRun) and same_stats(report_run.stats, run.stats)
    assert (
        report_run.num("steering", "result", "best_boost", "value").value
        == run.records["steering"].result["best_boost"]["value"]
    )


def test_a_changed_result_changes_the_statistics(gemma):
    """The statistics follow the stored results: a stored steering boost three times as large is read so."""
    before = StoredRun(gemma).stats["steering.best_boost"]
    doc = json.loads((gemma / "steering.json").read_text())
    doc["result"]["best_boost"].update({k: 3 * doc["result"]["best_boost"][k] for k in ("value", "lo", "hi")})
    write_doc(gemma / "steering.json", doc)
    after = StoredRun(gemma).stats["steering.best_boost"]
    assert before.value > 0 and (after.value, after.lo, after.hi) == (3 * before.value, 3 * before.lo, 3 * before.hi)


def test_a_damaged_manifest_is_rebuilt_from_the_records(gemma):
    (gemma / "manifest.json").write_text('{"experiments": ')
    run = StoredRun(gemma)
    assert run.manifest["rebuilt"] and set(run.manifest["experiments"]) == set(run.experiments)
    assert (run.name, run.n_layers, run.profile) == ("gemma-3-270m", 18, "full")
    assert same_stats(run.stats, StoredRun(GEMMA).stats)


def test_extra_seeds_are_kept_apart_from_the_base_seed(gemma):
    doc = json.loads((gemma / "steering.json").read_text())
    other = {**doc, "seed": 1, "config": {**doc["config"], "base_seed": 0}}
    other["result"] = {**doc["result"], "best_boost": {**doc["result"]["best_boost"], "value": 99.0}}
    write_doc(gemma / "steering.seed1.json", other)
    run = StoredRun(gemma)
    assert run.extra_seeds("steering") == ["steering.seed1"] and run.extra_seeds("knockout") == []
    assert "steering.seed1" not in run.experiments and run.typed("steering.seed1").best_boost.value == 99.0
    assert same_stats(run.stats, StoredRun(GEMMA).stats)  # the statistics are the base seed's
    write_doc(gemma / "steering.json", other | {"seed": 0})  # the same change at the base seed does show
    assert StoredRun(gemma).stats["steering.best_boost"].value == 99.0


def test_bad_folders_are_clear_errors(tmp_path, gemma):
    missing = tmp_path / "missing"
    with pytest.raises(
        AtlasError, match=f"run folder {missing} does not exist; make one with `atlas run --out {missing}`"
    ):
        StoredRun(missing)
    (tmp_path / "empty").mkdir()
    with pytest.raises(AtlasError, match="holds no atlas results .* run `atlas run --out"):
        StoredRun(tmp_path / "empty")

    manifest_only = tmp_path / "manifest-only"
    manifest_only.mkdir()
    shutil.copy(GEMMA / "manifest.json", manifest_only)
    assert StoredRun(manifest_only).n_layers == 18  # the report shows its card ...
    with pytest.raises(AtlasError, match="holds no experiment results; run `atlas run --out"):
        load_run(manifest_only)  # ... but there is nothing to compute statistics from

    man = json.loads((gemma / "manifest.json").read_text())
    del man["model"]["n_layers"]
    write_doc(gemma / "manifest.json", man)
    assert StoredRun(gemma).n_layers == 18  # the layer sweep says the depth too
    (gemma / "layer_ablation.json").unlink()
    no_depth = StoredRun(gemma)
    assert no_depth.n_layers is None and no_depth.depth(3) is None
    for read in (lambda: load_run(gemma), lambda: no_depth.stats):
        with pytest.raises(AtlasError, match=r"lacks the model's facts \(n_layers\)"):
            read()

    (gemma / "notes.json").write_text(json.dumps({"written by": "someone else"}))
    with pytest.raises(CorruptFile, match="notes.json is not an Atlas record: .* delete it"):
        StoredRun(gemma)


@given(n=st.integers(1, 200), data=st.data())
def test_relative_depth_runs_from_the_first_layer_to_the_last(n, data):
    layer = data.draw(st.integers(0, n - 1))
    d = relative_depth(layer, n)
    assert 0.0 <= d <= 1.0
    assert relative_depth(0, n) == 0.0 and (n == 1 or relative_depth(n - 1, n) == 1.0)
    assert layer == 0 or d > relative_depth(layer - 1, n)


@pytest.mark.parametrize("model", ["qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct", "gemma-3-270m"])
def test_the_report_and_the_statistics_share_one_depth(model):
    """The depth the report prints beside a layer is the statistic's: both are verdicts.relative_depth."""
    run = ReportedRun(run_path(model, "full", BASELINES_DIR))
    for index, depth in (
        ("hub.top_layer", "hub.top_layer_depth"),
        ("steering.best_layer", "steering.best_layer_depth"),
        ("knockout.best_layer", "knockout.best_layer_depth"),
    ):
        layer = run.stats[index].value
        if layer is None:  # all layers tie (Gemma's residual sweep): no top layer, so no depth either
            assert run.stats[index].tie and run.stats[depth].value is None
            continue
        assert run.depth(layer) == run.stats[depth].value == relative_depth(layer, run.n_layers)
        assert run.depth_num(layer).value == run.depth(layer)
    assert run.depth(None) is None


@given(
    model=st.text(st.characters(codec="ascii", exclude_characters="\x00"), min_size=1, max_size=40),
    profile=st.sampled_from(sorted(PROFILES)),
)
def test_a_run_folder_name_is_one_folder_named_after_model_and_profile(model, profile):
    path = run_path(model, profile, "runs")
    assert path.parent == Path("runs") and "/" not in path.name and path.name.endswith(f"-{profile}")


def test_atlas_run_and_the_plugin_name_a_run_folder_alike(monkeypatch, atlas):
    plans = []

    def record(plan):
        plans.append(plan)
        return type("Store", (), {"root": plan.out})()

    monkeypatch.setattr(orchestrate, "run_plan", record)
    monkeypatch.setattr(run_records, "work_summary", lambda store: "")
    assert main(["run", "--model", "Qwen/Qwen2.5-0.5B", "--profile", "ci", "--experiments", "clean"]) == 0
    assert Path(plans[0].out) == Path("reports/runs/Qwen_Qwen2.5-0.5B-ci") == run_path("Qwen/Qwen2.5-0.5B", "ci")
    assert atlas.run_dir("Qwen/Qwen2.5-0.5B") == atlas.runs_dir / f"Qwen_Qwen2.5-0.5B-{atlas.profile}"


def _leaves(doc, path=()):
    """(path, value) of every number, string and null in a JSON document."""
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _leaves(v, (*path, i))
    else:
        yield path, doc


@pytest.mark.parametrize("root", sorted(p for p in BASELINES_DIR.iterdir() if p.is_dir()), ids=lambda p: p.name)
def test_a_field_path_of_the_typed_result_is_its_json_pointer(root):
    """One representation: walking a typed result by field names, keys and indices (what the report does for each
    number it shows) reaches the value the stored JSON holds at the same pointer (what ``data-src`` names), for
    every leaf of every committed record; a null reads back as NaN."""
    run = ReportedRun(root, "a")
    checked = 0
    for key, rec in run.records.items():
        for path, stored in _leaves(migrate(rec.experiment, rec.result)):
            typed = run.at(key, "result", *path)
            assert stored == typed or (stored is None and (typed is None or math.isnan(typed))), (key, path)
            checked += 1
    assert checked > 1000
