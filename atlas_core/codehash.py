"""Code fingerprints: which version of an experiment's code produced a stored number.

An experiment's fingerprint hashes the syntax trees (comments, docstrings and formatting left out) of its
module and of every ``atlas_core`` module it imports, transitively: the code its numbers depend on.
Records store the fingerprint that made them (provenance ``code``).

The stale-baseline rule (:func:`baseline_stands`): a stored record stands when the current code has its
fingerprint, or when both fingerprints are listed by the golden record as reproducing the golden slice
(:mod:`atlas_core.golden`): a refactor that changes no number keeps the baselines (recording the new
fingerprint takes `atlas golden write`, minutes), while a changed definition, whose golden values move,
makes them stale without anyone having to remember.
"""

from __future__ import annotations

import ast
import sys
import hashlib
from functools import lru_cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
UNRECORDED = "unrecorded"  # records written before fingerprints existed


def _module_path(dotted: str) -> Path | None:
    rel = dotted.split(".")[1:]
    base = PACKAGE.joinpath(*rel)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path, tree: ast.AST) -> set[str]:
    if not path.is_relative_to(PACKAGE):  # a project's own experiment module: its atlas_core imports only
        pkg = ""
    else:
        pkg = ".".join(("atlas_core",) + path.relative_to(PACKAGE).with_suffix("").parts)
    if path.name == "__init__.py":
        pkg = pkg.removesuffix(".__init__")
    else:
        pkg = pkg.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("atlas_core")}
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level and pkg:
                parts = pkg.split(".")
                mod = ".".join(parts[: len(parts) - node.level + 1] + ([mod] if mod else []))
            if mod.startswith("atlas_core"):
                out.add(mod)
                out |= {f"{mod}.{a.name}" for a in node.names}  # `from pkg import module`
    return out


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(getattr(body[0], "value", None), ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return tree


def syntax(source: str) -> str:
    """The code of ``source`` without comments, docstrings or formatting."""
    return ast.dump(_strip_docstrings(ast.parse(source)), annotate_fields=False, include_attributes=False)


@lru_cache(maxsize=None)
def _parsed(path: Path) -> tuple[str, frozenset[str]]:
    source = path.read_text()
    return syntax(source), frozenset(_imports(path, ast.parse(source, filename=str(path))))


def closure(experiment: str) -> list[Path]:
    """The experiment's module and every atlas_core module it imports, transitively, sorted."""
    from atlas_core.spec import experiment as spec_of

    mod = spec_of(experiment).module
    start = _module_path(mod) if mod.startswith("atlas_core.") else Path(sys.modules[mod].__file__).resolve()
    seen: set[Path] = set()
    todo = [start]
    while todo:
        path = todo.pop()
        if path is None or path in seen:
            continue
        seen.add(path)
        todo += [_module_path(d) for d in _parsed(path)[1]]
    return sorted(seen)


def fingerprint(experiment: str) -> str:
    """16 hex digits naming the code that computes ``experiment``."""
    digest = hashlib.sha256()
    for path in closure(experiment):
        digest.update(str(path.relative_to(PACKAGE)).encode())
        digest.update(_parsed(path)[0].encode())
    return digest.hexdigest()[:16]


def baseline_stands(experiment: str, recorded: str | None, verified: list[str]) -> str | None:
    """None when a record made by code ``recorded`` still stands for the current code; else the reason."""
    now = fingerprint(experiment)
    recorded = recorded or UNRECORDED
    if recorded == now or (recorded in verified and now in verified):
        return None
    if now not in verified:
        return (
            f"{experiment}: the current code ({now}) is not verified against the golden slice, and the record was "
            f"made by code {recorded}; run `atlas golden write` (it keeps the baselines if the golden values still "
            f"match) or recompute the record"
        )
    return (
        f"{experiment}: the record was made by code {recorded}, which the golden record does not list as "
        f"computing the current definition ({now}); recompute it (`atlas run ... --experiments {experiment}`)"
    )
