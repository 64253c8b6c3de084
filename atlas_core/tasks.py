"""Task families: the eight of the study, shipped in ``atlas_core/data/tasks/<family>.json``, and the user's own.

Each family has ``items`` (prompts that exercise the skill, with the expected continuation) and
``contrast`` prompts of the same rough form that do not. The shipped JSON files are written by the
committed, deterministic ``fixtures/tasks/generate.py``; its docstring describes the format. A user
folder of ``<family>.json`` files in the same form (``atlas run --tasks DIR``, ``--atlas-tasks DIR``) adds
its families to the built-in ones; every file is validated before any model loads.

Only the FIRST token of a target is scored: :func:`target_token_id` returns
``tokenizer.encode(target, add_special_tokens=False)[0]``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
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
TOP_FIELDS = ("family", "description", "items", "contrast")
ROW_FIELDS = ("prompt", "target", "id")


def task_schema() -> dict:
    """The one declaration of a task family file (JSON Schema; ``validation.TEXT``: non-empty, not blank,
    valid Unicode). A whitespace-only target would be scored by its first token, which other targets share."""
    from atlas_core.validation import STRING, TEXT

    def row(required):
        return {
            "type": "object",
            "required": list(required),
            "additionalProperties": False,
            "properties": {"prompt": TEXT, "target": TEXT, "id": TEXT},
        }

    return {
        "type": "object",
        "required": ["family", "items", "contrast"],
        "additionalProperties": False,
        "properties": {
            "family": TEXT,
            "description": STRING,
            "items": {"type": "array", "minItems": 1, "items": row(ROW_FIELDS)},
            "contrast": {"type": "array", "minItems": 1, "items": row(("prompt", "target"))},
        },
    }


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
    path: Path | None = field(default=None, compare=False)  # the file it was read from

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


FORMAT_HINT = (
    '{"family": NAME, "description": str, "items": [{"id", "prompt", "target"}, ...], '
    '"contrast": [{"prompt", "target"}, ...]}'
)


def _unknown(name: object, known: Iterable[str] = FAMILIES) -> AtlasError:
    return AtlasError(f"unknown task family {name!r}; known families: {', '.join(known)}")


def user_task_files(directory: str | Path) -> dict[str, Path]:
    """``family -> file`` for every ``<family>.json`` in a user's task folder (sorted by name)."""
    root = Path(directory).expanduser()
    if not root.exists():
        raise AtlasError(f"task folder {root} does not exist; pass a folder of <family>.json files")
    if not root.is_dir():
        raise AtlasError(f"task folder {root} is not a folder; pass a folder of <family>.json files")
    files = {p.stem: p for p in sorted(root.glob("*.json"))}
    if not files:
        raise AtlasError(f"task folder {root} holds no <family>.json file; add one file per family, each {FORMAT_HINT}")
    for name, path in files.items():
        if not name.replace("_", "").replace("-", "").isalnum():
            raise AtlasError(
                f"{path}: a family name holds only letters, digits, '_' and '-' (statistics are "
                f"named clean.accuracy.<family>); rename the file"
            )
    return files


def task_files(user_dir: str | Path | None = None) -> dict[str, Path]:
    """``family -> file``: the built-in families (in :data:`FAMILIES` order), then the user's folder's."""
    builtin = {name: tasks_dir() / f"{name}.json" for name in FAMILIES}
    if user_dir is None:
        return builtin
    user = user_task_files(user_dir)
    for name in user:
        if name in builtin:
            raise AtlasError(
                f"task family {name!r} of {user[name]} collides with the built-in {builtin[name]}; "
                "rename the file (and its 'family' field)"
            )
    return {**builtin, **user}


def _parse_rows(path: Path, section: str, rows: list[dict]) -> tuple[TaskItem, ...]:
    """Rows the schema (:func:`task_schema`) accepted into items; repeated ids are an error."""
    out = tuple(TaskItem(prompt=row["prompt"], target=row["target"], id=row.get("id", "")) for row in rows)
    ids = [it.id for it in out if it.id]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise AtlasError(f"{path}: {section} has repeated ids {dupes}")
    return out


def read_family(path: Path, name: str) -> TaskFamily:
    """Read and validate one family's JSON file (``name``: the family it must declare)."""
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
        raise AtlasError(f"{path}: not valid UTF-8 JSON ({exc}); each file is {FORMAT_HINT}") from None
    from atlas_core.validation import check, entry_id

    check(data, task_schema, path, f"each file is {FORMAT_HINT}", entry=entry_id())
    if data.get("family") != name:
        raise AtlasError(f"{path}: 'family' is {data.get('family')!r}, expected {name!r}")
    return TaskFamily(
        name=name,
        description=data.get("description", ""),
        items=_parse_rows(path, "items", data["items"]),
        contrast=_parse_rows(path, "contrast", data["contrast"]),
        sha256=hashlib.sha256(raw).hexdigest(),
        path=path,
    )


def load_family(name: str, user_dir: str | Path | None = None) -> TaskFamily:
    """Load and validate one family's JSON file (a built-in one, or one of ``user_dir``'s)."""
    files = task_files(user_dir)
    if name not in files:
        raise _unknown(name, files)
    return read_family(files[name], name)


def load_families(
    names: Iterable[str] | None = None, n_items: int | None = None, user_dir: str | Path | None = None
) -> dict[str, TaskFamily]:
    """Load several families (default: all, built-in ones in :data:`FAMILIES` order, then ``user_dir``'s),
    each cut to ``n_items``.

    Every name is checked before any file is read, and every file of ``user_dir`` is validated whether
    selected or not. Repeated names are loaded once.
    """
    files = task_files(user_dir)
    if names is None:
        selected = list(files)
    else:
        if isinstance(names, str):
            names = [names]
        selected = list(dict.fromkeys(names))
        unknown = [n for n in selected if n not in files]
        if unknown:
            raise AtlasError(
                f"unknown task famil{'y' if len(unknown) == 1 else 'ies'} "
                f"{', '.join(map(repr, unknown))}; known families: {', '.join(files)}"
            )
        if not selected:
            raise AtlasError(f"no task families selected; choose from: {', '.join(files)}")
    if n_items is not None and (isinstance(n_items, bool) or not isinstance(n_items, int) or n_items < 1):
        raise AtlasError(f"n_items must be a positive integer or None, got {n_items!r}")
    user = {n: read_family(files[n], n) for n in files if n not in FAMILIES}
    return {name: (user.get(name) or read_family(files[name], name)).subset(n_items) for name in selected}


def max_positions(model) -> int | None:
    """The longest sequence ``model`` has positions for (``max_position_embeddings``; GPT-2's
    ``n_positions``), None when its config does not say."""
    from atlas_core.models.adapters import text_config

    n = getattr(text_config(model), "max_position_embeddings", None)
    return int(n) if isinstance(n, int) and n > 0 else None


def check_targets(
    families: Mapping[str, TaskFamily], tokenizer, model: str = "the model", positions: int | None = None
) -> None:
    """Every target (items and contrast) tokenizes to at least one token with the run's tokenizer, and each
    prompt with its target fits in the model's ``positions``: checked once before the first experiment, so a
    bad one names its file and item instead of failing mid-sweep (GPT-2: an IndexError) or, on a model with
    rotary positions, running silently past what it was built for."""
    for fam in families.values():
        for section, rows in (("items", fam.items), ("contrast", fam.contrast)):
            for i, it in enumerate(rows):
                ids = tokenizer.encode(it.target, add_special_tokens=False)
                where = f"{fam.path or fam.name}: {section}[{i}] (id {it.id!r})"
                n_target = len(getattr(ids, "ids", ids))
                if n_target == 0:
                    raise AtlasError(
                        f"{where}: target {it.target!r} "
                        f"tokenizes to nothing with {model}'s tokenizer; give a target of at least "
                        "one token"
                    )
                if positions is not None:
                    prompt = tokenizer.encode(it.prompt)  # with special tokens, as the runner encodes it
                    n = len(getattr(prompt, "ids", prompt)) + n_target
                    if n > positions:
                        raise AtlasError(
                            f"{where}: the prompt and its target are {n} tokens with {model}'s "
                            f"tokenizer, past the model's {positions} positions; shorten the prompt "
                            "or leave the family out"
                        )


def target_token_id(tokenizer, target: str) -> int:
    """The id of the first token of ``target`` (no special tokens): the token that is scored."""
    if not target:
        raise AtlasError(f"target {target!r} is empty; it has no first token to score")
    ids = tokenizer.encode(target, add_special_tokens=False)
    ids = getattr(ids, "ids", ids)  # a `tokenizers.Tokenizer` returns an Encoding
    if len(ids) == 0:
        raise AtlasError(f"target {target!r} encodes to no tokens")
    return int(ids[0])
