"""Screened head ablation (``--screen atp``, ``atlas_core.screening``): AtP's estimate is the first-order change it
claims to be; verified heads are the exhaustive sweep's numbers (up to the rounding of other batch shapes) and
the exact top-k is the exhaustive one; the planted copy head, which AtP under-states (saturation), is put first
by verification; without the margin the stopping rule misses a head; bad input fails before any work."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atlas_core import AtlasError, models, screening
from atlas_core.experiments import head_ablation
from atlas_core.experiments.context import Context
from atlas_core.experiments.schema import load_result
from atlas_core.interventions import Patch, Variant
from atlas_core.models import planted, planted_build
from atlas_core.orchestrate import RunPlan, run_plan
from atlas_core.profiles import get_profile
from atlas_core.sites import Site
from atlas_core.tasks import load_families

pytestmark = pytest.mark.usefixtures("tiny_on_one_thread")
EVERY_LAYER = dataclasses.replace(get_profile("smoke"), head_layers=None)


def _pair(lm, families=None, n_items=4, profile=EVERY_LAYER, user_dir=None):
    """The exhaustive and the screened head ablation of one model on the same prompts."""
    fams = load_families(families, n_items=n_items, user_dir=user_dir)
    full = head_ablation.run(Context(lm, fams, profile))
    return full, head_ablation.run(Context(lm, fams, profile, screen="atp"))


def _grid(result) -> np.ndarray:
    return np.array([result.kl[f] for f in result.families])


# The screened run's sweep holds the verified layers' heads only, the exhaustive run's every head: their chunks
# (several start layers share one, staggered entry) have other shapes, so the same ablations round differently
# by ~1e-7 relative; a wrong or missing head differs in full.
SAME = {"rtol": 1e-5, "atol": 1e-7}


@pytest.mark.parametrize("name", ["tiny-qwen2", "tiny-gpt2"])
def test_verified_heads_are_the_exhaustive_sweep(load_cached, name):
    full, screened = _pair(load_cached(name))
    ex, sc = _grid(full), _grid(screened)
    li = [full.layers.index(layer) for layer in screened.screen.verified]
    assert screened.screen.verified
    np.testing.assert_allclose(sc[:, li], ex[:, li], **SAME)
    rest = [i for i in range(len(full.layers)) if i not in li]
    assert np.isnan(sc[:, rest]).all()  # an unverified head has no number in the record
    assert [(t.family, t.layer, t.head) for t in screened.top] == [(t.family, t.layer, t.head) for t in full.top]
    np.testing.assert_allclose([t.kl for t in screened.top], [t.kl for t in full.top], **SAME)
    (a, b) = (dataclasses.astuple(e.max_kl) for e in (screened, full))
    np.testing.assert_allclose(a, b, **SAME)
    stats = head_ablation.statistics(screened, full.n_layers, {})
    heads = stats["heads.head_profile"].series
    assert {x // full.n_heads for x in heads["x"]} == set(screened.screen.verified)
    assert all(math.isfinite(y) for y in heads["y"])
    for key, value in head_ablation.statistics(full, full.n_layers, {}).items():
        if key.startswith(("heads.max_", "heads.family_max_kl")):
            np.testing.assert_allclose(stats[key].value, value.value, **SAME, err_msg=key)


def test_atp_estimate_is_the_first_order_change_of_the_target_log_prob(tiny):
    """Each head's estimate is the derivative of the target log-probability along the ablation: scaling the head
    by 1 - eps moves it by eps x estimate, up to O(eps^2)."""
    fams = load_families(["copying"], n_items=4)
    ctx = Context(tiny, fams, EVERY_LAYER)
    runner = ctx.runner
    est = screening.atp_estimates(runner, [1, 3], ctx.targets)
    eps = 1e-2
    sites = [Site("head", layer, h) for layer in (1, 3) for h in range(runner.dims.n_heads)]
    acts = runner.record(sites)
    stats = runner.sweep([Variant(str(s), (Patch(s, acts[s] * (1 - eps)),)) for s in sites], targets=ctx.targets)
    moved = (np.log(stats.target_prob) - np.log(stats.ref_target_prob)) / eps
    np.testing.assert_allclose(moved, est.reshape(len(sites), -1), rtol=0.05, atol=2e-3)
    assert np.abs(est).max() > 10 * 2e-3  # the check is not vacuous


@pytest.fixture(scope="module")
def planted_llama(tmp_path_factory):
    folder = planted_build.materialize("planted-llama", 0, root=tmp_path_factory.mktemp("planted"))
    return models.load(str(folder), device="cpu", progress=False), folder


def test_planted_copy_head_misranked_by_atp_is_put_first_by_verification(planted_llama):
    """The planted copy head answers planted_copy with near certainty: the target's log-probability is saturated,
    its gradient small, and AtP ranks the copy head below the serial gate head, whose exact KL is lower.
    Verification measures both and puts the copy head first, where the exhaustive sweep has it."""
    lm, folder = planted_llama
    spec = planted.specification("llama", 0)["positions"]
    full, screened = _pair(lm, list(planted.FAMILIES), 6, get_profile("planted"), folder / "tasks")
    est = {
        (f, li, h): v
        for f, g in screened.screen.estimate.items()
        for li, row in enumerate(g)
        for h, v in enumerate(row)
    }
    copy = ("planted_copy", spec["copy"], spec["copy_head"])
    serial = ("planted_serial", spec["serial"], spec["serial_head"])
    assert max(est, key=est.get) == serial and est[copy] < est[serial] / 2  # AtP's order is wrong
    assert (full.max_head.family, full.max_head.layer, full.max_head.head) == copy  # the planted truth
    assert screened.max_head == full.max_head and screened.max_kl == full.max_kl  # verification corrects it
    assert screened.screen.margin > 5  # the copy head's exact KL is many times its estimate: the measured margin


def _planted_arrays(under: float):
    """[family, layer, head] arrays: the estimate is exact except that cell (0, 0, 0) and the hidden cell (0, 3, 1)
    are under-stated by ``under``; the hidden cell is the true second strongest."""
    rng = np.random.default_rng(0)
    exact = rng.uniform(0.0, 0.1, size=(2, 5, 3))
    exact[0, 0, 0], exact[0, 3, 1], exact[1, 1, 2] = 2.0, 1.9, 1.8
    est = exact.copy()
    est[0, 0, 0] /= under
    est[0, 3, 1] /= under
    return exact, est


def test_without_the_margin_the_stopping_rule_misses_a_head():
    """A head under-stated by AtP (1.9 nats estimated as 0.63) behind a verified head under-stated alike: the
    measured margin (3x) widens the verification to its layer; trusting the estimate's scale (``margin=False``)
    stops early and the true top 2 is wrong."""
    exact, est = _planted_arrays(3.0)
    truth = sorted(exact.ravel())[::-1][:2]

    def top(v):
        return sorted(np.nan_to_num(v.exact, nan=-1).ravel())[::-1][:2]

    def sweep(idx):
        return exact[:, idx]

    with_margin = screening.verify(est, 2, sweep)
    assert 3 in with_margin.verified and top(with_margin) == truth and with_margin.margin == pytest.approx(3.0)
    without = screening.verify(est, 2, sweep, margin=False)
    assert 3 not in without.verified and top(without) != truth


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), k=st.integers(1, 6), noise=st.floats(0.0, 3.0))
def test_stopping_rule_settles_the_top_k_unless_an_unverified_head_beats_the_margin(seed, k, noise):
    """For any exact effects and estimates: the verified cells hold the sweep's values, and the exact top-k is the
    true one, or some cell left unverified is under-stated by more than the margin the rule measured (the one way
    the rule can miss, stated in its docstring)."""
    rng = np.random.default_rng(seed)
    exact = rng.exponential(1.0, size=(3, 6, 4)) ** 2
    est = exact * np.exp(noise * rng.standard_normal(exact.shape))
    v = screening.verify(est, k, lambda idx: exact[:, idx])
    done = ~np.isnan(v.exact)
    assert np.array_equal(v.exact[done], exact[done])
    got = np.sort(v.exact[done])[::-1][:k]
    if not np.array_equal(got, np.sort(exact, axis=None)[::-1][:k]):
        assert (exact[~done] > v.margin * est[~done]).any()


def test_bad_screen_is_an_error_before_any_work(tmp_path):
    with pytest.raises(AtlasError, match="unknown --screen 'gradient'; methods are atp"):
        run_plan(
            RunPlan(
                model="tiny-qwen2",
                experiments=["head_ablation"],
                profile="smoke",
                out=tmp_path / "a",
                screen="gradient",
                progress=False,
                report=False,
            )
        )
    with pytest.raises(AtlasError, match="--screen atp applies to head_ablation, which this run does not include"):
        run_plan(
            RunPlan(
                model="tiny-qwen2",
                experiments=["layer_ablation"],
                profile="smoke",
                out=tmp_path / "b",
                screen="atp",
                progress=False,
                report=False,
            )
        )
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    with pytest.raises(AtlasError, match="AtP screening estimates zero and mean head ablation, not 'resample'"):
        screening.atp_estimates(None, [0], [], mode="resample")  # type: ignore[arg-type]


def test_screened_and_exhaustive_records_differ_in_config_only_when_screened(tiny):
    fams = load_families(["copying"], n_items=2)
    plain = head_ablation.config(Context(tiny, fams, EVERY_LAYER))
    assert "screen" not in plain  # exhaustive records (the baselines) keep their config hash
    assert head_ablation.config(Context(tiny, fams, EVERY_LAYER, screen="atp")) == {**plain, "screen": "atp"}


def test_a_screened_run_says_what_it_verified_and_never_becomes_a_baseline(tmp_path):
    from atlas_core.baselines import export_baseline
    from atlas_core.results import RecordStore

    out = tmp_path / "run"
    run_plan(
        RunPlan(
            model="tiny-qwen2",
            experiments=["head_ablation"],
            profile="smoke",
            out=out,
            screen="atp",
            families=["copying", "arithmetic"],
            progress=False,
            report=False,
        )
    )
    rec = RecordStore(out).records()["head_ablation"]
    assert rec.config["extra"]["screen"] == "atp" and rec.result["screen"]["verified"]
    grid = np.array([rec.result["kl"][f] for f in rec.result["families"]], dtype=float)  # null -> NaN
    assert np.isnan(grid).any() == (len(rec.result["screen"]["verified"]) < len(rec.result["layers"]))
    res = load_result("head_ablation", rec.result)  # null -> NaN; no statistic reads it
    stats = head_ablation.statistics(res, res.n_layers, {})
    assert all(math.isfinite(s.value) for s in stats.values() if s.value is not None)
    with pytest.raises(AtlasError, match="head_ablation was screened .*baselines are exhaustive"):
        export_baseline(out, tmp_path / "baselines")


def test_the_plugin_computes_head_ablation_screened_with_atlas_screen(pytester):
    """``--atlas-screen atp``: the session computes the head ablation its selected tests need screened (the record
    says so), and the claims read the verified heads; the option is checked at start (test_plugin_integrity)."""
    from pathlib import Path

    from atlas_core.results import RecordStore
    from atlas_core.runs import run_path

    findings = Path(__file__).resolve().parents[1] / "findings" / "test_findings.py"
    claims = pytester.path / "mine.toml"
    claims.write_text(
        '[meta]\nsource = "measured"\nprofile = "smoke"\nmodels = ["tiny-qwen2"]\n\n'
        '[[claim]]\nid = "tiny-qwen2:heads.max_kl"\nmodel = "tiny-qwen2"\nstatistic = "heads.max_kl"\n'
        'kind = "at_least"\nthreshold = 1e-6\n'
    )
    runs = pytester.path / "runs"
    result = pytester.runpytest_subprocess(
        str(findings),
        "-m",
        "finding_heads",
        "--atlas-model",
        "tiny-qwen2",
        "--atlas-profile",
        "smoke",
        "--atlas-claims",
        str(claims),
        "--atlas-runs",
        str(runs),
        "--atlas-baselines",
        "none",
        "--atlas-screen",
        "atp",
        "-p",
        "no:cacheprovider",
        "-q",
        timeout=600,
    )
    result.assert_outcomes(passed=1)
    rec = RecordStore(run_path("tiny-qwen2", "smoke", runs)).records()["head_ablation"]
    assert rec.config["extra"]["screen"] == "atp" and rec.result["screen"]["verified"]
