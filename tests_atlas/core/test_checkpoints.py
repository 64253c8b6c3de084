"""Checkpoints inside an experiment: a sweep interrupted part way and run again inside the same checkpoint
folder gives the same metrics as one uninterrupted sweep and recomputes only the variants that had not
finished; a checkpoint of another sweep is never used; ``atlas run`` resumes an interrupted experiment
from its saved sweeps, and an interrupted LoRA training from its saved state (same loss curve as an
uninterrupted run), and removes them once the experiment's record is written."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from atlas_core import checkpoints
from atlas_core.checkpoints import Checkpoints
from atlas_core.experiments import lora_fit
from atlas_core.integrity import torch_load_sealed
from atlas_core.interventions import Ablate, Variant
from atlas_core.orchestrate import RunPlan, run_plan
from atlas_core.results import RecordStore, atomic_write, atomic_write_text
from atlas_core.runner import Runner
from atlas_core.sites import Site, dims

PROMPTS = ["The capital of Italy is ", "1 + 2 =", "def f(x):", "copy: a b c ->", "[1, [2, 3"]


class Interrupt(KeyboardInterrupt):
    pass


def head_variants(d, mode="zero"):
    return [
        Variant(f"head/{mode}/L{layer}H{head}", (Ablate(Site("head", layer, head), mode),))
        for layer in range(d.n_layers)
        for head in range(d.n_heads)
    ]


def interrupt_after(monkeypatch, runner: Runner, chunks: int) -> list[int]:
    """Make ``runner`` raise after ``chunks`` forward chunks; returns a list that counts rows forwarded."""
    rows: list[int] = []
    real = runner.forward_chunk

    def forward(plans, chunk, *args, **kwargs):
        if len(rows) >= chunks:
            raise Interrupt
        rows.append(sum(len(idx) for _, idx, *_ in chunk))
        return real(plans, chunk, *args, **kwargs)

    monkeypatch.setattr(runner, "forward_chunk", forward)
    return rows


def assert_same_stats(a, b):
    np.testing.assert_allclose(a.kl, b.kl, atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(a.topk_overlap, b.topk_overlap, atol=1e-12)
    np.testing.assert_array_equal(a.argmax_match, b.argmax_match)
    np.testing.assert_array_equal(a.argmax, b.argmax)
    np.testing.assert_allclose(a.target_prob, b.target_prob, atol=1e-6, rtol=1e-4)


def saving(runner: Runner, folder: Path):
    """Lend ``runner`` checkpoints in ``folder`` that save at every chance (`atlas run` lends each experiment
    its own folder the same way)."""
    return runner.sweeping.lent(checkpoints=Checkpoints(folder, interval=0))


@settings(max_examples=6, deadline=None)
@given(chunks=st.integers(0, 12), memory_mb=st.sampled_from([0, 1]), mode=st.sampled_from(["zero", "mean"]))
def test_an_interrupted_sweep_resumes_to_the_uninterrupted_result(tiny, tmp_path_factory, chunks, memory_mb, mode):
    folder = tmp_path_factory.mktemp("ck")
    variants = head_variants(dims(tiny.model), mode)
    targets = [7, 11, 13, 17, 19]
    reference = Runner(tiny.model, tiny.tokenizer, PROMPTS, memory_mb=memory_mb).sweep(variants, targets)

    first = Runner(tiny.model, tiny.tokenizer, PROMPTS, memory_mb=memory_mb)
    mp = pytest.MonkeyPatch()
    forwarded = interrupt_after(mp, first, chunks)
    try:
        with saving(first, folder):
            first.sweep(variants, targets)
        interrupted = False
    except Interrupt:
        interrupted = True
    finally:
        mp.undo()

    second = Runner(tiny.model, tiny.tokenizer, PROMPTS, memory_mb=memory_mb)
    mp = pytest.MonkeyPatch()
    redone = interrupt_after(mp, second, 10**9)
    try:
        with saving(second, folder):
            resumed = second.sweep(variants, targets)
    finally:
        mp.undo()
    assert_same_stats(resumed, reference)
    total = len(variants) * len(PROMPTS)
    if interrupted:  # the rerun did at most what was left plus the rows of the variants it had started
        assert sum(redone) <= total - sum(forwarded) + len(variants) * len(PROMPTS) // 2 + len(PROMPTS) * 2
        assert sum(redone) + sum(forwarded) >= total
    else:
        assert redone == []  # a finished sweep is read back, not recomputed


def test_a_checkpoint_of_another_sweep_is_not_used(tiny, tmp_path):
    d = dims(tiny.model)
    runner = Runner(tiny.model, tiny.tokenizer, PROMPTS)
    with saving(runner, tmp_path):
        runner.sweep(head_variants(d, "zero"), [1] * len(PROMPTS))
    other = head_variants(d, "mean")  # same count, other variants, same slot position
    expected = Runner(tiny.model, tiny.tokenizer, PROMPTS).sweep(other, [1] * len(PROMPTS))
    with saving(runner, tmp_path):
        got = runner.sweep(other, [1] * len(PROMPTS))
    assert_same_stats(got, expected)
    with saving(runner, tmp_path):  # other targets: not the same sweep either
        got = runner.sweep(other, [2] * len(PROMPTS))
    assert_same_stats(got, Runner(tiny.model, tiny.tokenizer, PROMPTS).sweep(other, [2] * len(PROMPTS)))


def test_a_corrupt_checkpoint_is_recomputed(tiny, tmp_path):
    variants = head_variants(dims(tiny.model))
    runner = Runner(tiny.model, tiny.tokenizer, PROMPTS)
    expected = runner.sweep(variants)
    with saving(runner, tmp_path):
        runner.sweep(variants)
    (file,) = tmp_path.glob("sweep-*.safetensors")
    file.write_bytes(file.read_bytes()[:100])
    with saving(runner, tmp_path):
        got = runner.sweep(variants)
    np.testing.assert_allclose(got.kl, expected.kl, atol=1e-6)


def test_a_runner_lent_no_checkpoints_writes_nothing(tiny, tmp_path):
    runner = Runner(tiny.model, tiny.tokenizer, PROMPTS)
    with saving(runner, tmp_path):
        assert runner.sweeping.checkpoints is not None
    assert runner.sweeping.checkpoints is None  # taken back on leaving the block
    runner.sweep(head_variants(dims(tiny.model)))
    assert list(tmp_path.iterdir()) == []


def test_atlas_run_resumes_an_interrupted_experiment_from_its_saved_sweeps(tmp_path, monkeypatch):
    out = tmp_path / "run"

    def plan():
        return RunPlan(
            model="tiny-qwen2",
            experiments=["clean", "layer_ablation"],
            profile="smoke",
            out=out,
            device="cpu",
            families=["copying", "arithmetic"],
            progress=False,
            report=False,
        )

    real_sweep = Runner.sweep
    calls = {"n": 0}

    def sweep_then_stop(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # two sweeps of the layer ablation finished, Ctrl-C in the third
            raise Interrupt
        return real_sweep(self, *args, **kwargs)

    monkeypatch.setattr(Runner, "sweep", sweep_then_stop)
    with pytest.raises(Interrupt):
        run_plan(plan())
    store = RecordStore(out)
    assert store.load("layer_ablation") is None  # no partial record
    partial = list((out / ".partial").iterdir())
    assert len(partial) == 1 and partial[0].name.startswith("layer_ablation-")
    assert len(list(partial[0].glob("sweep-*.safetensors"))) == 2
    assert float((partial[0] / "elapsed.txt").read_text()) > 0
    monkeypatch.undo()

    forwarded = []
    real_forward = Runner.forward_chunk

    def counting(self, plans, chunk, *args, **kwargs):
        forwarded.append(sum(len(idx) for _, idx, *_ in chunk))
        return real_forward(self, plans, chunk, *args, **kwargs)

    monkeypatch.setattr(Runner, "forward_chunk", counting)
    p = plan()
    run_plan(p)
    resumed_rows = sum(forwarded)
    assert any("resuming from the sweeps and training state saved" in m for m in p.log)
    assert not (out / ".partial").exists()  # removed once the record is written
    resumed = store.load("layer_ablation")
    assert resumed.provenance["resumed_after_seconds"] > 0
    assert resumed.provenance["torch_threads"] == torch.get_num_threads()  # what the wall time ran on

    forwarded.clear()
    fresh = tmp_path / "fresh"
    run_plan(
        RunPlan(
            model="tiny-qwen2",
            experiments=["clean", "layer_ablation"],
            profile="smoke",
            out=fresh,
            device="cpu",
            families=["copying", "arithmetic"],
            progress=False,
            report=False,
        )
    )
    assert resumed_rows < sum(forwarded)  # the two saved sweeps were read back, not recomputed
    full = RecordStore(fresh).load("layer_ablation")
    a, b = resumed.result, full.result
    assert json.dumps(a["primary"]) == json.dumps(b["primary"])
    for sa, sb in zip(a["sweeps"], b["sweeps"]):
        np.testing.assert_allclose(sa["family_mean_kl"], sb["family_mean_kl"], atol=1e-5, rtol=1e-5)


def test_a_changed_config_drops_the_stale_checkpoints(tmp_path):
    store = RecordStore(tmp_path)
    stale = store.partial_dir("layer_ablation", "0123456789abcdef")
    stale.mkdir(parents=True)
    (stale / "sweep-001.safetensors").write_bytes(b"x")
    other = store.partial_dir("layer_ablation_extra", "fedcba9876543210")  # another key sharing the prefix
    other.mkdir(parents=True)
    keep = store.partial_dir("layer_ablation", "aaaaaaaaaaaaaaaa")
    store.clear_partial("layer_ablation", keep=keep)
    assert not stale.exists() and other.exists()


def test_atlas_run_resumes_lora_training_where_it_stopped(tmp_path, monkeypatch):

    def plan(out):
        return RunPlan(
            model="tiny-qwen2",
            experiments=["lora_training"],
            profile="smoke",
            out=out,
            device="cpu",
            families=["copying", "arithmetic"],
            progress=False,
            report=False,
        )

    out = tmp_path / "run"
    real = lora_fit.target_loss_of
    calls = {"n": 0}

    def stop_after_seven_steps(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 7:
            raise Interrupt
        return real(*args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(checkpoints, "INTERVAL", 0.0)  # save after every step
        m.setattr(lora_fit, "target_loss_of", stop_after_seven_steps)
        with pytest.raises(Interrupt):
            run_plan(plan(out))
    (state,) = (out / ".partial").glob("lora_training-*/lora_train_seed0.pt")
    assert torch_load_sealed(state)["step"] == 7

    steps = {"n": 0}

    def counted(*args, **kwargs):
        steps["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(lora_fit, "target_loss_of", counted)
    p = plan(out)
    run_plan(p)
    assert any("resuming" in msg for msg in p.log) and not (out / ".partial").exists()
    resumed = RecordStore(out).load("lora_training").result
    trained_after_resume = steps["n"]

    steps["n"] = 0
    run_plan(plan(tmp_path / "fresh"))
    fresh = RecordStore(tmp_path / "fresh").load("lora_training").result
    assert trained_after_resume == steps["n"] - 7  # the seven saved steps were not trained again
    assert resumed["loss_curve"] == fresh["loss_curve"] and resumed["steps"] == fresh["steps"]
    assert resumed["final_loss"] == fresh["final_loss"]


def test_atomic_write_replaces_whole_files_only(tmp_path):
    target = tmp_path / "record.json"
    atomic_write_text(target, "old")

    def half_then_crash(tmp):
        Path(tmp).write_text("half")
        raise Interrupt

    with pytest.raises(Interrupt):
        atomic_write(target, half_then_crash)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["record.json"]
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask  # the usual mode, not mkstemp's 0600
