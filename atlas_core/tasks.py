"""The eight task families of the study, shipped in ``atlas_core/data/tasks/<family>.json``.

Each family has ``items`` (prompts that exercise the skill, with the expected continuation) and
``contrast`` prompts of the same rough form that do not. The JSON files are written by the
committed, deterministic ``fixtures/tasks/generate.py``; its docstring describes the format.

Only the FIRST token of a target is scored: :func:`target_token_id` returns
``tokenizer.encode(target, add_special_tokens=False)[0]``.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from atlas_core import AtlasError
from atlas_core.data import TASKS_DIR_ENV, tasks_dir

FAMILIES: tuple[str, ...] = (
    "arithmetic",
    "code_syntax",
    "copying",
    "delimiter_tracking",
    "factual_recall",
    "json_schema",
    "dead_code",
    "code_semantics",
)



@dataclass(frozen=True)
class TaskItem:
    prompt: str
    target: str
    id: str = ""


@dataclass(frozen=True)
class TaskFamily:
    name: str
    description: str
    items: tuple[TaskItem, ...]
    contrast: tuple[TaskItem, ...]
    sha256: str  # of the JSON file's bytes

    def subset(self, n: int | None) -> "TaskFamily":
        """The first ``n`` items and the first ``n`` contrast prompts (``None``: all of them)."""
        if n is None:
            return self
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise AtlasError(f"subset size must be a positive integer or None, got {n!r}")
        return replace(self, items=self.items[:n], contrast=self.contrast[:n])

    @property
    def prompts(self) -> list[str]:
        return [it.prompt for it in self.items]

    @property
    def targets(self) -> list[str]:
        return [it.target for it in self.items]

    @property
    def contrast_prompts(self) -> list[str]:
        return [it.prompt for it in self.contrast]


def _unknown(name: object) -> AtlasError:
    return AtlasError(f"unknown task family {name!r}; known families: {', '.join(FAMILIES)}")


def _parse_rows(path: Path, section: str, rows: object, need_id: bool) -> tuple[TaskItem, ...]:
    if not isinstance(rows, list) or not rows:
        raise AtlasError(f"{path}: {section!r} must be a non-empty list")
    out = []
    for i, row in enumerate(rows):
        where = f"{path}: {section}[{i}]"
        if not isinstance(row, dict):
            raise AtlasError(f"{where} must be an object with 'prompt' and 'target', got {row!r}")
        prompt, target, id_ = row.get("prompt"), row.get("target"), row.get("id", "")
        label = f"{where} (id {id_!r})" if id_ else where
        if not isinstance(prompt, str) or not prompt:
            raise AtlasError(f"{label}: 'prompt' must be a non-empty string, got {prompt!r}")
        if not isinstance(target, str) or not target:
            raise AtlasError(
                f"{label}: 'target' must be a non-empty string, got {target!r} "
                f"(prompt {prompt!r})"
            )
        if not isinstance(id_, str) or (need_id and not id_):
            raise AtlasError(f"{label}: 'id' must be a non-empty string, got {id_!r}")
        out.append(TaskItem(prompt=prompt, target=target, id=id_))
    ids = [it.id for it in out if it.id]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise AtlasError(f"{path}: {section} has repeated ids {dupes}")
    return tuple(out)


def load_family(name: str) -> TaskFamily:
    """Load and validate one family's JSON file."""
    if name not in FAMILIES:
        raise _unknown(name)
    path = tasks_dir() / f"{name}.json"
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(
            f"task file {path} is missing; run `python fixtures/tasks/generate.py` "
            f"(or point ${TASKS_DIR_ENV} at a directory holding <family>.json files)"
        ) from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AtlasError(f"{path}: not valid UTF-8 JSON ({exc})") from None
    if not isinstance(data, dict):
        raise AtlasError(f"{path}: top level must be a JSON object")
    if data.get("family") != name:
        raise AtlasError(f"{path}: 'family' is {data.get('family')!r}, expected {name!r}")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise AtlasError(f"{path}: 'description' must be a string")
    return TaskFamily(
        name=name,
        description=description,
        items=_parse_rows(path, "items", data.get("items"), need_id=True),
        contrast=_parse_rows(path, "contrast", data.get("contrast"), need_id=False),
        sha256=hashlib.sha256(raw).hexdigest(),
    )


def load_families(
    names: Iterable[str] | None = None, n_items: int | None = None
) -> dict[str, TaskFamily]:
    """Load several families (default: all, in :data:`FAMILIES` order), each cut to ``n_items``.

    Every name is checked before any file is read. Repeated names are loaded once.
    """
    if names is None:
        selected = list(FAMILIES)
    else:
        if isinstance(names, str):
            names = [names]
        selected = list(dict.fromkeys(names))
        unknown = [n for n in selected if n not in FAMILIES]
        if unknown:
            raise AtlasError(
                f"unknown task famil{'y' if len(unknown) == 1 else 'ies'} "
                f"{', '.join(map(repr, unknown))}; known families: {', '.join(FAMILIES)}"
            )
        if not selected:
            raise AtlasError(
                f"no task families selected; choose from: {', '.join(FAMILIES)}"
            )
    if n_items is not None and (
        isinstance(n_items, bool) or not isinstance(n_items, int) or n_items < 1
    ):
        raise AtlasError(f"n_items must be a positive integer or None, got {n_items!r}")
    return {name: load_family(name).subset(n_items) for name in selected}


def target_token_id(tokenizer, target: str) -> int:
    """The id of the first token of ``target`` (no special tokens): the token that is scored."""
    if not target:
        raise AtlasError(f"target {target!r} is empty; it has no first token to score")
    ids = tokenizer.encode(target, add_special_tokens=False)
    ids = getattr(ids, "ids", ids)  # a `tokenizers.Tokenizer` returns an Encoding
    if len(ids) == 0:
        raise AtlasError(f"target {target!r} encodes to no tokens")
    return int(ids[0])
