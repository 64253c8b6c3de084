"""Committed baselines (atlas_core/data/baselines/<run>/): `atlas baseline` exports a run's records compactly, and
the hypothesis suite, seeded from a baselines folder, checks its claims on those records without
recomputing any experiment (every record's config hash matches this code and these weights).

The mechanism is tested on tiny-qwen2 (smoke profile); the committed full-profile Coder-pair baselines run
through the same path against atlas_core/data/claims/coder-pair-full.toml whenever they are committed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from atlas_core import AtlasError
from atlas_core.baselines import BASELINES_DIR, _portable, baseline_runs, export_baseline, seed_run
from atlas_core.claims import CLAIMS_DIR, write_claims
from atlas_core.cli import main
from atlas_core.integrity import read_sealed_json, seal_doc
from atlas_core.orchestrate import RunPlan, run_plan

REPO = Path(__file__).resolve().parents[2]
FINDINGS = REPO / "tests_atlas" / "findings"
HYPOTHESES = REPO / "tests_atlas" / "hypotheses"
CODER_FULL = CLAIMS_DIR / "coder-pair-full.toml"
PAIR_FULL = [BASELINES_DIR / "qwen2.5-coder-0.5b-instruct-full", BASELINES_DIR / "qwen2.5-coder-1.5b-instruct-full"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """Every experiment of tiny-qwen2 at the smoke profile, stored as the suite's session would store it."""
    out = tmp_path_factory.mktemp("made") / "tiny-qwen2-smoke"
    run_plan(RunPlan(model="tiny-qwen2", experiments="all", profile="smoke", out=out, report=True, progress=False))
    return out


def test_export_writes_every_record_compactly_and_nothing_else(tiny_run, tmp_path):
    dest = Path(main_out(["baseline", str(tiny_run), "--into", str(tmp_path / "baselines")]))
    assert dest == tmp_path / "baselines" / "tiny-qwen2-smoke"
    source = {p.name for p in tiny_run.glob("*.json")}
    assert {p.name for p in dest.iterdir()} == source  # no adapter, no atlas.html, no checkpoints
    assert (tiny_run / "atlas.html").exists() and any(p.is_dir() for p in tiny_run.iterdir())
    for name in source:
        text = (dest / name).read_text()
        exported = read_sealed_json(dest / name, "")  # sealed again once its paths are portable
        assert exported == _portable(read_sealed_json(tiny_run / name, ""), tiny_run)
        assert "\n " not in text  # compact
        assert str(tiny_run) not in text and f'"{Path.home()}/' not in text  # no path of this machine
    lora = json.loads((dest / "lora_training.json").read_text())["result"]
    assert lora["adapter_dir"] == "lora_adapter_seed0" and (tiny_run / lora["adapter_dir"]).is_dir()
    assert sum(p.stat().st_size for p in dest.iterdir()) < sum((tiny_run / n).stat().st_size for n in source)
    assert baseline_runs(tmp_path / "baselines") == [dest]

    (dest / "efficiency.json").unlink()  # re-export restores it; a record the run no longer has goes
    (dest / "old_experiment.json").write_text("{}")
    export_baseline(tiny_run, tmp_path / "baselines")
    assert {p.name for p in dest.iterdir()} == source


def test_export_refuses_a_missing_or_empty_run(tmp_path):
    with pytest.raises(AtlasError, match="does not exist"):
        export_baseline(tmp_path / "nowhere", tmp_path / "b")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AtlasError, match="no manifest or no experiment results"):
        export_baseline(tmp_path / "empty", tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_seeding_copies_only_what_the_run_folder_lacks(tiny_run, tmp_path):
    export_baseline(tiny_run, tmp_path / "baselines")
    run = tmp_path / "runs" / "tiny-qwen2-smoke"
    run.mkdir(parents=True)
    (run / "clean.json").write_text("mine")
    copied = seed_run(run, tmp_path / "baselines")
    assert "clean" not in copied and "layer_ablation" in copied and (run / "clean.json").read_text() == "mine"
    assert not (run / "manifest.json").exists()  # the run writes its own
    assert seed_run(tmp_path / "runs" / "other-smoke", tmp_path / "baselines") == []
    assert seed_run(run, None) == []


def _suite_from_baselines(pytester, paths, args, baselines: Path, runs: Path):
    result = pytester.runpytest_subprocess(
        *map(str, paths),
        *args,
        "--atlas-baselines",
        str(baselines),
        "--atlas-runs",
        str(runs),
        "-p",
        "no:cacheprovider",
        "-s",
        "-rfs",
        timeout=1800,
    )
    return result, result.parseoutcomes()


def _assert_reused(runs: Path, baselines: Path) -> int:
    """Every record in the run store is the committed file byte for byte: nothing was recomputed."""
    n = 0
    for run in runs.iterdir():
        for rec in run.glob("*.json"):
            if rec.name != "manifest.json":
                assert rec.read_bytes() == (baselines / run.name / rec.name).read_bytes(), f"{rec} was recomputed"
                n += 1
    return n


def test_the_suite_passes_on_baselines_without_recomputing(pytester, tiny_run, tmp_path):
    baselines = tmp_path / "baselines"
    export_baseline(tiny_run, baselines)
    claims = write_claims([tiny_run], tmp_path / "tiny-claims.toml")
    runs = tmp_path / "runs"
    result, outcomes = _suite_from_baselines(
        pytester,
        [FINDINGS],
        [
            "--atlas-model",
            "tiny-qwen2",
            "--atlas-profile",
            "smoke",
            "--atlas-claims",
            str(claims),
            "--atlas-no-compute",
        ],
        baselines,
        runs,
    )
    assert outcomes.get("failed", 0) == 0 and outcomes.get("passed", 0) >= 10, result.stdout.str()[-3000:]
    out = result.stdout.str() + result.stderr.str()
    assert "done already" in out and "running on" not in out
    assert _assert_reused(runs, baselines) >= 5


def test_no_compute_fails_fast_naming_a_missing_or_stale_baseline_record(pytester, tiny_run, tmp_path):
    """``--atlas-no-compute``: a baseline that lacks a record, or holds one made by other code or weights,
    fails the tests that need it within seconds, naming the record, what differs and the command that
    makes it; nothing is computed and the run store gets nothing new."""
    baselines = tmp_path / "baselines"
    dest = export_baseline(tiny_run, baselines)
    (dest / "knockout.json").unlink()  # (steering: a random model's boosts admit 0, so it has no claims)
    rec = json.loads((dest / "mlp_ablation.json").read_text())
    rec["config"]["extra"]["modes"], rec["config_hash"] = ["zero"], "0" * 16  # as if from code with another config
    (dest / "mlp_ablation.json").write_text(json.dumps(seal_doc(rec)))
    claims = write_claims([tiny_run], tmp_path / "tiny-claims.toml")
    runs = tmp_path / "runs"
    result, outcomes = _suite_from_baselines(
        pytester,
        [FINDINGS],
        [
            "--atlas-model",
            "tiny-qwen2",
            "--atlas-profile",
            "smoke",
            "--atlas-claims",
            str(claims),
            "--atlas-no-compute",
        ],
        baselines,
        runs,
    )
    out = result.stdout.str() + result.stderr.str()
    assert outcomes.get("failed", 0) >= 10 and outcomes.get("passed", 0) == 0, out[-3000:]
    assert "running on" not in out
    assert "knockout: no stored result" in out
    assert "mlp_ablation: the stored result is stale (its config differs in extra.modes)" in out
    assert "atlas run --model tiny-qwen2 --profile smoke --experiments" in out
    run = runs / "tiny-qwen2-smoke"
    assert not (run / "manifest.json").exists() and not (run / "knockout.json").exists()


@pytest.mark.real_model
@pytest.mark.skipif(
    not (CODER_FULL.exists() and all((p / "manifest.json").exists() for p in PAIR_FULL)),
    reason="the Coder pair's full-profile baselines are not committed yet: finish `atlas run --profile "
    "full` for both models, then `atlas baseline RUN` and `atlas claims write RUN05 RUN15 "
    "--out atlas_core/data/claims/coder-pair-full.toml`",
)
def test_the_hypothesis_suite_passes_on_the_committed_coder_baselines(pytester, tmp_path):
    runs = tmp_path / "runs"
    result, outcomes = _suite_from_baselines(
        pytester,
        [HYPOTHESES, FINDINGS],
        ["--atlas-profile", "full", "--atlas-claims", str(CODER_FULL), "--atlas-no-compute"],
        BASELINES_DIR,
        runs,
    )
    assert outcomes.get("failed", 0) == 0 and outcomes.get("passed", 0) >= 16, result.stdout.str()[-3000:]
    assert "running on" not in result.stdout.str() + result.stderr.str()
    assert _assert_reused(runs, BASELINES_DIR) >= 8


def main_out(argv: list[str]) -> str:
    """Run the CLI and return what it printed (the baseline folder)."""
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(argv) == 0
    return buf.getvalue().strip()


def test_exported_paths_are_portable(tmp_path):
    run = tmp_path / "some-run"
    home = Path.home()
    doc = {
        "provenance": {"model": {"path": f"{home}/.cache/atlas/m", "name": "m"}},
        "result": {"adapter_dir": str(run / "lora_adapter_seed0"), "others": ["/opt/elsewhere", "plain", 1.5]},
    }
    assert _portable(doc, run) == {
        "provenance": {"model": {"path": "~/.cache/atlas/m", "name": "m"}},
        "result": {"adapter_dir": "lora_adapter_seed0", "others": ["/opt/elsewhere", "plain", 1.5]},
    }


def test_seeding_skips_a_baseline_of_another_dtype_or_families(tmp_path):
    """A baseline computed at another dtype or over other families would not be reused, and copied into the
    run folder it would make the folder hold two runs (refused by `atlas run`): it is not copied."""
    from atlas_core.results import RecordStore

    src = tmp_path / "baselines" / "m-ci"
    src.mkdir(parents=True)
    RecordStore(src).write_manifest(
        {"model": {"name": "m", "dtype": "float32"}, "families": {"copying": "0" * 64}, "experiments": {}}
    )
    (src / "clean.json").write_text("{}")
    baselines = tmp_path / "baselines"
    assert seed_run(tmp_path / "a" / "m-ci", baselines, dtype="bfloat16", families=["copying"]) == []
    assert seed_run(tmp_path / "b" / "m-ci", baselines, dtype="float32", families=["copying", "colours"]) == []
    assert seed_run(tmp_path / "c" / "m-ci", baselines, dtype="float32", families=["copying"]) == ["clean"]
    assert seed_run(tmp_path / "d" / "m-ci", baselines) == ["clean"]
