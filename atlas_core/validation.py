"""Checking a document read from a user or from disk against its declared schema.

Each kind of file Atlas reads declares one JSON Schema beside its reader (claims files in
``claims.files``, task families in ``tasks``, records and the manifest in ``results``, the golden record in
``golden``, the study's figures in ``report.study``); :func:`check` validates a parsed document against it
with ``jsonschema`` (declarative, and its errors carry the path of the offending field) and turns the most
relevant error into one ``AtlasError`` naming the file, the entry, the field's path and the fix.

Strings a person writes (prompts, targets, ids) use :data:`TEXT`: non-empty, not only whitespace, and
encodable as UTF-8 (JSON's ``"\\ud800"`` decodes to a lone surrogate that no tokenizer accepts).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import jsonschema
from jsonschema.exceptions import best_match

from atlas_core import AtlasError

UTF8 = "utf8"  # the format of a string that encodes as UTF-8 (no lone surrogate)
TEXT = {"type": "string", "minLength": 1, "pattern": r"\S", "format": UTF8}
NUMBER = {"type": "number"}
INTEGER = {"type": "integer"}
STRING = {"type": "string"}
OBJECT = {"type": "object"}

_FORMATS = jsonschema.FormatChecker(formats=())


@_FORMATS.checks(UTF8, raises=UnicodeEncodeError)
def _utf8(value: object) -> bool:
    if isinstance(value, str):
        value.encode("utf-8")
    return True


@lru_cache(maxsize=None)
def _validator(schema_id: int, schema_key: Callable[[], dict]):
    schema = schema_key()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=_FORMATS)


def field_path(parts) -> str:
    """``["items", 0, "target"]`` -> ``items[0].target`` (the root: ``(the document)``)."""
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(the document)"


def _problem(err) -> tuple[list, str]:
    """The offending field's path and what is wrong with it, in words."""
    path, v, inst = list(err.absolute_path), err.validator, err.instance
    if v == "required" and isinstance(inst, dict):
        missing = [k for k in err.validator_value if k not in inst]
        return path + missing[:1], "is required and missing"
    if v == "additionalProperties" and isinstance(inst, dict):
        known = set(err.schema.get("properties", {}))
        extra = sorted(str(k) for k in inst if k not in known)
        allowed = ", ".join(err.schema.get("properties", {})) or "none"
        return path + extra[:1], f"is not a known field (allowed here: {allowed})"
    if v == "type":
        want = err.validator_value if isinstance(err.validator_value, str) else " or ".join(err.validator_value)
        return path, f"must be of type {want}, got {_show(inst)}"
    if v == "enum":
        return path, f"must be one of {', '.join(map(repr, err.validator_value))}, got {_show(inst)}"
    if v == "const":
        return path, f"must be {err.validator_value!r}, got {_show(inst)}"
    if v == "pattern" and err.validator_value == r"\S":
        return path, f"must not be blank (whitespace only), got {_show(inst)}"
    if v == "pattern":
        return path, f"must match {err.validator_value!r}, got {_show(inst)}"
    if v == "format" and err.validator_value == UTF8:
        return path, f"holds a lone surrogate (not valid Unicode text), got {_show(inst)}"
    if v == "minLength":
        return path, "must be a non-empty string"
    if v == "minItems":
        return path, f"must hold at least {err.validator_value} entr{'y' if err.validator_value == 1 else 'ies'}"
    if v in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        return path, err.message
    return path, err.message


def _show(value: Any) -> str:
    text = ascii(value) if isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check(
    doc: Any,
    schema: Callable[[], dict],
    where: str | Path,
    fix: str,
    entry: Callable[[Any, list], str | None] | None = None,
    error: type[AtlasError] = AtlasError,
) -> None:
    """Validate ``doc`` against ``schema()`` (a function returning the declared schema, built once); the most
    relevant violation is an ``error`` reading ``WHERE: FIELD (ENTRY): PROBLEM; FIX``. ``entry(doc, path)``
    names the entry the field belongs to (a claim's id, an item's id), when there is one."""
    validator = _validator(id(schema), schema)
    err = best_match(validator.iter_errors(doc))
    if err is None:
        return
    path, problem = _problem(err)
    label = entry(doc, path) if entry is not None else None
    raise error(f"{where}: {field_path(path)}{f' ({label})' if label else ''} {problem}; {fix}")


def entry_id(section_key: str | None = None, id_key: str = "id") -> Callable[[Any, list], str | None]:
    """An ``entry`` namer for :func:`check`: the ``id_key`` of the list entry the path runs through (under
    ``section_key``, or any list when None)."""

    def name(doc: Any, path: list) -> str | None:
        node = doc
        for i, part in enumerate(path):
            try:
                node = node[part]
            except (KeyError, IndexError, TypeError):
                return None
            if isinstance(part, int) and (section_key is None or (i and path[i - 1] == section_key)):
                value = node.get(id_key) if isinstance(node, dict) else None
                return f"{id_key} {value!r}" if isinstance(value, str) and value else None
        return None

    return name
