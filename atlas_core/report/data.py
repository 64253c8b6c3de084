"""A stored run as the report reads it, and the numbers it prints.

Every number a page shows is a :class:`Num`: its value is read from a record's typed result (or its
provenance, or the manifest) by a path of field names, keys and indices, and it renders as
``<span class="n" data-value="EXACT" data-src="KEY#/json/pointer">SHOWN</span>``. The pointer is that same path:
the one converter (``atlas_core.results.unstructure``) writes each field under its own name, so a test (or a
reader) can resolve ``data-src`` in the run folder and check that the page says what the JSON says. Numbers the report derives (relative depth, ratios, deltas) carry ``data-derived`` instead of
``data-src``. All display formatting goes through :func:`fmt` (three significant digits).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any

from markupsafe import Markup, escape

from atlas_core.runs import StoredRun
from atlas_core.stat import finite


def fmt(value: Any, kind: str = "auto") -> str:
    """How the report shows a number. ``kind``: auto (ints as ints, floats to 3 significant digits,
    thousands with separators, tiny values in scientific notation) | pct (a fraction as a percentage,
    3 significant digits) | x (a ratio, ``12.3×``)."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int) and kind == "auto":
        return str(value) if abs(value) < 10000 else f"{value:,}"
    v = float(value)
    if math.isnan(v):
        return "—"
    if math.isinf(v):
        return "∞" if v > 0 else "−∞"
    if kind == "pct":
        return _g(100.0 * v) + "%"
    if kind == "x":
        return _g(v) + "×"
    return _g(v)


def _g(v: float) -> str:
    a = abs(v)
    if a == 0:
        return "0"
    if a >= 1000:
        return f"{v:,.0f}"
    if a < 1e-3:
        return f"{v:.2e}"
    return f"{v:.3g}"


def defined(value: Any) -> bool:
    """Whether a stored number is measured: not null, and not NaN (what the converter reads null as)."""
    return finite(value) is not None


def exact(value: Any) -> str:
    """The exact value as written in ``data-value`` (``repr`` of a float round-trips)."""
    if not defined(value):
        return "null"  # NaN is how an undefined number, stored as null, reads back
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


@dataclass(frozen=True)
class Num:
    """One number on the page, with where it came from."""

    value: Any
    src: str | None = None  # "<record key or manifest>#/json/pointer" in the run folder
    run: str | None = None  # which run of a comparison ("a", "b", ...)
    kind: str = "auto"
    derived: str | None = None  # how a derived number was computed (no src)
    cls: str = ""

    @property
    def text(self) -> str:
        return fmt(self.value, self.kind)

    def __html__(self) -> str:
        attrs = [f'class="n{(" " + self.cls) if self.cls else ""}"', f'data-value="{exact(self.value)}"']
        if self.kind != "auto":
            attrs.append(f'data-fmt="{self.kind}"')
        if self.src:
            attrs.append(f'data-src="{escape(self.src)}"')
        if self.derived:
            attrs.append(f'data-derived="{escape(self.derived)}"')
        if self.run:
            attrs.append(f'data-run="{escape(self.run)}"')
        title = (
            exact(self.value)
            if self.src
            else f"{exact(self.value)} ({self.derived})"
            if self.derived
            else exact(self.value)
        )
        attrs.append(f'title="{escape(title)}"')
        return Markup(f"<span {' '.join(attrs)}>{escape(self.text)}</span>")

    def __float__(self) -> float:
        return float("nan") if self.value is None else float(self.value)


@dataclass(frozen=True)
class Est:
    """An ``Estimate`` (value, bootstrap interval, n) as three Nums."""

    value: Num
    lo: Num
    hi: Num
    n: int | None = None

    def __html__(self) -> str:
        return Markup(
            f'<span class="est">{self.value.__html__()} '
            f'<span class="ci">[{self.lo.__html__()}, {self.hi.__html__()}]</span></span>'
        )

    def disjoint(self, other: "Est") -> bool:
        """True when the two intervals do not overlap (a difference beyond the intervals)."""
        a_lo, a_hi, b_lo, b_hi = float(self.lo), float(self.hi), float(other.lo), float(other.hi)
        if any(math.isnan(v) for v in (a_lo, a_hi, b_lo, b_hi)):
            return False
        return a_hi < b_lo or b_hi < a_lo


def derived(value: Any, how: str, kind: str = "auto", run: str | None = None) -> Num:
    return Num(value, derived=how, kind=kind, run=run)


def pointer(*path: Any) -> str:
    return "/" + "/".join(str(p).replace("~", "~0").replace("/", "~1") for p in path)


def walk(value: Any, path: tuple[Any, ...]) -> Any:
    """Follow ``path`` into a typed value: a dataclass by field name (a name it lacks is an error, not a
    default), a mapping by key, a sequence by index."""
    for part in path:
        if is_dataclass(value) and not isinstance(value, type):
            if part not in {f.name for f in fields(value)}:
                raise KeyError(f"{type(value).__name__} has no field {part!r}")
            value = getattr(value, part)
        elif isinstance(value, Mapping):
            value = value[part]
        else:
            value = value[int(part)]
    return value


def resolve(doc: Any, ptr: str) -> Any:
    """Follow a JSON pointer (RFC 6901) into ``doc``."""
    cur = doc
    for part in ptr.lstrip("/").split("/") if ptr not in ("", "/") else []:
        part = part.replace("~1", "/").replace("~0", "~")
        cur = cur[int(part)] if isinstance(cur, list) else cur[part]
    return cur


class ReportedRun(StoredRun):
    """A run folder as the report reads it: the shared reader (:class:`atlas_core.runs.StoredRun`) with the
    run's label in a comparison and the provenance pointers (``data-src``) of the numbers the page shows."""

    def __init__(self, root: str | Path, label: str | None = None):
        super().__init__(root)
        self.label = label

    # -- numbers with provenance -------------------------------------------------------------------
    def at(self, key: str, *path: Any) -> Any:
        """The value at ``path`` in record ``key`` (``"manifest"`` for the manifest). ``("result", ...)`` walks the
        typed result (:meth:`typed`); other paths walk the record's own fields (``("provenance", ...)``)."""
        if key == "manifest":
            return walk(self.manifest, path)
        if path[:1] == ("result",):
            return walk(self.typed(key), path[1:])
        return walk(self.records[key], path)

    def num(self, key: str, *path: Any, kind: str = "auto", cls: str = "") -> Num:
        """The number of record ``key`` at ``path``, its ``data-src`` the pointer of that path; ``path`` starts at
        the record's top level, so result fields are ``("result", ...)``."""
        return Num(self.at(key, *path), src=f"{key}#{pointer(*path)}", run=self.label, kind=kind, cls=cls)

    def rnum(self, key: str, *path: Any, kind: str = "auto", cls: str = "") -> Num:
        """A number inside ``result``."""
        return self.num(key, "result", *path, kind=kind, cls=cls)

    def est(self, key: str, *path: Any, kind: str = "auto") -> Est:
        """An Estimate inside ``result`` at ``path``."""
        e = self.at(key, "result", *path)
        return Est(
            self.rnum(key, *path, "value", kind=kind),
            self.rnum(key, *path, "lo", kind=kind),
            self.rnum(key, *path, "hi", kind=kind),
            e.n,
        )

    def depth_num(self, layer: Any) -> Num:
        n = self.n_layers
        return derived(self.depth(layer), f"layer / (n_layers - 1), n_layers = {n}", kind="pct", run=self.label)
