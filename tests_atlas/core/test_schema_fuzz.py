"""Every kind of file Atlas reads, broken at random: the reader answers with an AtlasError naming the file and
the broken field's path, and nothing else (no traceback, no silent acceptance).

Each kind starts from a valid document and gets one mutation drawn by hypothesis: a declared field given a
value of another JSON type, a required field deleted, an unknown field added to a closed table, or a value
of the right type that is still wrong (a blank or surrogate text, a record schema of 99 or "2"). What is
typed, required and closed is written here, from the file formats, independently of the validator under test.
The last tests mutate the validator and show the fuzz catching it."""

from __future__ import annotations

import copy
import json
import sys
import tempfile
from fnmatch import fnmatchcase
from pathlib import Path

import pytest
import tomlkit
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import atlas_core.validation as validation
from atlas_core import AtlasError, golden
from atlas_core.claims import load_claims
from atlas_core.report.study import load_study
from atlas_core.results import ExperimentRecord, read_manifest
from atlas_core.tasks import read_family
from atlas_core.validation import field_path

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup  # hypothesis's backport on 3.10

NUM, INT, STR, LIST, DICT, NULL, BOOL = "num", "int", "str", "list", "dict", "null", "bool"
CLAIMS_DOC = {
    "meta": {"models": ["tiny-qwen2"], "profile": "smoke", "source": "measured"},
    "thresholds": {"H003": {"min_ratio": 1.0}},
    "claim": [
        {
            "id": "kl",
            "model": "tiny-qwen2",
            "statistic": "hub.top_layer_kl",
            "kind": "value",
            "expected": 2.0,
            "tolerance": 0.5,
            "description": "the hub",
        },
        {"id": "acc", "model": "tiny-qwen2", "statistic": "clean.accuracy", "kind": "at_least", "threshold": 0.1},
    ],
}
CLAIM_TYPES = {
    "id": STR,
    "model": STR,
    "statistic": STR,
    "kind": STR,
    "expected": NUM,
    "tolerance": NUM,
    "threshold": NUM,
    "description": STR,
}


class Kind:
    """One kind of file: a valid document, how it is written and read, and what of it is typed, required,
    closed, and wrong while well typed (path patterns: ``*`` is any key or index)."""

    def __init__(self, name, doc, write, load, typed, required, closed, wrong=None):
        self.name, self.doc, self.write, self.load = name, doc, write, load
        self.typed, self.required, self.closed, self.wrong = typed, required, closed, wrong or {}

    def paths(self):
        """Every concrete path of the valid document (``("claim", 0, "id")``)."""
        out = []

        def walk(node, path):
            out.append(path)
            items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
            for k, v in items:
                walk(v, path + (k,))

        walk(self.doc, ())
        return out


def _match(path, pattern: str) -> bool:
    parts = pattern.split(".") if pattern else []
    return len(parts) == len(path) and all(fnmatchcase(str(p), q) for p, q in zip(path, parts))


def _lookup(table: dict, path):
    return next((v for pat, v in table.items() if _match(path, pat)), None)


def _json(doc, path: Path):
    path.write_text(json.dumps(doc))


def _toml(doc, path: Path):
    path.write_text(tomlkit.dumps(doc))


TEXT_WRONG = ["", "   ", "\n\t"]
SURROGATE = ["\ud800", "a\udfffb"]
KINDS = [
    Kind(
        "claims",
        CLAIMS_DOC,
        _toml,
        load_claims,
        typed={
            "meta": DICT,
            "meta.models": LIST,
            "meta.models.*": STR,
            "meta.profile": STR,
            "meta.source": STR,
            "thresholds": DICT,
            "thresholds.*": DICT,
            "claim": LIST,
            "claim.*": DICT,
            **{f"claim.*.{k}": t for k, t in CLAIM_TYPES.items()},
        },
        required=["claim.*.id", "claim.*.statistic", "claim.0.expected", "claim.0.tolerance", "claim.1.threshold"],
        closed=["", "claim.*"],
        wrong={
            "claim.*.id": TEXT_WRONG,
            "claim.*.model": TEXT_WRONG,
            "claim.*.statistic": TEXT_WRONG,
            "claim.*.kind": ["guess", "VALUE"],
            "meta.source": ["rumour"],
            "claim.0.tolerance": [-0.5],
        },
    ),
    Kind(
        "tasks",
        {
            "family": "colours",
            "description": "colours",
            "items": [
                {"id": "sky", "prompt": "The sky is", "target": " blue"},
                {"id": "grass", "prompt": "The grass is", "target": " green"},
            ],
            "contrast": [{"prompt": "The car is", "target": " fast"}],
        },
        _json,
        lambda p: read_family(p, "colours"),
        typed={
            "family": STR,
            "description": STR,
            "items": LIST,
            "items.*": DICT,
            "items.*.*": STR,
            "contrast": LIST,
            "contrast.*": DICT,
            "contrast.*.*": STR,
        },
        required=[
            "family",
            "items",
            "contrast",
            "items.*.id",
            "items.*.prompt",
            "items.*.target",
            "contrast.*.prompt",
            "contrast.*.target",
        ],
        closed=["", "items.*", "contrast.*"],
        wrong={
            "items.*.*": TEXT_WRONG + SURROGATE,
            "contrast.*.*": TEXT_WRONG + SURROGATE,
            "items": [[]],
            "contrast": [[]],
        },
    ),
    Kind(
        "record",
        {
            "experiment": "clean",
            "seed": 0,
            "config": {"base_seed": 0},
            "config_hash": "0123abcd",
            "provenance": {"finished": "2026-01-01T00:00:00Z"},
            "result": {"families": []},
            "schema": 2,
        },
        _json,
        ExperimentRecord.read,
        typed={
            "experiment": STR,
            "seed": INT,
            "config": DICT,
            "config_hash": STR,
            "provenance": DICT,
            "result": DICT,
            "schema": INT,
        },
        required=["experiment", "seed", "config", "config_hash", "provenance", "result"],
        closed=[""],
        wrong={"schema": [99, "2", 0, True], "experiment": ["", "../clean", "a b"], "config_hash": ["", "x" * 65]},
    ),
    Kind(
        "manifest",
        {
            "experiments": {
                "clean": {"config_hash": "0123abcd", "wall_seconds": 1.5, "finished": "2026-01-01T00:00:00Z"}
            },
            "created": "2026-01-01T00:00:00Z",
            "updated": "2026-01-01T00:00:00Z",
            "model": {"name": "tiny-qwen2"},
            "profile": {"name": "smoke"},
            "versions": {"torch": "2.13.0"},
            "families": {"copying": "ab12"},
        },
        _json,
        read_manifest,
        typed={
            "experiments": DICT,
            "experiments.*": DICT,
            "experiments.*.config_hash": STR,
            "experiments.*.wall_seconds": (NUM, NULL),
            "experiments.*.finished": (STR, NULL),
            "created": STR,
            "updated": STR,
            "model": (DICT, NULL),
            "profile": (DICT, NULL),
            "versions": (DICT, NULL),
            "versions.*": STR,
            "families": (DICT, NULL),
            "families.*": STR,
        },
        required=["experiments.*.config_hash"],
        closed=["", "experiments.*"],
    ),
    Kind(
        "golden",
        {
            "format": 1,
            "model": "tiny-qwen2",
            "profile": {"name": "golden"},
            "experiments": {
                "clean": {
                    "sweeps": [
                        {
                            "variants": ["a", "b"],
                            "prompts": ["p"],
                            "kl": [[0.5], [0.25]],
                            "argmax": [[3], [4]],
                            "target_prob": [[0.1], [0.2]],
                        }
                    ],
                    "result": {"x": 1},
                    "codes": ["abc"],
                }
            },
        },
        _json,
        golden.read,
        typed={
            "format": INT,
            "model": STR,
            "profile": DICT,
            "experiments": DICT,
            "experiments.*": DICT,
            "experiments.*.sweeps": LIST,
            "experiments.*.sweeps.*": DICT,
            "experiments.*.sweeps.*.variants": LIST,
            "experiments.*.sweeps.*.variants.*": STR,
            "experiments.*.sweeps.*.prompts": LIST,
            "experiments.*.sweeps.*.prompts.*": STR,
            "experiments.*.sweeps.*.kl": LIST,
            "experiments.*.sweeps.*.kl.*": LIST,
            "experiments.*.sweeps.*.kl.*.*": NUM,
            "experiments.*.sweeps.*.argmax": LIST,
            "experiments.*.sweeps.*.argmax.*": LIST,
            "experiments.*.sweeps.*.argmax.*.*": INT,
            "experiments.*.sweeps.*.target_prob": (LIST, NULL),
            "experiments.*.sweeps.*.target_prob.*": LIST,
            "experiments.*.sweeps.*.target_prob.*.*": NUM,
            "experiments.*.result": DICT,
            "experiments.*.codes": LIST,
            "experiments.*.codes.*": STR,
        },
        required=[
            "format",
            "experiments",
            "experiments.*.sweeps",
            "experiments.*.result",
            "experiments.*.codes",
            "experiments.*.sweeps.*.variants",
            "experiments.*.sweeps.*.prompts",
            "experiments.*.sweeps.*.kl",
            "experiments.*.sweeps.*.argmax",
        ],
        closed=["", "experiments.*", "experiments.*.sweeps.*"],
        wrong={"format": [2, 0]},
    ),
    Kind(
        "study",
        {
            **CLAIMS_DOC,
            "study": {
                "title": "A study",
                "author": "someone",
                "year": 2025,
                "status": {"H001": "rejected"},
                "small": {"model": "Qwen/Qwen2.5-0.5B", "n_layers": 24, "hub_layer": 20},
                "large": {"model": "Qwen/Qwen2.5-1.5B", "n_layers": {"ref": "study.small.n_layers"}},
            },
        },
        _toml,
        load_study,
        typed={
            "study": DICT,
            "study.title": STR,
            "study.author": STR,
            "study.year": INT,
            "study.status": DICT,
            "study.small": DICT,
            "study.large": DICT,
            "study.*.model": STR,
            "study.small.n_layers": INT,
        },
        required=[
            "study",
            "study.title",
            "study.author",
            "study.year",
            "study.status",
            "study.small",
            "study.large",
            "study.*.model",
            "study.*.n_layers",
        ],
        closed=[],
        wrong={"study.small.n_layers": [0, -3], "study.title": TEXT_WRONG, "study.*.model": TEXT_WRONG},
    ),
]
TOML_KINDS = {"claims", "study"}

_KEY = st.from_regex(r"zz_[a-z]{1,6}", fullmatch=True)  # never a declared field
_VALUES = {
    STR: st.text(max_size=6),
    BOOL: st.booleans(),
    NULL: st.none(),
    INT: st.integers(-(10**6), 10**6),
    NUM: st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6),
    "frac": st.floats(min_value=-1e6, max_value=1e6, allow_nan=False).filter(lambda x: x != int(x)),
    LIST: st.lists(st.integers(0, 9), max_size=3),
    DICT: st.dictionaries(_KEY, st.integers(0, 9), max_size=2),
}


def _wrong_type(allowed, toml: bool) -> st.SearchStrategy:
    """A value of none of the ``allowed`` JSON types (an integer is a number; a fraction is no integer)."""
    allowed = set(allowed) if isinstance(allowed, tuple) else {allowed}
    choices = [STR, BOOL, LIST, DICT] + ([] if toml else [NULL])
    if NUM not in allowed:
        choices += ["frac"] + ([INT] if INT not in allowed else [])
    return st.one_of([_VALUES[c] for c in choices if c not in allowed])


@st.composite
def mutations(draw, kind: Kind):
    """(mutated document, path of the broken field)."""
    doc = copy.deepcopy(kind.doc)
    paths = kind.paths()
    toml = kind.name in TOML_KINDS
    options = {
        "type": [p for p in paths if p and _lookup(kind.typed, p) is not None],
        "delete": [p for p in paths if p and any(_match(p, r) for r in kind.required)],
        "unknown": [p for p in paths if any(_match(p, c) for c in kind.closed)],
        "wrong": [p for p in paths if p and _lookup(kind.wrong, p) is not None],
    }
    op = draw(st.sampled_from([k for k, v in options.items() if v]))
    path = draw(st.sampled_from(options[op]))
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    if op == "type":
        parent[path[-1]] = draw(_wrong_type(_lookup(kind.typed, path), toml))
    elif op == "delete":
        del parent[path[-1]]
    elif op == "unknown":
        target = parent[path[-1]] if path else doc
        key = draw(_KEY)
        target[key] = draw(_VALUES[INT])
        path = path + (key,)
    else:
        parent[path[-1]] = draw(st.sampled_from(_lookup(kind.wrong, path)))
    return doc, path


GENERATED: dict[str, int] = {}


def fuzz(kind: Kind, load=None, examples: int = 60, shrink: bool = True) -> None:
    """Draw ``examples`` broken documents of ``kind`` and read each with ``load`` (default: its reader);
    ``shrink=False``: report the failures as found (the mutation tests need only that there are some)."""
    load = load or kind.load
    GENERATED[kind.name] = 0

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        phases=list(Phase) if shrink else [Phase.explicit, Phase.generate],
    )
    @given(mutations(kind))
    def check(case):
        doc, path = case
        GENERATED[kind.name] += 1
        with tempfile.TemporaryDirectory() as tmp:
            file = Path(tmp) / f"colours.{'toml' if kind.name in TOML_KINDS else 'json'}"
            kind.write(doc, file)
            try:
                load(file)
            except AtlasError as exc:
                message = str(exc)
            else:
                raise AssertionError(f"{kind.name}: accepted with {field_path(path)} broken: {doc}")
            assert str(file) in message, f"the file is not named: {message}"
            assert field_path(path) in message, f"the field {field_path(path)} is not named: {message}"

    check()


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
def test_a_broken_document_of_every_kind_is_an_atlas_error_naming_file_and_field(kind, record_property):
    kind.load(_written(kind, kind.doc))  # the valid document is read without complaint
    fuzz(kind)
    record_property("generated documents", GENERATED[kind.name])
    assert GENERATED[kind.name] >= 60
    print(f"{kind.name}: {GENERATED[kind.name]} generated documents")


def _written(kind: Kind, doc) -> Path:
    file = Path(tempfile.mkdtemp()) / f"colours.{'toml' if kind.name in TOML_KINDS else 'json'}"
    kind.write(doc, file)
    return file


def test_a_claim_given_as_a_table_is_an_error_naming_the_field(tmp_path):
    """``[claim]`` instead of ``[[claim]]`` was an AttributeError at collection."""
    path = tmp_path / "mine.toml"
    path.write_text('[meta]\nmodels = ["tiny-qwen2"]\n\n[claim]\nid = "x"\nstatistic = "hub.top_layer_kl"\n')
    with pytest.raises(AtlasError, match=r"mine\.toml: claim must be of type array, got \{'id': 'x'"):
        load_claims(path)


def _failures(run) -> list[str]:
    """The assertion messages the fuzz fails with (hypothesis raises a group when it finds several)."""
    try:
        run()
    except AssertionError as exc:
        return [str(exc)]
    except BaseExceptionGroup as group:
        return [str(e) for e in group.exceptions if isinstance(e, AssertionError)]
    return []


def _kind(name: str) -> Kind:
    return next(k for k in KINDS if k.name == name)


def test_the_fuzz_catches_a_catch_all_that_rewraps_every_exception(monkeypatch):
    """A validator that checks nothing, behind a loader that turns any exception into an AtlasError naming the
    file: every message names the file, few name the field, and the fuzz fails on it."""
    monkeypatch.setattr(validation, "check", lambda *a, **k: None)
    for kind in KINDS:

        def rewrapped(path, load=kind.load):
            try:
                return load(path)
            except Exception as exc:
                raise AtlasError(f"{path} is invalid ({type(exc).__name__}: {exc})") from None

        failures = _failures(lambda: fuzz(kind, rewrapped, examples=60, shrink=False))
        assert failures and all("is not named" in f or "accepted with" in f for f in failures), (kind.name, failures)
        print(f"{kind.name}: {failures[0].splitlines()[0][:200]}")


def test_the_fuzz_catches_a_validator_that_drops_one_rule(monkeypatch):
    """The task schema without its not-blank rule: a whitespace-only target is accepted again."""
    monkeypatch.setattr(validation, "TEXT", {"type": "string", "minLength": 1, "format": validation.UTF8})
    validation._validator.cache_clear()
    try:
        failures = _failures(lambda: fuzz(_kind("tasks"), examples=200, shrink=False))
        assert failures and all("accepted with" in f for f in failures), failures
        print(failures[0].splitlines()[0][:300])
    finally:
        monkeypatch.undo()
        validation._validator.cache_clear()
