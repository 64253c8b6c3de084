"""The shipped task families: they load, match the generator byte for byte, and validate input."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from atlas_core import tasks
from atlas_core.data import BUILTIN_TASKS_DIR
from atlas_core.tasks import (
    FAMILIES,
    TaskFamily,
    TaskItem,
    load_families,
    load_family,
    target_token_id,
    tasks_dir,
)

REPO = Path(__file__).resolve().parents[2]
FIXTURES = BUILTIN_TASKS_DIR
GENERATOR = REPO / "fixtures" / "tasks" / "generate.py"
QWEN_TOKENIZER = Path.home() / ".cache/atlas/qwen2.5-coder-0.5b-instruct/tokenizer.json"


@pytest.fixture
def repo_tasks(monkeypatch):
    """Read the committed fixtures whatever $ATLAS_TASKS_DIR says outside the test."""
    monkeypatch.delenv(tasks.TASKS_DIR_ENV, raising=False)


def _write_family(directory: Path, name: str, items=None, contrast=None) -> Path:
    items = items if items is not None else [{"prompt": "a b a", "target": " b", "id": "x"}]
    contrast = contrast if contrast is not None else [{"prompt": "a b c", "target": " d"}]
    path = directory / f"{name}.json"
    path.write_text(json.dumps({"family": name, "description": "d", "items": items, "contrast": contrast}))
    return path


def test_families_order():
    assert FAMILIES == (
        "arithmetic",
        "code_syntax",
        "copying",
        "delimiter_tracking",
        "factual_recall",
        "json_schema",
        "dead_code",
        "code_semantics",
    )


def test_tasks_dir_default_and_env(monkeypatch, tmp_path):
    monkeypatch.delenv(tasks.TASKS_DIR_ENV, raising=False)
    assert tasks_dir() == FIXTURES
    monkeypatch.setenv(tasks.TASKS_DIR_ENV, str(tmp_path))
    assert tasks_dir() == tmp_path


@pytest.mark.parametrize("name", FAMILIES)
def test_family_loads(repo_tasks, name):
    fam = load_family(name)
    assert isinstance(fam, TaskFamily) and fam.name == name and fam.description
    assert len(fam.items) >= 32 and len(fam.contrast) >= 32
    assert fam.sha256 == hashlib.sha256((FIXTURES / f"{name}.json").read_bytes()).hexdigest()
    prompts = [it.prompt for it in fam.items + fam.contrast]
    assert len(set(prompts)) == len(prompts), "a prompt is repeated"
    ids = [it.id for it in fam.items]
    assert all(ids) and len(set(ids)) == len(ids)
    assert all(it.prompt and it.target for it in fam.items + fam.contrast)


def test_study_prompts_verbatim(repo_tasks):
    items = load_family("factual_recall").items
    assert items[0] == TaskItem("The capital of Italy is ", "Rome", "study_italy")
    assert items[1] == TaskItem("The capital of Spain is ", "Madrid", "study_spain")
    by_id = {it.id: it for it in items}
    assert by_id["italy"] == TaskItem("The capital of Italy is", " Rome", "italy")
    assert by_id["france"] == TaskItem("The capital of France is", " Paris", "france")


def test_generator_is_deterministic_and_matches_fixtures(tmp_path):
    out = tmp_path / "tasks"
    subprocess.run([sys.executable, str(GENERATOR), "--out", str(out)], check=True, capture_output=True, timeout=60)
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{n}.json" for n in FAMILIES)
    for name in FAMILIES:
        fresh = (out / f"{name}.json").read_bytes()
        committed = (FIXTURES / f"{name}.json").read_bytes()
        assert fresh == committed, f"{name}.json differs from a fresh generate.py run"


def test_unknown_family_lists_known_names(repo_tasks):
    with pytest.raises(ValueError) as err:
        load_family("poetry")
    assert "poetry" in str(err.value)
    for name in FAMILIES:
        assert name in str(err.value)


def test_names_checked_before_any_file_is_read(monkeypatch, tmp_path):
    monkeypatch.setenv(tasks.TASKS_DIR_ENV, str(tmp_path))  # holds no files at all
    with pytest.raises(ValueError, match="poetry") as err:
        load_families(["arithmetic", "poetry"])
    assert "factual_recall" in str(err.value)
    with pytest.raises(FileNotFoundError, match="generate.py"):
        load_families(["arithmetic"])


def test_empty_selection_is_an_error(repo_tasks):
    with pytest.raises(ValueError, match="no task families selected"):
        load_families([])


def test_load_families_defaults_and_subset(repo_tasks):
    everything = load_families()
    assert tuple(everything) == FAMILIES
    small = load_families(["copying", "arithmetic", "copying"], n_items=3)
    assert list(small) == ["copying", "arithmetic"]
    full = everything["copying"]
    assert small["copying"].items == full.items[:3]
    assert small["copying"].contrast == full.contrast[:3]
    assert small["copying"].sha256 == full.sha256
    assert load_families("dead_code")["dead_code"] == everything["dead_code"]
    with pytest.raises(ValueError):
        load_families(["copying"], n_items=0)


def test_subset(repo_tasks):
    fam = load_family("json_schema")
    assert fam.subset(None) is fam
    five = fam.subset(5)
    assert five.items == fam.items[:5] and five.contrast == fam.contrast[:5]
    assert five == fam.subset(5)  # deterministic
    assert fam.subset(10_000) == fam
    with pytest.raises(ValueError):
        fam.subset(0)


@pytest.mark.parametrize(
    "items, contrast, needle",
    [
        ([{"prompt": "p", "target": "", "id": "bad_one"}], None, "bad_one"),
        ([{"prompt": "", "target": " t", "id": "no_prompt"}], None, "no_prompt"),
        ([{"prompt": "p", "target": " t"}], None, "items[0].id is required"),
        (None, [{"prompt": "p", "target": None}], "contrast[0]"),
        ([], None, "items must hold at least 1 entry"),
    ],
)
def test_validation_names_file_and_item(monkeypatch, tmp_path, items, contrast, needle):
    path = _write_family(tmp_path, "copying", items, contrast)
    monkeypatch.setenv(tasks.TASKS_DIR_ENV, str(tmp_path))
    with pytest.raises(ValueError) as err:
        load_family("copying")
    assert str(path) in str(err.value) and needle in str(err.value)


def test_wrong_family_field(monkeypatch, tmp_path):
    path = _write_family(tmp_path, "copying")
    path.rename(tmp_path / "arithmetic.json")
    monkeypatch.setenv(tasks.TASKS_DIR_ENV, str(tmp_path))
    with pytest.raises(ValueError, match="expected 'arithmetic'"):
        load_family("arithmetic")


class StubTokenizer:
    """One id per character; records the keyword arguments it was called with."""

    def __init__(self, as_encoding: bool = False):
        self.calls = []
        self.as_encoding = as_encoding

    def encode(self, text, **kwargs):
        self.calls.append(kwargs)
        ids = [ord(c) for c in text]
        if self.as_encoding:
            return type("Encoding", (), {"ids": ids})()
        return ids


def test_target_token_id_on_stub():
    tok = StubTokenizer()
    assert target_token_id(tok, " Rome") == ord(" ")
    assert target_token_id(tok, "12") == ord("1")
    assert all(call == {"add_special_tokens": False} for call in tok.calls)
    assert target_token_id(StubTokenizer(as_encoding=True), "Rome") == ord("R")
    with pytest.raises(ValueError, match="''"):
        target_token_id(tok, "")

    class Empty:
        def encode(self, text, add_special_tokens=True):
            return []

    with pytest.raises(ValueError, match="'zz'"):
        target_token_id(Empty(), "zz")


@pytest.mark.skipif(not QWEN_TOKENIZER.exists(), reason="Qwen2.5 tokenizer not cached")
def test_prompts_fit_the_qwen_tokenizer(repo_tasks):
    """4-20 prompt tokens; the target's first token is what the full text tokenizes to next."""
    tokenizers = pytest.importorskip("tokenizers")
    tok = tokenizers.Tokenizer.from_file(str(QWEN_TOKENIZER))

    def enc(text):
        return tok.encode(text, add_special_tokens=False).ids

    for fam in load_families().values():
        for it in fam.items + fam.contrast:
            p_ids = enc(it.prompt)
            first = target_token_id(tok, it.target)
            assert 4 <= len(p_ids) <= 20, (fam.name, it)
            assert tok.decode([first]).strip(), (fam.name, it)  # not whitespace only
            if not it.id.startswith("study_"):
                assert enc(it.prompt + it.target)[: len(p_ids) + 1] == p_ids + [first], (fam.name, it)
