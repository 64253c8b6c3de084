"""The pytest plugin checks its options once at start (usage errors), records a failed model load once
instead of retrying it in every test, and its leak guard removes the hooks it reports, of every kind, on
every model the session loaded (pytester: the plugin in a subprocess)."""

from __future__ import annotations

import pytest

from atlas_core import AtlasError

PLUGIN = ["-p", "atlas_core.pytest_plugin", "-p", "no:cacheprovider"]


@pytest.mark.parametrize(
    "option, message",
    [
        (["--atlas-baselines", "/nonexistent/baselines"], "--atlas-baselines /nonexistent/baselines: no such folder"),
        (["--atlas-device", "tpu:3"], "--atlas-device: unknown device 'tpu:3'"),
        (["--atlas-model", "empty.gguf"], "empty.gguf is not a GGUF file (empty)"),
        (["--atlas-pair", "tiny-qwen2", "nope"], "unknown model 'nope'"),
        (["--atlas-claims", "nowhere.toml"], "--atlas-claims nowhere.toml: no such file"),
        (["--atlas-tasks", "no-tasks"], "--atlas-tasks: task folder no-tasks does not exist"),
        (["--atlas-tasks", "bad-tasks"], "--atlas-tasks: bad-tasks/mine.json: not valid UTF-8 JSON"),
        (["--atlas-runs", "a-file"], "the run store"),
        (["--atlas-screen", "bogus"], "--atlas-screen bogus: unknown method; methods are atp"),
        (["--atlas-model", "tiny-qwen2", "--atlas-baseline", "damaged-run"], "layer_ablation.json is damaged"),
    ],
)
def test_bad_option_values_are_one_usage_error_at_start(option, message, pytester):
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    (pytester.path / "a-file").write_text("not a folder")
    (pytester.path / "empty.gguf").write_bytes(b"")
    (pytester.path / "damaged-run").mkdir()
    (pytester.path / "damaged-run" / "layer_ablation.json").write_text('{"experiment": "layer_abl')
    (pytester.path / "bad-tasks").mkdir()
    (pytester.path / "bad-tasks" / "mine.json").write_text('{"family": "mine"')
    result = pytester.runpytest_inprocess(*PLUGIN, *option)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in result.stderr.str()
    assert "passed" not in result.stdout.str()


def test_a_failed_model_load_is_recorded_once_and_not_retried(monkeypatch, load_cached):
    import atlas_core.models as models

    calls = []

    def failing(name, **kwargs):
        calls.append(name)
        raise AtlasError(f"could not load hub model {name!r}")

    monkeypatch.setattr(models, "load", failing)
    name = "nobody/load-once-test"  # no other test loads it: the recorded failure harms none
    for _ in range(3):
        with pytest.raises(AtlasError, match="could not load hub model 'nobody/load-once-test'"):
            load_cached(name)
    assert calls == [name]


def test_a_model_that_fails_to_load_fails_every_test_needing_it_after_one_attempt(pytester, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pytester.makepyfile(
        countload="""
        import atlas_core.orchestrate as o
        real = o.load
        def counting(*a, **k):
            with open("loads.txt", "a") as fh:
                fh.write("x")
            return real(*a, **k)
        o.load = counting
    """
    )
    pytester.makepyfile(
        test_needs="""
        import pytest
        @pytest.mark.parametrize("i", range(4))
        def test_needs(atlas, i):
            atlas.needed = lambda: {"nobody/nothing": {"clean"}}
            atlas.ensure("nobody/nothing")
    """
    )
    result = pytester.runpytest_subprocess(
        *PLUGIN,
        "-p",
        "countload",
        "--atlas-model",
        "nobody/nothing",
        "--atlas-baselines",
        "none",
        "--atlas-runs",
        str(pytester.path / "runs"),
    )
    result.assert_outcomes(failed=4)
    assert (pytester.path / "loads.txt").read_text() == "x"  # one load attempt for four tests
    assert result.stdout.str().count("could not load hub model 'nobody/nothing'") >= 4


def test_the_leak_guard_removes_every_hook_kind_it_reports(pytester):
    pytester.makepyfile(
        test_leaks="""
        import pytest
        import torch
        from atlas_core.hooks import count_hooks, global_hooks
        from atlas_core.models import load

        KEEP = []

        @pytest.fixture(scope="module")
        def tiny():
            return load("tiny-qwen2", device="cpu")

        def test_backward_hook_left(tiny):
            tiny.model.model.layers[0].register_full_backward_hook(lambda *a: None)

        def test_forward_hook_left(tiny):
            tiny.model.model.layers[1].register_forward_hook(lambda *a: None)

        def test_the_next_test_starts_clean(tiny):
            assert count_hooks(tiny.model) == 0

        def test_global_hook_left():
            torch.nn.modules.module.register_module_forward_hook(lambda *a: None)

        def test_globals_clean_again():
            assert global_hooks() == []

        def test_hook_on_a_model_loaded_outside_the_fixtures():
            lm = load("tiny-qwen2", device="cpu")
            KEEP.append(lm)
            lm.model.lm_head.register_forward_pre_hook(lambda *a: None)

        def test_that_model_is_clean_again():
            assert count_hooks(KEEP[0].model) == 0
    """
    )
    # -rN: no short summary, whose lines repeat each message untruncated where CI is set
    result = pytester.runpytest_subprocess(*PLUGIN, "-q", "-rN")
    result.assert_outcomes(passed=7, errors=4)
    out = result.stdout.str()
    # the two on the fixture's model and the one on the model loaded outside it, each named by its load
    assert out.count("hook(s) left on tiny-qwen2 after the test (removed now)") == 3
    assert "1 global module hook(s) left" in out
