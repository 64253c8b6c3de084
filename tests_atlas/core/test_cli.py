"""The ``atlas`` command: models list/fetch, info, and ``run`` refusing bad input before any work."""

from __future__ import annotations

import json

import pytest

from atlas_core import orchestrate, preflight
from atlas_core.cli import main
from atlas_core.cli_commands import INFO_PROMPTS
from atlas_core.integrity import sha256_bytes
from atlas_core.models import OFFLINE_MODELS, known_names
from atlas_core.models.offline import MARKER


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "atlas-cache"
    monkeypatch.setenv("ATLAS_CACHE", str(root))
    return root


def test_models_list_names_every_model(cache, capsys):
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert len(lines) == len(known_names())
    for name in known_names():
        assert sum(line.split()[0] == name for line in lines) == 1
    for name in OFFLINE_MODELS:
        row = next(line for line in lines if line.startswith(name + " "))
        assert "not fetched" in row
    assert "(default)" in next(line for line in lines if line.startswith("qwen2.5-coder-0.5b-instruct "))
    assert "built-in" in next(line for line in lines if line.startswith("tiny-qwen2 "))


def test_models_list_shows_cached_entries(cache, capsys):
    for name in ("gemma-3-270m", "qwen2.5-coder-1.5b-instruct"):
        entry = cache / name
        entry.mkdir(parents=True)
        (entry / "model.safetensors").write_bytes(b"weights")
        (entry / MARKER).write_text(
            json.dumps({"gguf_sha256": "0" * 64, "files": {"model.safetensors": sha256_bytes(b"weights")}})
        )
    (cache / "qwen2.5-coder-1.5b-instruct" / "model.safetensors").write_bytes(b"weighTs")  # damaged after caching
    (cache / "qwen2.5-coder-0.5b-instruct").mkdir()  # no marker: an incomplete entry is not "cached"
    assert main(["models", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    row = {line.split()[0]: line for line in lines}
    assert " cached " in row["gemma-3-270m"]
    assert " damaged " in row["qwen2.5-coder-1.5b-instruct"]
    assert "not fetched" in row["qwen2.5-coder-0.5b-instruct"]
    assert main(["models", "verify", "gemma-3-270m"]) == 0
    assert main(["models", "verify"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("atlas: error: cached model qwen2.5-coder-1.5b-instruct is damaged") and err.count("\n") == 1
    assert "atlas models fetch qwen2.5-coder-1.5b-instruct" in err


def test_models_fetch_unknown_name_exits_2(cache, capsys):
    assert main(["models", "fetch", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'nope'" in err and all(n in err for n in OFFLINE_MODELS)
    assert not cache.exists()


def test_info_prints_facts_and_predictions(capsys):
    assert main(["info", "--model", "tiny-qwen2", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    facts = json.loads(out[: out.index("}\n") + 1])
    assert facts["name"] == "tiny-qwen2" and facts["source"] == "synthetic"
    assert (facts["n_layers"], facts["n_heads"], facts["n_kv_heads"], facts["d_model"]) == (4, 4, 2, 64)
    assert (facts["dtype"], facts["device"]) == ("float32", "cpu")
    pred_lines = out[out.index("}\n") + 2 :].strip().splitlines()
    assert len(pred_lines) == len(INFO_PROMPTS)
    for prompt, line in zip(INFO_PROMPTS, pred_lines):
        assert line.startswith(repr(prompt) + " -> ")
        probs = [float(part.rsplit(" ", 1)[1]) for part in line.split(" -> ", 1)[1].split(", ")]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.001


def test_info_bad_dtype_exits_2(capsys):
    assert main(["info", "--model", "tiny-qwen2", "--dtype", "float8"]) == 2
    assert "unknown dtype 'float8'" in capsys.readouterr().err


@pytest.fixture
def no_load(monkeypatch):
    """``atlas run`` must reject bad input before it loads anything."""

    def refuse(*a, **k):
        raise AssertionError("the model was loaded before the input was validated")

    monkeypatch.setattr(orchestrate, "load", refuse)


@pytest.mark.parametrize(
    "extra, fix",
    [
        (["--model", "nope"], ["unknown model 'nope'", "qwen2.5-coder-0.5b-instruct", "tiny-qwen2", "local"]),
        (["--model", "./no/such/dir"], ["unknown model", "known models"]),
        (
            ["--model", "tiny-qwen2", "--experiments", "nope"],
            ["unknown experiment(s) nope", "choose from", "layer_ablation"],
        ),
        (["--model", "tiny-qwen2", "--experiments", "clean,steerin"], ["steerin", "steering"]),
        (["--model", "tiny-qwen2", "--experiments", ","], ["no experiments selected"]),
        (["--model", "tiny-qwen2", "--profile", "nope"], ["unknown profile 'nope'", "smoke", "ci", "full"]),
        (["--model", "tiny-qwen2", "--families", "nope"], ["'nope'", "known families"]),
        (["--model", "tiny-qwen2", "--seeds", "0"], ["--seeds must be at least 1"]),
        (["--model", "tiny-qwen2", "--seed", "-5"], ["--seed -5: seeds run from 0 to", "pass a seed in that range"]),
        (["--model", "tiny-qwen2", "--seed", str(2**70)], [f"--seed {2**70}: seeds run from 0 to {2**63 - 1}"]),
        (["--model", "tiny-qwen2", "--seed", str(2**63 - 1), "--seeds", "2"], ["with --seeds 2: seeds run from 0"]),
        (
            [
                "--model",
                "tiny-qwen2",
                "--experiments",
                "clean,layer_ablation,steering",
                "--families",
                "copying,arithmetic",
            ],
            ["experiment steering needs task family 'factual_recall'", "add it to --families or leave steering out"],
        ),
        (
            ["--model", "tiny-qwen2", "--experiments", "knockout", "--families", "copying"],
            ["experiment knockout needs task family 'factual_recall'"],
        ),
        (["--model", "tiny-qwen2", "--max-memory", "cpu=1GiB"], ["--max-memory is given without --device-map"]),
        (
            ["--model", "tiny-qwen2", "--ray-workers", "3"],
            ["--ray-workers given without --ray, the flag it belongs to"],
        ),
        (
            ["--model", "tiny-qwen2", "--ray-threads", "2", "--ray-shard", "4"],
            ["--ray-threads, --ray-shard given without --ray, the flag they belong to"],
        ),
    ],
)
def test_run_rejects_bad_input_and_writes_nothing(extra, fix, tmp_path, capsys, no_load, cache):
    out = tmp_path / "run"
    profile = [] if "--profile" in extra else ["--profile", "smoke"]
    assert main(["run", *extra, *profile, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("atlas: error: ")
    for word in fix:
        assert word in err
    assert not out.exists()
    assert not cache.exists()


def test_run_usage_errors_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", "--seeds", "many", "--out", str(tmp_path / "run")])
    assert exc.value.code == 2
    assert "invalid int value" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "case", ["out-is-file", "out-read-only", "device", "empty-gguf", "random-gguf", "broken-config"]
)
def test_run_checks_everything_it_can_before_loading_the_model(case, tmp_path, capsys, no_load, monkeypatch):
    out, model, extra = tmp_path / "run", "tiny-qwen2", []
    if case == "out-is-file":
        out.write_text("not a folder")
    elif case == "out-read-only":
        monkeypatch.setattr(preflight.os, "access", lambda path, mode: False)  # as on a read-only mount
    elif case == "device":
        extra = ["--device", "tpu:3"]
    elif case in ("empty-gguf", "random-gguf"):
        model = str(tmp_path / "m.gguf")
        (tmp_path / "m.gguf").write_bytes(b"" if case == "empty-gguf" else bytes(range(256)) * 4)
    else:
        model = str(tmp_path / "folder")
        (tmp_path / "folder").mkdir()
        (tmp_path / "folder" / "config.json").write_text('{"model_type": "qwen2", "hidden')
    assert (
        main(["run", "--model", model, "--profile", "smoke", "--experiments", "clean", "--out", str(out), *extra]) == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("atlas: error: ") and err.count("\n") == 1, err
    expected = {
        "out-is-file": "is a file",
        "out-read-only": "cannot write",
        "device": "tpu:3",
        "empty-gguf": "empty",
        "random-gguf": "no GGUF magic",
        "broken-config": "config.json is damaged",
    }[case]
    assert expected in err


def test_ctrl_c_prints_one_line_saying_how_to_resume(monkeypatch, capsys, tmp_path):
    def interrupted(plan):
        raise KeyboardInterrupt

    monkeypatch.setattr(orchestrate, "run_plan", interrupted)
    assert main(["run", "--model", "tiny-qwen2", "--out", str(tmp_path / "run")]) == 130
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "run the same command again to resume" in err


def test_an_environment_failure_is_one_error_line(monkeypatch, capsys, tmp_path):
    def disk_full(plan):
        raise OSError(28, "No space left on device", str(tmp_path / "run" / "layer_ablation.json"))

    monkeypatch.setattr(orchestrate, "run_plan", disk_full)
    assert main(["run", "--model", "tiny-qwen2", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("atlas: error: [Errno 28] No space left on device") and err.count("\n") == 1


LONG = {
    "family": "long",
    "description": "one prompt past the tiny models' 512 positions",
    "items": [
        {"id": "short", "prompt": "The sky is", "target": " blue"},
        {"id": "essay", "prompt": "word " * 600 + "The sky is", "target": " blue"},
    ],
    "contrast": [{"prompt": "The car is", "target": " fast"}],
}


@pytest.mark.parametrize("model", ["tiny-gpt2", "tiny-qwen2"])  # GPT-2: an IndexError; Qwen2 (rotary): silent
def test_a_prompt_past_the_models_positions_is_refused_naming_the_item_before_any_experiment(
    model, tmp_path, capsys, monkeypatch
):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "long.json").write_text(json.dumps(LONG))
    monkeypatch.setattr(orchestrate, "_run_job", lambda *a: pytest.fail("an experiment ran"))
    out = tmp_path / "run"
    assert (
        main(
            [
                "run",
                "--model",
                model,
                "--profile",
                "smoke",
                "--experiments",
                "clean",
                "--device",
                "cpu",
                "--tasks",
                str(tmp_path / "mine"),
                "--families",
                "long",
                "--out",
                str(out),
                "--no-report",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert (
        err.startswith(
            f"atlas: error: {tmp_path / 'mine' / 'long.json'}: items[1] (id 'essay'): the prompt and its target are "
        )
        and err.count("\n") == 1
    ), err
    assert "past the model's 512 positions" in err and "shorten the prompt" in err
    assert not out.exists()


def test_report_of_a_folder_whose_records_are_gone_is_an_error_not_a_finished_run(tmp_path, capsys):
    from atlas_core.orchestrate import RunPlan, run_plan

    out = tmp_path / "run"
    run_plan(
        RunPlan(
            model="tiny-qwen2",
            experiments=["clean"],
            profile="smoke",
            out=out,
            device="cpu",
            families=["copying"],
            progress=False,
            report=False,
        )
    )
    assert main(["report", str(out)]) == 0  # complete: drawn
    capsys.readouterr()
    (out / "clean.json").unlink()  # a manifest alone, listing a finished experiment
    (out / "atlas.html").unlink()
    assert main(["report", str(out)]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith(
            f"atlas: error: run folder {out}: its manifest lists 1 finished experiment(s) whose records "
            "are missing (clean)"
        )
        and err.count("\n") == 1
    )
    assert f"atlas run --experiments clean --out {out}" in err
    assert not (out / "atlas.html").exists()
