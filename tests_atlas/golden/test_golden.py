"""The golden check: a fixed slice of all nine experiments (and the clean pass) on Coder-0.5B, recomputed
and compared per variant and prompt with ``atlas_core/data/golden/qwen2.5-coder-0.5b-instruct.json``.

Tolerances are each experiment's ``golden_rel`` (``atlas_core.spec``, set from the measured deviation across
CPUs and thread counts): relative 3e-4 (plus 1e-6 absolute for KL and probabilities, below which fp32
forwards of different batch shapes legitimately differ), 1e-2 for what depends on the four LoRA steps (their
rounding compounds), 5e-4 for the MLP ablation (zeroing the first
layer's MLP makes the forward ill-conditioned: measured 1.4e-4) and 2e-3 absolute on transfer recoveries
(a ratio of nearly equal KLs). Argmax tokens, layer lists and rankings are exact.

The mutation tests show that it bites: each breaks the computation the way a plausible bug would and
checks that the golden comparison names the experiment, variant, prompt and both values. When a change
of an experiment's definition is deliberate, rewrite the record with ``atlas golden write`` and give the
reason in the commit.
"""

from __future__ import annotations

import dataclasses

import pytest

from atlas_core import golden
from atlas_core.golden import ExperimentSlice, SweepRecord, compare_slice

REAL = pytest.mark.real_model


def _summary(mismatches) -> str:
    head = "\n".join(str(m) for m in mismatches[:25])
    more = f"\n... and {len(mismatches) - 25} more" if len(mismatches) > 25 else ""
    return f"{len(mismatches)} golden value(s) moved:\n{head}{more}"


@REAL
def test_the_golden_slice_reproduces_value_by_value(coder05):
    mismatches = golden.check(coder05)
    assert not mismatches, _summary(mismatches) + "\n(a deliberate change of definition: `atlas golden write`)"


def test_the_current_code_is_verified_against_the_golden_slice():
    """Each experiment's code fingerprint is one the record lists as reproducing it: otherwise baselines
    made by earlier code cannot be told apart from stale ones."""
    unverified = golden.unverified_code()
    assert not unverified, (
        f"code changed since the golden record was written: {unverified}. Run `atlas golden write`: where the "
        "golden values still match it adds the new fingerprints (the baselines stand); where they moved it says "
        "which experiments' baselines are now stale"
    )


# ---- mutations: each must make the golden check fail, naming where ------------------------------


@REAL
def test_a_slice_of_one_experiment_reads_the_others_from_the_record(coder05):
    """Head ablation alone reads the layer ablation it needs from the record, as a run reads stored records:
    unmutated, checking it alone finds nothing."""
    assert golden.check(coder05, experiments=["head_ablation"]) == []


def _check_fails(coder05, experiment: str) -> str:
    """The mutation fails the check, and by a wide margin: its largest move is at least 10 tolerances, so
    a tolerance set from the thread-count deviation (``fixtures/golden/thread_deviation.py``) cannot hide it."""
    mismatches = golden.check(coder05, experiments=[experiment])
    assert mismatches, f"the golden check of {experiment} did not notice the mutation"
    assert max(m.excess for m in mismatches) >= 10, max(mismatches, key=lambda m: m.excess)
    first = str(mismatches[0])
    assert first.startswith(f"{experiment}: ") and "golden " in first and ", now " in first
    return first


@REAL
def test_mutation_ablating_the_neighbouring_layer_fails(coder05, monkeypatch):
    from atlas_core.experiments import head_ablation
    from atlas_core.sites import Site

    monkeypatch.setattr(head_ablation, "Site", lambda kind, layer, head=None: Site(kind, layer ^ 1, head))
    msg = _check_fails(coder05, "head_ablation")
    assert "variant 'head/zero/L0H0' prompt " in msg, msg


@REAL
def test_mutation_a_window_that_starts_one_layer_late_fails(coder05, monkeypatch):
    from atlas_core.runner import Runner

    plan = Runner.plan

    def late(self, variant, stop):
        p = plan(self, variant, stop)
        return dataclasses.replace(p, start=min(p.start + 1, p.end))

    monkeypatch.setattr(Runner, "plan", late)
    msg = _check_fails(coder05, "steering")
    assert "sweep 0 variant 'L" in msg and " prompt 'The capital of" in msg, msg


@REAL
def test_mutation_kl_direction_swapped_fails(coder05, monkeypatch):
    from atlas_core import runner
    from atlas_core.metrics import kl_divergence

    monkeypatch.setattr(runner, "kl_divergence", lambda ref, logp: kl_divergence(logp, ref))
    msg = _check_fails(coder05, "steering")
    assert " kl: golden " in msg, msg


@REAL
def test_mutation_a_head_slice_off_by_one_fails(coder05, monkeypatch):
    from atlas_core import interventions, prompt_set, sites

    hook = sites.site_hook

    def shifted(model, site, fn):
        if site.kind == "head":
            site = dataclasses.replace(site, head=(site.head + 1) % sites.dims(model).n_heads)
        return hook(model, site, fn)

    monkeypatch.setattr(interventions, "site_hook", shifted)
    monkeypatch.setattr(prompt_set, "site_hook", shifted)
    msg = _check_fails(coder05, "head_ablation")
    assert "variant 'head/zero/L0H0'" in msg, msg


# ---- the comparison itself (no model) ----------------------------------------------------------------


def _slice(kl: float, prob: float = 0.5) -> ExperimentSlice:
    return ExperimentSlice(
        sweeps=[SweepRecord(["v/L0"], ["The capital of France is"], [[kl]], [[7]], [[prob]])],
        result={"best": kl, "layers": [0, 1], "seconds": 3.0},
    )


def test_comparison_tolerates_rounding_and_names_what_moved():
    assert compare_slice("steering", _slice(0.5), _slice(0.5 * (1 + 5e-5))) == []
    moved = compare_slice("steering", _slice(0.5), _slice(0.5 * (1 + 1e-3)))
    assert [m.where for m in moved] == ["sweep 0 variant 'v/L0' prompt 'The capital of France is' kl", "result.best"]
    assert str(moved[0]) == (
        "steering: sweep 0 variant 'v/L0' prompt 'The capital of France is' kl: golden 0.5, now 0.5005"
    )
    # a KL near zero compares by the absolute floor, not by its meaningless relative error
    assert compare_slice("steering", _slice(2e-8), _slice(9e-8)) == []
    assert compare_slice("steering", _slice(0.0), _slice(5e-6)) != []
    # timings are not compared; argmax and integer fields are exact
    other = _slice(0.5)
    other.result["seconds"] = 9.0
    assert compare_slice("steering", _slice(0.5), other) == []
    other.sweeps[0].argmax[0][0] = 8
    other.result["layers"] = [0, 2]
    assert {m.where for m in compare_slice("steering", _slice(0.5), other)} == {
        "sweep 0 variant 'v/L0' prompt 'The capital of France is' argmax",
        "result.layers[1]",
    }


def test_lora_derived_and_ill_conditioned_values_get_their_wider_tolerances():
    assert compare_slice("transfer", _slice(0.5), _slice(0.5 * (1 + 5e-3))) == []
    assert compare_slice("transfer", _slice(0.5), _slice(0.5 * (1 + 2e-2))) != []
    assert compare_slice("mlp_ablation", _slice(7.67), _slice(7.67 * (1 + 4e-4))) == []
    assert compare_slice("mlp_ablation", _slice(7.67), _slice(7.67 * (1 + 1e-3))) != []
    assert compare_slice("layer_ablation", _slice(7.67), _slice(7.67 * (1 + 4e-4))) != []


def test_excess_measures_a_difference_in_tolerances():
    """What the thread-count measurement and the mutations' margin read: 1 at the tolerance's edge."""
    assert golden.excess(1.0, 1.0 + 2e-4, 1e-4, 0.0) == pytest.approx(2.0, rel=1e-3)
    assert golden.excess(0.0, 5e-7, 1e-4, 1e-6) == pytest.approx(0.5, rel=1e-3)
    assert golden.excess(float("nan"), 1.0, 1e-4, 1e-6) == float("inf")
    moved = compare_slice("steering", _slice(0.5), _slice(0.5 * (1 + 1e-3)))
    assert moved[0].excess == pytest.approx(0.5 * 1e-3 / (3e-4 * 0.5 * (1 + 1e-3) + 1e-6))  # the KL floor counts
    # above=0 lists every value that moved at all (the measurement's view), above=1 only the failures
    near = compare_slice("steering", _slice(0.5), _slice(0.5 * (1 + 5e-5)), above=0.0)
    assert [m.where for m in near] == ["sweep 0 variant 'v/L0' prompt 'The capital of France is' kl", "result.best"]
    assert 0 < near[0].excess < 1


def test_merge_keeps_the_codes_of_unchanged_experiments_only():
    old = {
        "steering": dataclasses.replace(_slice(0.5), codes=["a"]),
        "knockout": dataclasses.replace(_slice(0.5), codes=["a"]),
    }
    new = {
        "steering": dataclasses.replace(_slice(0.5), codes=["b"]),
        "knockout": dataclasses.replace(_slice(0.9), codes=["b"]),
    }
    new["steering"].sweeps[0].kl[0][0] = 0.5 * (1 + 5e-5)  # within tolerance: the old values stay
    merged = golden.merge_codes(old, new)
    assert merged["steering"].codes == ["a", "b"] and merged["knockout"].codes == ["b"]
    assert merged["steering"].sweeps[0].kl[0][0] == 0.5 and merged["knockout"].sweeps[0].kl[0][0] == 0.9


def test_a_damaged_record_is_a_clear_error(tmp_path):
    from atlas_core import AtlasError

    bad = tmp_path / "m.json"
    bad.write_text('{"format": 1, "experiments": {"clean": {"sweeps": []}}}')
    with pytest.raises(
        AtlasError, match=r"m.json: experiments.clean.result is required .*git checkout -- atlas_core/data/golden"
    ):
        golden.read(bad)
    with pytest.raises(AtlasError, match="no golden record .*atlas golden write"):
        golden.read(tmp_path / "missing.json")
