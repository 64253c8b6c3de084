"""The test tiers the plugin registers: which tests each selects, what the claims default to, and that the
default tier never starts a recompute."""

from __future__ import annotations

from pathlib import Path

PLUGIN = ["-p", "atlas_core.pytest_plugin", "-p", "no:cacheprovider"]
REPO = Path(__file__).resolve().parents[2]
# H003's claims test as the suite derives it (tests_atlas/hypotheses/test_hypotheses.py), alone in a project
H003_TEST = """import pytest


@pytest.mark.h003
@pytest.mark.real_model
def test_h003(claim, check_claim):
    check_claim(claim)
"""

TIERED = """
    import pytest

    def test_unit():
        pass

    @pytest.mark.pair
    def test_recompute():
        pass

    @pytest.mark.slow
    def test_benchmark():
        pass

    def test_claims_defaults(atlas):
        print(f"PROFILE={atlas.profile} COMPUTE={atlas.compute}")
"""


def _ran(result) -> set[str]:
    return {line.split("::")[1].split()[0] for line in result.stdout.lines if "::" in line and " PASSED" in line}


def test_each_tier_selects_its_tests(pytester):
    pytester.makepyfile(test_tiered=TIERED)
    runs = pytester.path / "runs"
    for args, want in (
        ([], {"test_unit", "test_claims_defaults"}),
        (["--atlas-tier", "pair"], {"test_recompute"}),
        (["--atlas-tier", "slow"], {"test_benchmark"}),
        (["-m", "slow or pair"], {"test_recompute", "test_benchmark"}),
    ):  # -m selects by itself
        result = pytester.runpytest_subprocess(*PLUGIN, "-v", "--atlas-runs", str(runs), *args)
        assert _ran(result) == want, (args, result.stdout.str()[-2000:])


def test_the_default_tier_reads_stored_full_profile_results_for_the_default_pair_only(pytester):
    pytester.makepyfile(test_tiered=TIERED)
    runs = str(pytester.path / "runs")
    for args, want in (
        ([], "PROFILE=full COMPUTE=False"),
        (["--atlas-profile", "ci"], "PROFILE=ci COMPUTE=True"),  # asked for: computed
        (["--atlas-model", "tiny-qwen2"], "PROFILE=ci COMPUTE=True"),  # models named: computed
        (["--atlas-tier", "pair", "-m", "not pair"], "PROFILE=ci COMPUTE=True"),
    ):
        result = pytester.runpytest_subprocess(*PLUGIN, "-s", "-k", "claims_defaults", "--atlas-runs", runs, *args)
        assert want in result.stdout.str(), (args, result.stdout.str()[-2000:])


def test_a_missing_baseline_fails_the_default_tier_in_seconds_instead_of_computing(pytester):
    """With no committed baselines to read, the default tier's hypothesis test fails naming the record and
    how to compute it; it does not start hours of recompute (nor fetch any weights)."""
    pytester.makepyfile(test_h003=H003_TEST)
    suite = (REPO / "tests_atlas" / "conftest.py").read_text()  # the suite's check_claim fixture, as it is
    start = suite.index("@pytest.fixture\ndef check_claim(")
    pytester.makeconftest("import pytest\n\n\n" + suite[start : suite.index("    return check\n", start) + 17])
    runs = pytester.path / "runs"
    result = pytester.runpytest_subprocess(
        *PLUGIN, "-rf", "--atlas-baselines", "none", "--atlas-runs", str(runs), timeout=300
    )
    out = result.stdout.str()
    assert result.ret == 1 and "passed" not in out.splitlines()[-1], out[-2000:]
    assert "the default tier checks stored results only" in out and "steering: no stored result" in out
    assert "--atlas-profile full to compute them in this session" in out
    assert "running on" not in out + result.stderr.str()


def test_claims_this_session_cannot_bind_are_deselected_and_counted_with_the_option_that_runs_them(pytester):
    """The report shows what was checked: H003's claims of the ci profile are deselected (not a skipped row each),
    and the summary says how many and which option would run them."""
    pytester.makepyfile(test_h003=H003_TEST)
    suite = (REPO / "tests_atlas" / "conftest.py").read_text()
    start = suite.index("@pytest.fixture\ndef check_claim(")
    pytester.makeconftest("import pytest\n\n\n" + suite[start : suite.index("    return check\n", start) + 17])
    result = pytester.runpytest_subprocess(*PLUGIN, "--atlas-runs", str(REPO / "reports" / "runs"), timeout=300)
    out = result.stdout.str()
    counts = result.parseoutcomes()
    assert result.ret == 0 and counts["passed"] >= 1 and "skipped" not in counts, out[-2000:]
    said = [line for line in out.splitlines() if line.startswith("atlas: ") and "deselected" in line]
    assert any("pass --atlas-profile ci to run them" in line for line in said), out[-2000:]
    assert sum(int(line.split()[1]) for line in said) == counts["deselected"], out[-2000:]
