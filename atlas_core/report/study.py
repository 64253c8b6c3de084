"""The source study's figures, as published: the ``[study]`` tables of its claims file.

``shared/seed/qwen2.5-1.5b-atlas.txt`` is transcribed once, into :data:`STUDY_CLAIMS`: the numbers its
verdicts rest on (``[study.small]``, ``[study.large]``), its tables (their sub-tables, rows in the
study's order), its wording where Atlas quotes it and the status it publishes per hypothesis
(``[study]``, ``[study.status]``). A figure the file already holds elsewhere is written there as a
reference, not a copy: ``{ ref = "study.large.hub_layer" }`` is that key, ``{ claim = "ID" }`` that
claim's expected value; :func:`load_study` resolves them. No figure of the study lives in Python.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from atlas_core import AtlasError
from atlas_core.claims import CLAIMS_DIR, load_claims
from atlas_core.report import cells

STUDY_CLAIMS = CLAIMS_DIR / "study-qwen2.5-1.5b.toml"
ROLES = ("small", "large")
PAPER = ("title", "author", "year", "status")  # the [study] keys every reader needs


@dataclass(frozen=True)
class Study:
    """The study's ``[study]`` tables with their references resolved, and its decision thresholds."""

    paper: dict[str, Any]  # title, author, year, the quoted wording, the published status per hypothesis
    roles: dict[str, dict[str, Any]]  # "small" / "large": that model's figures and tables
    thresholds: dict[str, dict]
    citation: str
    source: Path

    def __getitem__(self, role: str) -> dict[str, Any]:
        return self.roles[role]

    def name(self, role: str) -> str:
        return Path(str(self.roles[role]["model"])).name

    def n_layers(self, role: str) -> int:
        return int(self.roles[role]["n_layers"])

    def layer(self, layer: int | None, role: str) -> str:
        return cells.layer(layer, self.n_layers(role))


def study_schema() -> dict:
    """The one declaration of the ``[study]`` tables of a claims file (JSON Schema): the paper's facts and, per role, the model
    and its depth; every figure may be written or referenced (``{ ref = KEY }``, ``{ claim = ID }``)."""
    from atlas_core.validation import INTEGER, OBJECT, TEXT

    ref = {
        "type": "object",
        "additionalProperties": False,
        "minProperties": 1,
        "maxProperties": 1,
        "properties": {"ref": TEXT, "claim": TEXT},
    }

    def value(schema):
        return {"anyOf": [schema, ref]}

    role = {
        "type": "object",
        "required": ["model", "n_layers"],
        "properties": {"model": value(TEXT), "n_layers": value({"type": "integer", "minimum": 1})},
    }
    study = {
        "type": "object",
        "required": list(ROLES) + list(PAPER),
        "properties": {
            "title": value(TEXT),
            "author": value(TEXT),
            "year": value(INTEGER),
            "status": OBJECT,
            **{r: role for r in ROLES},
        },
    }
    return {"type": "object", "required": ["study"], "properties": {"study": study}}


def _resolve(obj: Any, raw: Mapping, source: Path) -> Any:
    """``obj`` with each ``{ ref = "a.b.c" }`` replaced by that key of the file and each
    ``{ claim = ID }`` by that claim's expected value."""
    if isinstance(obj, Mapping) and set(obj) == {"ref"}:
        cur: Any = raw
        for part in str(obj["ref"]).split("."):
            if not isinstance(cur, Mapping) or part not in cur:
                raise AtlasError(
                    f"{source}: {{ ref = {obj['ref']!r} }} names no key of the file; point it at "
                    "an existing key (e.g. study.large.hub_layer) or write the figure itself"
                )
            cur = cur[part]
        return _resolve(cur, raw, source)
    if isinstance(obj, Mapping) and set(obj) == {"claim"}:
        entry: dict = next((c for c in raw.get("claim", []) if c.get("id") == obj["claim"]), {})
        if "expected" not in entry:
            raise AtlasError(
                f"{source}: {{ claim = {obj['claim']!r} }} names no claim with an expected value; "
                "restore that claim or write the figure itself"
            )
        return entry["expected"]
    if isinstance(obj, Mapping):
        return {k: _resolve(v, raw, source) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_resolve(v, raw, source) for v in obj]
    return obj


def load_study(path: str | Path = STUDY_CLAIMS) -> Study:
    """The study's figures and thresholds from its claims file (validated by ``load_claims`` first)."""
    path = Path(path)
    claims = load_claims(path)
    raw = tomllib.loads(path.read_text())
    from atlas_core.validation import check

    check(
        raw,
        study_schema,
        str(path),
        f"the study's figures are read there: restore them from {claims.meta.get('citation') or 'the study'}",
    )
    study = _resolve(raw["study"], raw, path)
    paper = {k: v for k, v in study.items() if k not in ROLES}
    return Study(paper, {r: study[r] for r in ROLES}, claims.thresholds, str(claims.meta.get("citation", "")), path)


def best_exit(exits: list[Mapping]) -> Mapping:
    """The study's early exit with the best argmax match among those that skip a layer."""
    return max((e for e in exits if e["skipped"] > 0), key=lambda e: e["argmax_match"])
