"""`atlas run` as a resumable job: finished experiments are skipped by config hash (and still hand their
results to later experiments), an interrupted run keeps what finished, a changed config reruns."""

from __future__ import annotations

import json
from dataclasses import replace
import subprocess
import sys

import pytest

from atlas_core import AtlasError
import atlas_core.orchestrate as orchestrate
from atlas_core.claims import load_run
from atlas_core.orchestrate import RunPlan, run_plan
from atlas_core.results import RecordStore


def plan(out, experiments, seed=0) -> RunPlan:
    return RunPlan(
        model="tiny-qwen2",
        experiments=experiments,
        profile="smoke",
        out=out,
        seed=seed,
        device="cpu",
        families=["copying", "arithmetic"],
        progress=False,
        report=False,
    )


def patch_run(monkeypatch, name, fn):
    """Run ``fn`` in place of experiment ``name``'s ``run`` (specs are frozen: the orchestrator's lookup is patched)."""
    real = orchestrate.spec_of
    monkeypatch.setattr(orchestrate, "spec_of", lambda n: replace(real(n), run=fn) if n == name else real(n))


def snapshot(out) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(out.glob("*.json")) if p.name != "manifest.json"}


def test_rerun_skips_finished_experiments_and_feeds_their_results_forward(tmp_path):
    out = tmp_path / "run"
    first = run_plan(plan(out, ["clean", "layer_ablation"]))
    before = snapshot(out)
    assert set(before) == {"clean.json", "layer_ablation.json"}

    p = plan(out, ["clean", "layer_ablation", "head_ablation"])
    run_plan(p)
    assert [m for m in p.log if "skipped" in m] == [m for m in p.log if "clean" in m or "layer_ablation" in m]
    assert sum("head_ablation: running" in m for m in p.log) == 1
    after = snapshot(out)
    assert {k: after[k] for k in before} == before  # finished results untouched
    # the layer/head gap reads the stored layer ablation (a declared input of that statistic), not a copy
    head = json.loads(after["head_ablation.json"])["result"]
    stored_layer = first.load("layer_ablation").result
    assert "max_layer_kl" not in head
    stats = load_run(out).stats
    top = max(
        next(s for s in stored_layer["sweeps"] if (s["target"], s["mode"]) == ("resid", "zero"))["family_mean_kl"]
    )
    assert stats["heads.layer_head_gap"].value == pytest.approx(top / head["max_head"]["kl"])
    manifest = RecordStore(out).manifest()
    assert set(manifest["experiments"]) == {"clean", "layer_ablation", "head_ablation"}
    assert manifest["updated"] >= manifest["experiments"]["head_ablation"]["finished"]


@pytest.mark.parametrize("earlier", [False, True], ids=["this run", "an earlier run"])
def test_the_orchestrator_hands_a_result_to_the_experiment_that_reuses_it(tmp_path, monkeypatch, earlier):
    """Efficiency declares it reuses the layer ablation: it is handed that result, typed, whether computed in
    this run or stored by an earlier one, and nothing it does not declare (clean ran before it too)."""
    from atlas_core.experiments import efficiency
    from atlas_core.experiments.layer_ablation import LayerAblationResult

    out = tmp_path / "run"
    if earlier:
        run_plan(plan(out, ["clean", "layer_ablation"]))
    seen = []

    def spy(ctx):
        seen.append(dict(ctx.results))
        return efficiency.run(ctx)

    patch_run(monkeypatch, "efficiency", spy)
    p = plan(out, ["clean", "layer_ablation", "efficiency"])
    run_plan(p)
    assert (sum("layer_ablation: done already" in m for m in p.log) == 1) == earlier
    assert len(seen) == 1 and list(seen[0]) == ["layer_ablation"]
    assert isinstance(seen[0]["layer_ablation"], LayerAblationResult)
    stored = RecordStore(out).load("layer_ablation").result
    assert seen[0]["layer_ablation"].n_layers == stored["n_layers"]
    notes = json.loads((out / "efficiency.json").read_text())["result"]["notes"]
    assert "over the middle layers in this run" in notes  # it reused the sweep it was handed


def test_interrupted_run_keeps_finished_results_and_resumes(tmp_path, monkeypatch):
    out = tmp_path / "run"

    def boom(ctx):
        raise KeyboardInterrupt  # as if the user pressed Ctrl-C in the middle of the second experiment

    patch_run(monkeypatch, "mlp_ablation", boom)
    with pytest.raises(KeyboardInterrupt):
        run_plan(plan(out, ["clean", "mlp_ablation"]))
    assert set(snapshot(out)) == {"clean.json"}  # the finished one is kept, nothing partial written
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    kept = snapshot(out)

    monkeypatch.undo()
    p = plan(out, ["clean", "mlp_ablation"])
    run_plan(p)
    assert any("clean: done already" in m for m in p.log) and any("mlp_ablation: running" in m for m in p.log)
    assert snapshot(out)["clean.json"] == kept["clean.json"]


def test_two_runs_into_one_folder_keep_each_others_manifest_entries(tmp_path, monkeypatch):
    """Two `atlas run` processes with different experiments may share a run folder (a long LoRA training
    beside the sweeps): each re-reads the manifest before adding its own entry, so neither drops the other's."""
    out = tmp_path / "run"
    run_plan(plan(out, ["clean"]))
    real = orchestrate.spec_of("mlp_ablation").run

    def with_a_neighbour(ctx):  # while this run's MLP ablation works, another process finishes a layer ablation
        run_plan(plan(out, ["layer_ablation"]))
        return real(ctx)

    patch_run(monkeypatch, "mlp_ablation", with_a_neighbour)
    run_plan(plan(out, ["clean", "mlp_ablation"]))
    manifest = RecordStore(out).manifest()
    assert set(manifest["experiments"]) == {"clean", "layer_ablation", "mlp_ablation"}
    assert set(snapshot(out)) == {"clean.json", "layer_ablation.json", "mlp_ablation.json"}


def test_an_experiment_another_process_is_computing_is_refused_before_any_work(tmp_path):
    """A second `atlas run` asked for an experiment that another process holds fails at once, naming the
    lock and the fix; other experiments in the same folder still run; the lock dies with its process."""
    out = tmp_path / "run"
    run_plan(plan(out, ["clean"]))
    lock = RecordStore(out).lock("mlp_ablation").lock_file
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from filelock import FileLock; l = FileLock(sys.argv[1]); "
            "l.acquire(); print('held', flush=True); sys.stdin.read()",
            lock,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        p = plan(out, ["clean", "layer_ablation", "mlp_ablation"])
        with pytest.raises(
            AtlasError,
            match=r"mlp_ablation is being computed by another atlas run.*"
            r"leave mlp_ablation out of --experiments",
        ) as err:
            run_plan(p)
        assert lock in str(err.value)
        assert not any("running" in m for m in p.log)  # nothing started, not even layer_ablation
        run_plan(plan(out, ["layer_ablation"]))  # a different experiment is free to run beside it
    finally:
        holder.communicate("")
    run_plan(plan(out, ["clean", "layer_ablation", "mlp_ablation"]))  # the OS released the lock with its holder
    assert set(RecordStore(out).manifest()["experiments"]) == {"clean", "layer_ablation", "mlp_ablation"}


def test_changed_config_reruns_the_experiment(tmp_path):
    out = tmp_path / "run"
    run_plan(plan(out, ["clean"]))
    p = plan(out, ["clean"], seed=1)
    run_plan(p)
    assert any("clean: running" in m for m in p.log) and not any("skipped" in m for m in p.log)


def test_stored_only_runs_nothing_and_names_what_is_missing_or_stale(tmp_path):
    out = tmp_path / "run"

    def stored_only(experiments, seed=0) -> RunPlan:
        p = plan(out, experiments, seed=seed)
        p.compute = False
        return p

    with pytest.raises(
        AtlasError,
        match=r"(?s)clean: no stored result.*atlas run --model tiny-qwen2 --profile smoke "
        r"--experiments clean",
    ):
        run_plan(stored_only(["clean"]))
    assert not out.exists()  # checked before any work: no folder, no manifest

    run_plan(plan(out, ["clean"]))
    before = snapshot(out), (out / "manifest.json").read_text()
    with pytest.raises(AtlasError) as exc:
        run_plan(stored_only(["clean", "layer_ablation"], seed=1))
    msg = str(exc.value)
    assert "clean: the stored result is stale (its config differs in base_seed, seed)" in msg
    assert "layer_ablation: no stored result" in msg and "--experiments clean,layer_ablation" in msg
    assert (snapshot(out), (out / "manifest.json").read_text()) == before  # nothing written

    p = stored_only(["clean"])
    run_plan(p)
    assert p.log == ["[atlas] clean: done already (config %s), skipped" % RecordStore(out).load("clean").config_hash]
    assert snapshot(out) == before[0]


@pytest.mark.parametrize(
    "change, held, this",
    [
        (["--model", "tiny-llama"], "model tiny-qwen2", "model tiny-llama"),
        (["--profile", "ci"], "profile smoke", "profile ci"),
        (["--dtype", "bfloat16"], "dtype float32", "dtype bfloat16"),
        (["--families", "copying"], "families arithmetic,copying", "families copying"),
    ],
)
def test_a_run_folder_refuses_another_model_profile_dtype_or_families_before_loading(
    change, held, this, tmp_path, monkeypatch, capsys
):
    from atlas_core.cli import main

    out = tmp_path / "run"
    run_plan(plan(out, ["clean"]))
    before = snapshot(out)
    manifest = (out / "manifest.json").read_text()

    def refuse(*a, **k):
        raise AssertionError("the model was loaded before the folder's owner was checked")

    monkeypatch.setattr(orchestrate, "load", refuse)
    args = {"--model": "tiny-qwen2", "--profile": "smoke", "--families": "copying,arithmetic", "--device": "cpu"}
    args.update(dict(zip(change[::2], change[1::2])))
    assert (
        main(
            [
                "run",
                "--experiments",
                "clean,layer_ablation",
                "--out",
                str(out),
                "--no-report",
                *[x for kv in args.items() for x in kv],
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith(f"atlas: error: run folder {out} holds another run") and err.count("\n") == 1
    assert held in err and this in err and "another --out" in err
    assert snapshot(out) == before and (out / "manifest.json").read_text() == manifest


def test_a_run_folder_refuses_other_weights_under_the_same_name_before_any_experiment(tmp_path, monkeypatch):
    out = tmp_path / "run"
    run_plan(plan(out, ["clean"]))
    before = snapshot(out)
    real = orchestrate.load

    def other_weights(*a, **k):
        lm = real(*a, **k)
        lm.info = replace(lm.info, weights_sha256="0" * 64)
        return lm

    monkeypatch.setattr(orchestrate, "load", other_weights)
    patch_run(monkeypatch, "layer_ablation", lambda ctx: pytest.fail("an experiment ran"))
    with pytest.raises(AtlasError, match=r"weights_sha256 [0-9a-f]{64}\) than this one \(weights_sha256 0{64}\)"):
        run_plan(plan(out, ["clean", "layer_ablation"]))
    assert snapshot(out) == before
