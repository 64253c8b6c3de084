"""docs/EXTENDING.md's recipes, as the document writes them.

The code blocks are read from the document (a block follows ``<!-- file: PATH -->`` or ``<!-- snippet: NAME
-->``), so a recipe that stops working fails here. The experiment and hypothesis recipes run in a copy of
``atlas_core`` with the recipe's files added and nothing else changed: that the copy runs the new experiment,
shows it in the report, registers ``h010`` and decides it is what "one library file per recipe" means.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from atlas_core import AtlasError
from atlas_core.models import adapters
from atlas_core.models.offline import cache_root

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "EXTENDING.md"
_BLOCK = re.compile(r"<!-- (file|snippet): (\S+) -->\n```\w*\n(.*?)```", re.S)


def blocks() -> dict[str, str]:
    """path or snippet name -> the code block the document gives for it."""
    return {name: body for _, name, body in _BLOCK.findall(DOC.read_text())}


def test_the_document_holds_every_recipe_block():
    assert set(blocks()) == {
        "my_tasks/colours.json",
        "atlas_core/experiments/attn_ablation.py",
        "atlas_core/hypotheses/h010.py",
        "my_tests/test_h010.py",
        "my_claims.toml",
        "adapter",
    }
    library = [p for p in blocks() if p.startswith("atlas_core/")]
    assert library == ["atlas_core/experiments/attn_ablation.py", "atlas_core/hypotheses/h010.py"]  # one file each


# ---- 1. a task family ----------------------------------------------------------------------------
def test_recipe_task_family(tmp_path):
    from atlas_core.orchestrate import RunPlan, run_plan
    from atlas_core.runs import load_run

    (tmp_path / "my_tasks").mkdir()
    (tmp_path / "my_tasks" / "colours.json").write_text(blocks()["my_tasks/colours.json"])
    run_plan(
        RunPlan(
            model="tiny-qwen2",
            experiments=["clean"],
            profile="smoke",
            out=tmp_path / "run",
            device="cpu",
            families=["colours", "copying"],
            tasks=tmp_path / "my_tasks",
            progress=False,
            report=False,
        )
    )
    stats = load_run(tmp_path / "run").stats
    assert stats["clean.accuracy.colours"].n == 3 and "clean.accuracy.copying" in stats
    broken = blocks()["my_tasks/colours.json"].replace('"target": " blue"', '"target": ""')  # the perturbation
    (tmp_path / "my_tasks" / "colours.json").write_text(broken)
    with pytest.raises(AtlasError, match=r"colours.json: items\[0\].target \(id 'sky'\) must be a non-empty string"):
        run_plan(
            RunPlan(
                model="tiny-qwen2",
                experiments=["clean"],
                profile="smoke",
                out=tmp_path / "run2",
                device="cpu",
                families=["colours"],
                tasks=tmp_path / "my_tasks",
                progress=False,
                report=False,
            )
        )
    assert not (tmp_path / "run2").exists()  # refused before any work


# ---- 2 and 3. an experiment and a hypothesis, each one file in a copy of the package -------------------
@pytest.fixture(scope="module")
def extended(tmp_path_factory) -> Path:
    """A copy of atlas_core with the recipes' two library files added, and a project folder beside it."""
    root = tmp_path_factory.mktemp("extended")
    shutil.copytree(
        REPO / "atlas_core",
        root / "pkg" / "atlas_core",
        ignore=shutil.ignore_patterns("__pycache__", "baselines", "golden"),
    )
    for path, body in blocks().items():
        if path.startswith("atlas_core/"):
            (root / "pkg" / path).write_text(body)
        elif path.endswith((".py", ".toml")):
            (root / "project" / Path(path).name).parent.mkdir(parents=True, exist_ok=True)
            (root / "project" / Path(path).name).write_text(body)
    return root


def _env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", "ATLAS_TASKS_DIR")}
    env.update(PYTHONPATH=str(root / "pkg"), ATLAS_CACHE=str(cache_root()), OMP_NUM_THREADS="1")
    return env


RUN_THE_EXPERIMENT = textwrap.dedent("""
    import sys
    from pathlib import Path

    import atlas_core
    from atlas_core.orchestrate import RunPlan, run_plan
    from atlas_core.report import render_report
    from atlas_core.runs import load_run
    from atlas_core.spec import experiments, hypotheses

    out = Path(sys.argv[1])
    assert Path(atlas_core.__file__).is_relative_to(Path(sys.argv[2])), atlas_core.__file__
    assert list(experiments())[3] == "attn_ablation", list(experiments())  # order 25: after the MLP ablation
    assert hypotheses()["H010"].experiments == ("attn_ablation",)
    run_plan(RunPlan(model="tiny-qwen2", experiments=["attn_ablation"], profile="smoke", out=out, device="cpu",
                     families=["copying", "arithmetic"], progress=False, report=False))
    stats = load_run(out).stats
    page = render_report(out)
    print(stats["attn.top_layer_kl"].value, stats["attn.top_layer"].label, "Attention ablation" in page,
          'data-section="attn_ablation" class' in page or 'id="attn_ablation"' in page)
""")


def test_recipe_experiment_runs_stores_and_reports(extended):
    out = subprocess.run(
        [sys.executable, "-c", RUN_THE_EXPERIMENT, str(extended / "run"), str(extended / "pkg")],
        cwd=extended,
        env=_env(extended),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    kl, label, titled, section = out.stdout.split()
    assert float(kl) > 0 and label.startswith("L") and titled == "True" and section == "True"


@pytest.mark.parametrize("expected,outcome", [("supported", "1 passed"), ("rejected", "1 failed")])
def test_recipe_hypothesis_is_a_marked_claims_test(extended, expected, outcome):
    """The recipe's claim (supported on a pair of one model: no depth shift) passes; the same claim
    expecting rejection fails, naming it."""
    project = extended / "project"
    claims = project / "my_claims.toml"
    claims.write_text(blocks()["my_claims.toml"].replace('"supported"', f'"{expected}"'))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "test_h010.py",
            "-m",
            "h010",
            "--atlas-pair",
            "tiny-qwen2",
            "tiny-qwen2",
            "--atlas-profile",
            "smoke",
            "--atlas-claims",
            str(claims),
            "--atlas-baselines",
            "none",
            "--atlas-runs",
            str(extended / "runs"),
            "-p",
            "no:cacheprovider",
            "-q",
            "-rN",
        ],
        cwd=project,
        env=_env(extended),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert outcome in out.stdout, out.stdout[-3000:] + out.stderr[-2000:]
    if outcome == "1 failed":
        assert "H010 verdict SUPPORTED, expected REJECTED" in out.stdout


# ---- 4. an architecture --------------------------------------------------------------------------
def test_recipe_architecture_passes_the_conformance_matrix(monkeypatch):
    import transformers
    from transformers import AutoModelForCausalLM

    from atlas_core.conformance import run_checks
    from atlas_core.models.tiny import tiny_tokenizer

    tok = tiny_tokenizer()
    pad = len(tok) - 1
    config = transformers.Starcoder2Config(
        vocab_size=len(tok),
        pad_token_id=pad,
        eos_token_id=pad,
        bos_token_id=pad,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        initializer_range=0.2,
    )
    with pytest.raises(AtlasError, match="unsupported architecture 'starcoder2'.*Add an ArchAdapter"):
        adapters.check_supported(config)
    adapter = eval(blocks()["adapter"], {"ArchAdapter": adapters.ArchAdapter})  # the document's line, as written
    monkeypatch.setattr(adapters, "ADAPTERS", adapters.ADAPTERS + (adapter,))
    import torch

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    diffs = run_checks(model, tok)
    assert set(diffs) == {
        "identity",
        "noop",
        "batched",
        "left_padding",
        "prefix_reuse",
        "head_ablation",
        "skip",
        "exit_at",
        "steer_zero",
        "writes",
    }
    # the perturbation: an adapter naming the wrong module as the attention's write fails the writes check
    monkeypatch.setattr(
        adapters,
        "ADAPTERS",
        adapters.ADAPTERS[:-1]
        + (
            adapters.ArchAdapter("starcoder2", ("starcoder2",), attn_write="post_attention_layernorm", mlp_write="mlp"),
        ),
    )
    with pytest.raises(AssertionError, match="L0: delta vs attn \\+ mlp: max \\|difference\\|"):
        run_checks(model, tok, names=("writes",))
