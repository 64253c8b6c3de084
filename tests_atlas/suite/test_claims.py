"""Claims files, claim evaluation, claims writing and run comparison (atlas_core.claims), on a stored
``tiny-qwen2`` smoke run and on hand-made claims.

- Loading validates every claim and names the file, the claim and the fix on bad input.
- A failing claim's message names the claim, the measured value with its interval, the threshold
  and the model; rank claims report the rank.
- ``write_claims`` on stored runs writes a file that loads back, whose claims pass on those runs.
- ``compare_runs`` finds no drift between a run and its copy, and flags exactly a perturbed statistic;
  ``atlas compare`` prints the table and exits 1 on drift.
"""

from __future__ import annotations

import json
import shutil

import pytest

from atlas_core import AtlasError
from atlas_core.spec import hypotheses
from atlas_core.claims import (
    CLAIMS_DIR,
    compare_runs,
    compare_stats,
    default_claims_files,
    evaluate,
    format_comparison,
    load_claims,
    load_run,
    parse_claim,
    same_model,
    tolerance,
    write_claims,
)
from atlas_core.cli import main
from atlas_core.integrity import seal_doc
from atlas_core.orchestrate import RunPlan, run_plan
from atlas_core.verdicts import Stat

EXPERIMENTS = ["layer_ablation", "mlp_ablation", "steering"]
META = {"models": ["small-model", "large-model"], "source": "measured"}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tiny-qwen2-smoke"
    run_plan(
        RunPlan(model="tiny-qwen2", experiments=EXPERIMENTS, profile="smoke", out=out, report=False, progress=False)
    )
    return out


def test_committed_claims_files_load():
    files = default_claims_files()
    assert CLAIMS_DIR / "study-qwen2.5-1.5b.toml" in files
    for p in files:
        cf = load_claims(p)
        assert cf.claims, p
        assert {c.source for c in cf.claims} <= {"published", "measured"}
    study = load_claims(CLAIMS_DIR / "study-qwen2.5-1.5b.toml")
    assert {c.source for c in study.claims} == {"published"}
    assert study.models == ("Qwen/Qwen2.5-0.5B", "Qwen/Qwen2.5-1.5B")
    verdicts = {c.statistic: c.expected_verdict for c in study.claims if c.kind == "verdict"}
    assert verdicts == {
        "H001": "rejected",
        "H002": "supported",
        "H003": "rejected",
        "H004": "rejected",
        "H005": "supported",
        "H006": "rejected",
        "H007": "partially supported",
        "H008": "weakened",
    }
    rank = next(c for c in study.claims if c.id == "Qwen2.5-1.5B:hub.rank.L26")
    assert (rank.layer, rank.max_rank, rank.expectation()) == (26, 3, "layer 26 ranks <= 3")
    lora = next(c for c in study.claims if c.id == "Qwen2.5-1.5B:lora.rank.json_schema")
    assert (lora.family, lora.layer, lora.group, lora.expectation()) == (
        "json_schema",
        None,
        "finding_lora",
        "family json_schema ranks <= 1",
    )


@pytest.mark.parametrize(
    "entry, match",
    [
        ({"statistic": "hub.top_layer_kl", "model": "m", "expected": 1.0, "tolerance": 0.1}, "lacks a string 'id'"),
        # a statistic its experiment does not declare: refused when read, not "n/a (not measured)" after the run
        (
            {"id": "x", "statistic": "hub.nope", "model": "m", "kind": "at_least", "threshold": 1},
            "unknown statistic 'hub.nope': the layer_ablation experiment computes",
        ),
        ({"id": "x", "statistic": "bogus.stat", "model": "m"}, "unknown statistic 'bogus.stat'"),
        ({"id": "x", "statistic": "hub.top_layer_kl", "model": "m", "expected": 1.0}, "needs a number 'tolerance'"),
        ({"id": "x", "statistic": "hub.top_layer_kl", "model": "m", "kind": "guess"}, "unknown kind 'guess'"),
        ({"id": "x", "statistic": "hub.top_layer_kl", "expected": 1.0, "tolerance": 0.1}, "names its 'model'"),
        (
            {"id": "x", "statistic": "hub.ranking", "model": "m", "kind": "rank", "layer": 3},
            "integer 'layer' and 'max_rank'",
        ),
        (
            {"id": "x", "statistic": "lora.ranking", "model": "m", "kind": "rank", "layer": 3, "max_rank": 1},
            "string 'family'",
        ),
        (
            {"id": "x", "statistic": "hub.top_layer_kl", "model": "m", "kind": "rank", "layer": 3, "max_rank": 1},
            "'.ranking' statistic",
        ),
        ({"id": "x", "statistic": "H003", "expected_verdict": "maybe"}, "unknown verdict 'maybe'"),
        (
            {"id": "x", "statistic": "H003", "kind": "verdict", "models": ["a"], "expected_verdict": "rejected"},
            "needs two models",
        ),
        (
            {"id": "x", "statistic": "hub.top_layer_kl", "model": "m", "expected": "big", "tolerance": 1},
            "must be a number",
        ),
    ],
)
def test_bad_claims_are_clear_errors(entry, match):
    with pytest.raises(AtlasError, match=match):
        parse_claim(entry, META, "f.toml")


def test_claims_file_level_errors(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text(
        '[meta]\nmodels = ["a", "b"]\n[[claim]]\nid = "H003"\nstatistic = "H003"\nexpected_verdict = "rejected"\n'
    )
    with pytest.raises(AtlasError, match=r"needs \[thresholds.H003\] with min_ratio, reject_below, min_boost"):
        load_claims(p)
    p.write_text('[[claim]]\nid = "a"\nstatistic = "mlp.max_kl"\nmodel = "m"\nkind = "at_least"\nthreshold = 1\n' * 2)
    with pytest.raises(AtlasError, match="duplicate claim id 'a'"):
        load_claims(p)
    p.write_text("[meta\n")
    with pytest.raises(AtlasError, match="not valid TOML"):
        load_claims(p)
    with pytest.raises(AtlasError, match="does not exist"):
        load_claims(tmp_path / "missing.toml")


def test_failure_message_names_claim_value_interval_threshold_and_model():
    c = parse_claim(
        {"id": "m:hub.top_layer_kl", "statistic": "hub.top_layer_kl", "model": "m", "expected": 13.7, "tolerance": 2.0},
        META,
    )
    ev = evaluate(c, [{"hub.top_layer_kl": Stat(9.5, 9.1, 9.9, kind="estimate", label="L3")}], ["tiny-qwen2"])
    assert not ev.passed
    for part in ("claim m:hub.top_layer_kl", "tiny-qwen2", "9.5 [9.1, 9.9]", "13.7 ± 2", "FAIL"):
        assert part in ev.message, (part, ev.message)
    row = ev.row()
    assert row == {
        "claim": "m:hub.top_layer_kl",
        "models": ["tiny-qwen2"],
        "statistic": "hub.top_layer_kl",
        "value": 9.5,
        "lo": 9.1,
        "hi": 9.9,
        "threshold": "13.7 ± 2",
        "verdict": None,
        "expected_verdict": None,
        "series": None,
    }
    ok = evaluate(c, [{"hub.top_layer_kl": Stat(12.0, 11.0, 13.0, kind="estimate")}], ["m"])
    assert ok.passed


def test_rank_and_verdict_claims():
    rank = parse_claim(
        {"id": "r", "statistic": "hub.ranking", "model": "m", "kind": "rank", "layer": 26, "max_rank": 3}, META
    )
    stats = {"hub.ranking": Stat(6.0, kind="ranking", ranking=(6, 14, 26, 5))}
    assert evaluate(rank, [stats], ["m"]).passed
    stats = {"hub.ranking": Stat(6.0, kind="ranking", ranking=(6, 14, 5, 26))}
    ev = evaluate(rank, [stats], ["m"])
    assert not ev.passed and "layer 26 rank 4 of 4" in ev.message and "expected rank <= 3" in ev.message
    ev = evaluate(rank, [{"hub.ranking": Stat(0.0, kind="ranking", ranking=(0, 1, 2, 3))}], ["tiny"])
    assert not ev.passed and "layer 26 not among the 4 layers measured" in ev.message
    fam = parse_claim(
        {"id": "f", "statistic": "lora.ranking", "model": "m", "kind": "rank", "family": "json_schema", "max_rank": 1},
        META,
    )
    shifts = ("factual_recall", "dead_code", "json_schema")
    ev = evaluate(fam, [{"lora.ranking": Stat(None, kind="ranking", ranking=shifts)}], ["m"])
    assert (
        not ev.passed and "family json_schema rank 3 of 3 (top: factual_recall, dead_code, json_schema)" in ev.message
    )
    assert evaluate(fam, [{"lora.ranking": Stat(None, kind="ranking", ranking=shifts[::-1])}], ["m"]).passed

    verdict = parse_claim({"id": "H003", "statistic": "H003", "expected_verdict": "REJECTED"}, META)
    th = {"H003": {"min_ratio": 1.0, "reject_below": 0.5, "min_boost": 0.01}}
    small, large = {"steering.best_boost": Stat(0.2)}, {"steering.best_boost": Stat(0.003)}
    ev = evaluate(verdict, [small, large], ["s", "l"], th)
    assert ev.passed and ev.verdict == "rejected" and ev.value == pytest.approx(0.015)
    ev = evaluate(verdict, [small, {"steering.best_boost": Stat(0.3)}], ["s", "l"], th)
    assert not ev.passed and "H003 verdict SUPPORTED, expected REJECTED" in ev.message and "on s vs l" in ev.message


def test_same_model_matches_hub_ids_and_folders():
    assert same_model("Qwen/Qwen2.5-1.5B", "/data/models/Qwen2.5-1.5B/")
    assert same_model("Qwen/Qwen2.5-1.5B", "Qwen/Qwen2.5-1.5B")
    assert not same_model("Qwen/Qwen2.5-1.5B", "qwen2.5-coder-1.5b-instruct")


def test_write_claims_round_trip(tiny_run, tmp_path):
    other = tmp_path / "other-smoke"
    shutil.copytree(tiny_run, other)
    man = json.loads((other / "manifest.json").read_text())
    man["model"]["name"] = "tiny-qwen2-copy"
    (other / "manifest.json").write_text(json.dumps(seal_doc(man)))
    out = write_claims([tiny_run, other], tmp_path / "claims.toml", label="tiny pair")
    cf = load_claims(out)
    assert cf.meta["source"] == "measured" and cf.profile == "smoke" and cf.models == ("tiny-qwen2", "tiny-qwen2-copy")
    prov = cf.meta["provenance"]["tiny-qwen2"]
    assert len(prov["weights_sha256"]) == 64 and prov["profile"] == "smoke"
    groups = {c.group for c in cf.claims}
    # the pair is one model twice, so the writer's own audit (swapped = the same run) drops every claim that only
    # reversed or shuffled layers could fail and do not: the hub's maxima and the hypotheses among them
    assert "finding_mlp" in groups
    # a copy of one model is the same model twice: no scaling hypothesis may be supported on it, and its
    # noise-straddling ratio is inconclusive, which no claim states
    assert not [
        c
        for c in cf.claims
        if c.kind == "verdict"
        and hypotheses()[c.hypothesis].scaling
        and c.expected_verdict in ("supported", "partially supported")
    ]
    header = out.read_text().split("[meta]")[0]
    dropped = [line for line in header.splitlines() if line.startswith("#   dropped ")]
    assert f"{len(cf.claims)} claims kept" in header and f"{len(dropped)} dropped" in header
    for line in dropped:  # a random model's steering boosts are noise around 0: their claims cannot fail
        assert any(
            w in line
            for w in (
                "cannot tell the effect from none",
                "decision threshold",
                "verdict inconclusive",
                "admits",
                "passes every wrong input the audit made",
            )
        ), line
    blind = [line for line in dropped if "passes every wrong input the audit made" in line]
    assert any(":hub." in line for line in blind) and any("H001" in line for line in blind), dropped
    assert "h002" not in groups  # head ablation was not run: no claim on it
    runs = {"tiny-qwen2": load_run(tiny_run).stats, "tiny-qwen2-copy": load_run(other).stats}
    for c in cf.claims:  # the claims hold on the runs they were written from
        stats = [runs[m] for m in c.models]
        ev = evaluate(c, stats, c.models, cf.thresholds)
        assert ev.passed, ev.message
        if c.kind == "value":
            assert c.tolerance >= 0.01
    with pytest.raises(AtlasError, match="both runs are of tiny-qwen2"):
        write_claims([tiny_run, tiny_run], tmp_path / "x.toml")


def _perturb(run_dir, factor=3.0):
    """Scale the hub layer's KL (its point value and interval) in a stored layer-ablation result."""
    p = run_dir / "layer_ablation.json"
    rec = json.loads(p.read_text())
    for sw in rec["result"]["sweeps"]:
        top = sw["ranking"][0]
        i = sw["layers"].index(top)
        sw["family_mean_kl"][i] *= factor
        for k in ("value", "lo", "hi"):
            sw["mean_kl"][i][k] *= factor
        for fam in sw["kl"]:
            sw["kl"][fam][i] *= factor
    p.write_text(json.dumps(seal_doc(rec)))  # as if measured so


def test_compare_runs_flags_exactly_the_perturbed_statistics(tiny_run, tmp_path, capsys):
    same = tmp_path / "same"
    shutil.copytree(tiny_run, same)
    rows = compare_runs(tiny_run, same)
    assert rows and not any(r.drifted for r in rows)
    assert {"hub.top_layer_kl", "mlp.max_kl", "steering.best_boost", "hub.top_layer"} <= {r.statistic for r in rows}

    bad = tmp_path / "bad"
    shutil.copytree(tiny_run, bad)
    _perturb(bad)
    rows = compare_runs(tiny_run, bad)
    drifted = {r.statistic for r in rows if r.drifted}
    assert "hub.top_layer_kl" in drifted
    # tiny-qwen2's layers tie (zero biases: zeroing any layer's output leaves uniform logits), so the
    # scaled layer becomes a hub where the baseline had none: its index and depth drift too
    tie = {r.statistic: r for r in rows}["hub.top_layer"]
    assert tie.a.tie and not tie.b.tie and tie.note == "tie"
    # _perturb scales every sweep's top layer, the skip sweep's too: the hub.skip statistics read it
    assert drifted <= {"hub.top_layer_kl", "hub.top_layer", "hub.top_layer_depth", "mlp.share_of_top_layer"} | {
        r.statistic for r in rows if r.statistic.startswith(("hub.family_kl.", "hub.skip."))
    }
    row = next(r for r in rows if r.statistic == "hub.top_layer_kl")
    assert "hub.top_layer_kl drifted: baseline tiny-qwen2" in row.message() and "candidate tiny-qwen2" in row.message()
    table = format_comparison(rows)
    assert "DRIFT" in table and f"{len(drifted)} of {len(rows)} statistics drifted" in table

    assert main(["compare", str(tiny_run), str(bad)]) == 1
    assert "DRIFT" in capsys.readouterr().out
    assert main(["compare", str(tiny_run), str(same)]) == 0
    assert main(["compare", str(tiny_run), str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("hw, magnitude, want", [(0.5, 1.0, 1.0), (0.0, 0.0, 0.01), (0.0, -20.0, 2.0)])
def test_the_tolerance_rule_takes_the_largest_of_its_three_terms(hw, magnitude, want):
    """k x the interval's half-width, the floor, or rel x |value|, whichever is largest (k 2, floor 0.01, rel 0.1)."""
    assert tolerance(hw, magnitude, k=2.0, floor=0.01, rel=0.1) == want


def test_a_drift_is_measured_against_the_relative_term_without_intervals():
    """Two point values with no interval: within 5% of the larger they agree, beyond it they drift."""
    base = {"hub.top_layer_kl": Stat(100.0)}
    assert not compare_stats(base, {"hub.top_layer_kl": Stat(104.0)})[0].drifted
    row = compare_stats(base, {"hub.top_layer_kl": Stat(106.0)})[0]
    assert row.drifted and row.tolerance == pytest.approx(5.3)


def test_compare_refuses_a_candidate_that_lacks_evidence_the_baseline_has(tiny_run, tmp_path, capsys):
    """A half-finished candidate is "missing" (exit 3, its own message), never "0 drifted" (exit 0); the
    output names which folder is the baseline; --experiments narrows the comparison to what both hold."""
    only_clean = tmp_path / "only-clean"
    shutil.copytree(tiny_run, only_clean)
    for p in only_clean.glob("*.json"):
        if p.name not in ("clean.json", "manifest.json"):
            p.unlink()
    assert main(["compare", str(tiny_run), str(only_clean)]) == 3
    cap = capsys.readouterr()
    assert cap.out.startswith(f"baseline (A): tiny-qwen2 ({tiny_run})    candidate (B): tiny-qwen2 ({only_clean})")
    assert "MISSING" in cap.out and "missing evidence: the candidate" in cap.out
    err = cap.err.strip()
    assert err.count("\n") == 0 and err.startswith("atlas: missing evidence: the candidate")
    assert "layer_ablation, mlp_ablation, steering" in err and f"--out {only_clean}" in err

    no_steering = tmp_path / "no-steering"
    shutil.copytree(tiny_run, no_steering)
    (no_steering / "steering.json").unlink()
    assert main(["compare", str(tiny_run), str(no_steering)]) == 3
    err = capsys.readouterr().err
    assert "lacks experiment(s) steering and" in err and "steering.best_boost" in err
    assert "--experiments layer_ablation,mlp_ablation" in err  # the narrowing that would pass
    assert main(["compare", str(tiny_run), str(no_steering), "--experiments", "layer_ablation,mlp_ablation"]) == 0
    out = capsys.readouterr().out
    assert "steering." not in out and "hub.top_layer_kl" in out and "mlp.max_kl" in out
    assert main(["compare", str(tiny_run), str(no_steering), "--experiments", "steering"]) == 3  # named, yet absent
    capsys.readouterr()
    assert main(["compare", str(no_steering), str(tiny_run), "--experiments", "steering"]) == 2  # baseline lacks it
    assert "the baseline" in capsys.readouterr().err

    _perturb(no_steering)  # drifted and missing: missing wins the exit code, the drift is listed
    assert main(["compare", str(tiny_run), str(no_steering)]) == 3
    assert "DRIFT" in capsys.readouterr().out
    assert main(["compare", str(tiny_run), str(no_steering), "--experiments", "layer_ablation"]) == 1


def test_a_statistic_only_the_baseline_holds_is_missing_not_within_tolerance():
    rows = compare_stats({"hub.top_layer_kl": Stat(1.0), "mlp.max_kl": Stat(2.0)}, {"mlp.max_kl": Stat(2.0)})
    row = {r.statistic: r for r in rows}["hub.top_layer_kl"]
    assert row.missing and not row.drifted and row.note == "MISSING in candidate"
    assert "MISSING" in format_comparison(rows)
    extra = compare_stats({"mlp.max_kl": Stat(2.0)}, {"hub.top_layer_kl": Stat(1.0), "mlp.max_kl": Stat(2.0)})
    assert not any(r.missing for r in extra)  # the candidate may measure more than the baseline


def test_claims_write_from_a_partial_run_says_what_is_missing(tiny_run, tmp_path, capsys):
    assert main(["claims", "write", str(tiny_run), "--out", str(tmp_path / "mine.toml")]) == 0
    cap = capsys.readouterr()
    assert cap.out.strip() == str(tmp_path / "mine.toml")
    note = next(line for line in cap.err.splitlines() if line.startswith(f"atlas: note: {tiny_run} lacks "))
    lacking = note.split(" lacks ")[1].split(":")[0].split(", ")
    assert "head_ablation" in lacking and "knockout" in lacking
    assert not {"layer_ablation", "mlp_ablation", "steering"} & set(lacking)
    assert f"atlas run --experiments {','.join(lacking)} --out {tiny_run}" in note
