"""User task families (``atlas run --tasks DIR``, ``--atlas-tasks DIR``): added to the built-in ones, selectable
with ``--families``, hashed into the experiment configs like them, and every bad input an AtlasError naming the
file (and item) before any model loads. The perturbation test starts from a valid file and breaks it one way at
a time."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import pytest

from atlas_core import AtlasError, tasks
from atlas_core.cli import main
from atlas_core.models import LoadedModel
from atlas_core.orchestrate import RunPlan, run_plan
from atlas_core.tasks import FAMILIES, check_targets, load_families, task_files

VALID = {
    "family": "colours",
    "description": "a colour after its usual object",
    "items": [
        {"id": "sky", "prompt": "The sky is", "target": " blue"},
        {"id": "grass", "prompt": "The grass is", "target": " green"},
    ],
    "contrast": [{"prompt": "The car is", "target": " fast"}],
}


@pytest.fixture(autouse=True)
def _builtin_tasks(monkeypatch):
    monkeypatch.delenv(tasks.TASKS_DIR_ENV, raising=False)


def write(folder: Path, doc, name: str = "colours") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def test_a_user_family_joins_the_builtin_ones_and_can_be_selected(tmp_path):
    path = write(tmp_path / "mine", VALID)
    everything = load_families(user_dir=tmp_path / "mine", n_items=1)
    assert tuple(everything) == FAMILIES + ("colours",)
    fam = everything["colours"]
    assert fam.prompts == ["The sky is"] and fam.path == path and fam.description == VALID["description"]
    assert tuple(load_families(["colours", "copying"], user_dir=tmp_path / "mine")) == ("colours", "copying")
    assert tuple(load_families()) == FAMILIES  # without the folder, the built-in families alone
    with pytest.raises(AtlasError, match="unknown task family 'colours'; known families: arithmetic"):
        load_families(["colours"])


def _broken(case: str):
    """VALID broken one way: (file content, file name, what the error must say)."""
    doc = copy.deepcopy(VALID)
    if case == "empty prompt":
        doc["items"][1]["prompt"] = ""
        return doc, "colours", ["items[1].prompt (id 'grass') must be a non-empty string"]
    if case == "missing target":
        del doc["items"][0]["target"]
        return doc, "colours", ["items[0].target (id 'sky') is required and missing"]
    if case == "empty target":
        doc["items"][0]["target"] = ""
        return doc, "colours", ["items[0].target (id 'sky') must be a non-empty string"]
    if case == "duplicate ids":
        doc["items"][1]["id"] = "sky"
        return doc, "colours", ["items has repeated ids ['sky']"]
    if case == "unknown top-level field":
        doc["notes"] = "mine"
        return doc, "colours", ["notes is not a known field (allowed here: family, description, items, contrast)"]
    if case == "unknown item field":
        doc["items"][0]["answer"] = " blue"
        return doc, "colours", ["items[0].answer (id 'sky') is not a known field (allowed here: prompt, target, id)"]
    if case == "malformed JSON":
        return json.dumps(doc)[:-2], "colours", ["not valid UTF-8 JSON", '"items": [{"id", "prompt", "target"}']
    if case == "whitespace-only target":  # scored by its first token, a space that " three" shares
        doc["items"][1]["target"] = "  "
        return doc, "colours", ["items[1].target (id 'grass') must not be blank (whitespace only), got '  '"]
    if case == "lone surrogate":  # json decodes "\\ud800" to a str no tokenizer takes (a TypeError after the load)
        return (
            json.dumps(doc).replace(" blue", "\\ud800"),
            "colours",
            ["items[0].target (id 'sky') holds a lone surrogate (not valid Unicode text), got '\\ud800'"],
        )
    if case == "family field differs from the file name":
        doc["family"] = "colors"
        return doc, "colours", ["'family' is 'colors', expected 'colours'"]
    if case == "no contrast":
        del doc["contrast"]
        return doc, "colours", ["contrast is required and missing"]
    if case == "name of a built-in family":
        doc["family"] = "copying"
        return (
            doc,
            "copying",
            ["task family 'copying' of", "collides with the built-in", str(tasks.tasks_dir() / "copying.json")],
        )
    if case == "a dot in the name":
        doc["family"] = "my.colours"
        return doc, "my.colours", ["a family name holds only letters, digits, '_' and '-'"]
    raise AssertionError(case)


CASES = [
    "empty prompt",
    "missing target",
    "empty target",
    "whitespace-only target",
    "lone surrogate",
    "duplicate ids",
    "unknown top-level field",
    "unknown item field",
    "malformed JSON",
    "family field differs from the file name",
    "no contrast",
    "name of a built-in family",
    "a dot in the name",
]


@pytest.mark.parametrize("case", CASES)
def test_each_perturbation_of_a_valid_family_is_an_error_naming_the_file(case, tmp_path):
    folder = tmp_path / "mine"
    write(folder, VALID)
    assert "colours" in load_families(user_dir=folder)  # valid as written
    doc, name, needles = _broken(case)
    (folder / "colours.json").unlink()
    path = write(folder, doc, name)
    with pytest.raises(AtlasError) as err:
        load_families(user_dir=folder)
    message = str(err.value)
    assert str(path) in message, message
    for needle in needles:
        assert needle in message, message


def test_a_broken_family_fails_even_when_not_selected(tmp_path):
    write(tmp_path, VALID)
    write(tmp_path, {**VALID, "family": "other", "items": []}, "other")
    with pytest.raises(AtlasError, match=r"other\.json: items must hold at least 1 entry"):
        load_families(["colours"], user_dir=tmp_path)


@pytest.mark.parametrize(
    "case, needle",
    [
        ("missing", "task folder {d} does not exist; pass a folder of <family>.json files"),
        ("empty", "task folder {d} holds no <family>.json file; add one file per family"),
        ("a file", "task folder {d} is not a folder"),
    ],
)
def test_the_folder_itself(case, needle, tmp_path):
    d = tmp_path / "tasks"
    if case == "empty":
        d.mkdir()
        (d / "README.md").write_text("not a family")
    elif case == "a file":
        d.write_text("{}")
    with pytest.raises(AtlasError) as err:
        task_files(d)
    assert needle.format(d=d) in str(err.value)


class NoTokens:
    """A tokenizer that encodes ``empty`` to no tokens and anything else to one id per character."""

    def __init__(self, inner=None, empty: str = " blue"):
        self.inner, self.empty = inner, empty

    def encode(self, text, add_special_tokens=True):
        if text == self.empty:
            return []
        return self.inner.encode(text, add_special_tokens=add_special_tokens) if self.inner else [ord(c) for c in text]

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_a_target_without_tokens_names_file_item_and_target(tmp_path):
    path = write(tmp_path, VALID)
    families = load_families(["colours"], user_dir=tmp_path)
    check_targets(families, NoTokens(empty="nothing of these"), "stub")  # every target has tokens: passes
    with pytest.raises(AtlasError) as err:
        check_targets(families, NoTokens(), "stub")
    assert str(err.value) == (
        f"{path}: items[0] (id 'sky'): target ' blue' tokenizes to nothing with stub's "
        "tokenizer; give a target of at least one token"
    )


def test_the_run_checks_targets_with_its_tokenizer_before_the_first_experiment(tmp_path, monkeypatch, tiny):
    import atlas_core.orchestrate as orchestrate

    write(tmp_path / "mine", VALID)
    monkeypatch.setattr(
        orchestrate, "load", lambda *a, **k: LoadedModel(tiny.model, NoTokens(tiny.tokenizer), tiny.info)
    )
    out = tmp_path / "run"
    with pytest.raises(
        AtlasError,
        match=r"colours\.json: items\[0\] \(id 'sky'\): target ' blue' tokenizes to "
        r"nothing with tiny-qwen2's tokenizer",
    ):
        run_plan(
            RunPlan(
                model="tiny-qwen2",
                experiments=["clean"],
                profile="smoke",
                out=out,
                tasks=tmp_path / "mine",
                progress=False,
                report=False,
            )
        )
    assert not out.exists()  # nothing ran, nothing was written


def test_atlas_run_with_a_user_family_measures_it_and_hashes_it(tmp_path, capsys):
    from atlas_core.claims import load_run

    path = write(tmp_path / "mine", VALID)
    out = tmp_path / "run"
    args = [
        "run",
        "--model",
        "tiny-qwen2",
        "--profile",
        "smoke",
        "--experiments",
        "clean",
        "--no-report",
        "--tasks",
        str(tmp_path / "mine"),
        "--families",
        "colours,copying",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    run = load_run(out)
    assert {"clean.accuracy.colours", "clean.accuracy.copying"} <= set(run.stats)
    record = json.loads((out / "clean.json").read_text())
    assert record["config"]["families"]["colours"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert set(record["config"]["families"]) == {"colours", "copying"}


@pytest.mark.parametrize("case", ["malformed JSON", "name of a built-in family"])
def test_atlas_run_refuses_bad_tasks_before_loading_the_model(case, tmp_path, capsys, monkeypatch):
    import atlas_core.orchestrate as orchestrate

    doc, name, needles = _broken(case)
    write(tmp_path / "mine", doc, name)
    monkeypatch.setattr(orchestrate, "load", lambda *a, **k: pytest.fail("the model loaded before the check"))
    assert (
        main(
            [
                "run",
                "--model",
                "tiny-qwen2",
                "--profile",
                "smoke",
                "--experiments",
                "clean",
                "--tasks",
                str(tmp_path / "mine"),
                "--out",
                str(tmp_path / "run"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("atlas: error: ") and all(n in err for n in needles), err
    assert not (tmp_path / "run").exists()


def test_experiments_built_on_a_builtin_family_run_beside_user_families(tmp_path):
    """Steering and knockout read factual_recall by name; a user family beside it changes nothing of that."""
    from atlas_core.claims import load_run

    write(tmp_path / "mine", VALID)
    run_plan(
        RunPlan(
            model="tiny-qwen2",
            experiments=["steering", "knockout"],
            profile="smoke",
            out=tmp_path / "run",
            tasks=tmp_path / "mine",
            progress=False,
            report=False,
        )
    )
    for name in ("steering", "knockout"):
        record = json.loads((tmp_path / "run" / f"{name}.json").read_text())
        assert "colours" in record["config"]["families"], name
    assert any(s.startswith("knockout.") for s in load_run(tmp_path / "run").stats)
