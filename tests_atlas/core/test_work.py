"""Useful-work accounting (atlas_core.work): the FLOP formula against torch's own FLOP counter on a real
forward, the meter against a hand count of a prefix-reusing sweep, the provenance ``atlas run`` writes,
and the cached matmul peak."""

from __future__ import annotations

import dataclasses
import functools
import json
import os

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from atlas_core import AtlasError
from atlas_core.interventions import Ablate, Variant
from atlas_core import orchestrate
from atlas_core.cli import main
from atlas_core.orchestrate import RunPlan
from atlas_core.report import render_report
from atlas_core.report.check import verify_numbers
from atlas_core.results import RecordStore
from atlas_core.runner import Runner
from atlas_core.sites import Site
from atlas_core import work as work_mod
from atlas_core.work import FlopModel, Work, forward_work, matmul_peak, measure_peak, metering, summary

PROMPTS = ["ab", "hello there", "x", "a longer prompt here"]


def counted(model, ids, mask) -> int:
    """FLOP that torch's FlopCounterMode sees in one stock CausalLM forward with eager attention (its
    matmuls are plain bmm, which the counter counts; the CPU SDPA kernel it does not)."""
    before = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with FlopCounterMode(display=False) as fc, torch.inference_mode():
            model(input_ids=ids, attention_mask=mask, use_cache=False)
    finally:
        model.set_attn_implementation(before)
    return fc.get_total_flops()


def formula_executed(fm: FlopModel, mask: torch.Tensor, n_layers: int) -> int:
    b, t = mask.shape
    return forward_work(fm, mask, n_layers).executed_flop + fm.head_flop(b * t)


def test_formula_equals_torch_flop_counter_on_a_padded_batch(tiny):
    model, tok = tiny.model, tiny.tokenizer
    runner = Runner(model, tok, PROMPTS)
    fm = FlopModel.of(model)
    assert formula_executed(fm, runner.enc.attention_mask, 4) == counted(
        model, runner.enc.input_ids, runner.enc.attention_mask
    )


def test_a_wrong_formula_is_caught(tiny):
    """The check above can fail: a formula that forgets the grouped K/V projections, or the attention
    scores, no longer matches the counter."""
    model, tok = tiny.model, tiny.tokenizer
    runner = Runner(model, tok, PROMPTS)
    truth = counted(model, runner.enc.input_ids, runner.enc.attention_mask)
    fm = FlopModel.of(model)
    cfg = model.config
    no_kv = dataclasses.replace(fm, layer_weights=fm.layer_weights - 2 * cfg.hidden_size * 2 * 16)
    no_scores = dataclasses.replace(fm, attn_width=0)
    for wrong in (no_kv, no_scores):
        assert formula_executed(wrong, runner.enc.attention_mask, 4) != truth


def test_meter_counts_a_prefix_reusing_sweep_by_hand(tiny):
    """Clean pass: every layer over each prompt's real tokens; a zero-ablation of the residual after layer L
    runs layers L+1.. from the cached residual (the three share a chunk, each joining its forward at layer L+1,
    and its tokens are counted once, where they enter); every (variant, prompt) row reaches the LM head once."""
    model, tok = tiny.model, tiny.tokenizer
    fm = FlopModel.of(model)
    runner = Runner(model, tok, PROMPTS)
    lengths = runner.enc.lengths
    variants = [Variant(f"L{layer}", (Ablate(Site("resid", layer)),)) for layer in range(3)]
    with metering(model) as w:
        runner.sweep(variants)

    def layers_flop(n_layers):
        return sum(n_layers * (2 * fm.layer_weights * n + 4 * fm.attn_width * n * (n + 1) // 2) for n in lengths)

    p = len(PROMPTS)
    expected = layers_flop(4) + sum(layers_flop(4 - layer - 1) for layer in range(3)) + fm.head_flop(p * 4)
    assert w.flop == expected
    assert w.rows == p * 4
    assert w.tokens == 4 * sum(lengths)
    assert w.token_layers == sum(lengths) * (4 + 3 + 2 + 1)
    assert w.executed_flop > w.flop  # the prompts are padded to the longest
    assert w.forwards == 4  # the clean pass, then one forward per stretch between start layers


def test_training_forward_counts_its_backward(tiny):
    model = tiny.model
    fm = FlopModel.of(model)
    mask = torch.ones(1, 5, dtype=torch.long)
    assert forward_work(fm, mask, 4, grad=True).flop == 2 * forward_work(fm, mask, 4).flop
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with metering(model) as w, torch.no_grad():
        model.model(input_ids=ids, use_cache=False)
    assert w.flop == forward_work(fm, mask, 4).flop
    embed = model.model.embed_tokens(ids).detach().requires_grad_()  # a graph to backpropagate through
    with metering(model) as w:
        model.model(inputs_embeds=embed, use_cache=False)
    assert w.flop == forward_work(fm, mask, 4, grad=True).flop


def test_atlas_run_records_work_in_provenance_outside_the_config(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ATLAS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(work_mod, "PEAK_SECONDS", 0.05)
    monkeypatch.setitem(work_mod.PEAK_N, "cpu", 128)
    monkeypatch.setattr(orchestrate, "RunPlan", functools.partial(RunPlan, progress=False))
    assert (
        main(
            [
                "run",
                "--model",
                "tiny-qwen2",
                "--experiments",
                "clean,layer_ablation",
                "--profile",
                "smoke",
                "--device",
                "cpu",
                "--families",
                "copying",
                "--out",
                str(tmp_path / "run"),
                "--no-report",
            ]
        )
        == 0
    )
    store = RecordStore(tmp_path / "run")
    for key in ("clean", "layer_ablation"):
        rec = store.load(key)
        w = rec.provenance["work"]
        assert w["flop"] > 0 and w["rows"] > 0 and w["tokens"] > 0 and w["executed_flop"] >= w["flop"]
        assert w["gflops_wall"] > 0 and w["peak_gflops"] > 0 and 0 < w["peak_fraction_wall"]
        assert "work" not in json.dumps(rec.config)  # nothing timed or counted is hashed
    assert store.load("layer_ablation").provenance["work"]["token_layers"] > 0
    html = render_report(tmp_path / "run")  # the page shows it, every number traced to the record
    assert "Useful work per experiment" in html
    checked, problems = verify_numbers(html, {None: tmp_path / "run"})
    assert checked > 0 and not problems
    assert 'data-src="layer_ablation#/provenance/work/gflops_wall"' in html
    table = capsys.readouterr().out
    assert "useful GFLOP" in table and "layer_ablation" in table and "clean" in table
    print(table)


def test_matmul_peak_is_measured_once_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("ATLAS_CACHE", str(tmp_path))
    monkeypatch.setattr(work_mod, "_load1", lambda: 0.0)  # a quiet machine (a busy one is remeasured: below)
    monkeypatch.setattr(work_mod, "PEAK_SECONDS", 0.05)
    monkeypatch.setitem(work_mod.PEAK_N, "cpu", 64)
    first = matmul_peak("cpu", torch.float32)
    assert first["gflops"] > 0 and first["n"] == 64

    def no_measure(*a, **k):
        raise AssertionError("measured again instead of reading the cache")

    monkeypatch.setattr(work_mod, "measure_peak", no_measure)
    assert matmul_peak("cpu", torch.float32) == first
    (tmp_path / "matmul-peak.json").write_text("{not json")
    with pytest.raises(AssertionError, match="measured again"):  # a damaged cache is remeasured
        matmul_peak("cpu", torch.float32)


def test_a_peak_measured_under_load_is_measured_again_once_the_machine_is_quiet(tmp_path, monkeypatch):
    """The load is stored with the peak; a busy one is remeasured by the first quiet call and the higher rate kept,
    then read from the cache; a quiet one is never remeasured."""
    monkeypatch.setenv("ATLAS_CACHE", str(tmp_path))
    cores = os.cpu_count() or 1
    load = {"now": float(cores + 2)}  # two more runnable threads than cores: busy whatever the thread count
    rates = iter([100.0, 250.0, 999.0])
    measured = []

    def fake_measure(device, dtype):
        measured.append(load["now"])
        return {
            "gflops": next(rates),
            "n": 8,
            "key": "k",
            "measured": len(measured),
            "load1": load["now"],
            "busy": work_mod.busy(load["now"]),
        }

    monkeypatch.setattr(work_mod, "_load1", lambda: load["now"])
    monkeypatch.setattr(work_mod, "measure_peak", fake_measure)
    first = matmul_peak("cpu", torch.float32)
    assert first["busy"] and first["gflops"] == 100.0 and first["load1"] == cores + 2
    assert matmul_peak("cpu", torch.float32) == first and len(measured) == 1  # still busy: not remeasured
    load["now"] = 0.0
    quiet = matmul_peak("cpu", torch.float32)
    assert not quiet["busy"] and quiet["gflops"] == 250.0 and len(measured) == 2
    assert matmul_peak("cpu", torch.float32) == quiet and len(measured) == 2  # quiet: cached for good
    assert work_mod.busy(None) and not work_mod.busy(0.0)


def test_a_quiet_remeasure_keeps_the_higher_rate(tmp_path, monkeypatch):
    monkeypatch.setenv("ATLAS_CACHE", str(tmp_path))
    key = work_mod.peak_key(torch.device("cpu"), torch.float32)
    (tmp_path / "matmul-peak.json").write_text(json.dumps({key: {"gflops": 500.0, "n": 8, "key": key}}))  # no load
    monkeypatch.setattr(work_mod, "_load1", lambda: 0.0)
    monkeypatch.setattr(
        work_mod,
        "measure_peak",
        lambda d, t: {"gflops": 400.0, "n": 8, "key": key, "measured": 1.0, "load1": 0.0, "busy": False},
    )
    peak = matmul_peak("cpu", torch.float32)
    assert peak["gflops"] == 500.0 and peak["busy"] is False and peak["remeasured_load1"] == 0.0


def test_peak_rejects_a_bad_size():
    with pytest.raises(AtlasError, match="positive size"):
        measure_peak(torch.device("cpu"), torch.float32, n=0)


def test_work_record_rates():
    w = Work(flop=4_000_000_000, executed_flop=5_000_000_000, forward_seconds=1.0)
    rec = w.record(2.0, {"gflops": 4.0})
    assert rec["gflops_wall"] == 2.0 and rec["gflops_forward"] == 4.0 and rec["peak_fraction_wall"] == 0.5
    assert Work().record(0.0)["gflops_wall"] == 0.0


def test_the_summary_marks_rates_set_against_a_busy_peak():
    w = Work(flop=4_000_000_000, executed_flop=4_000_000_000, forward_seconds=1.0)
    busy = summary([("clean", w.record(1.0, {"gflops": 2.0, "busy": True}), 1.0)])
    quiet = summary([("clean", w.record(1.0, {"gflops": 8.0, "busy": False}), 1.0)])
    assert "200.0%*" in busy and "measured beside other work" in busy
    assert "50.0%" in quiet and "*" not in quiet
