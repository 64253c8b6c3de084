"""Check a written atlas page against the runs it was made from.

- :func:`verify_numbers`: every number with a ``data-src`` resolves in the run folder's JSON to exactly
  its ``data-value``, and the text shown is :func:`~atlas_core.report.data.fmt` of that value;
- :func:`external_references`: anything that would make the browser fetch from the network.

The tests use these; so can a reader who doubts a page (``python -m atlas_core.report.check PAGE RUN``).
"""

from __future__ import annotations

import json
import math
import re
import sys
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from atlas_core.report.data import fmt, resolve


@dataclass
class PageNumber:
    value: str  # data-value as written
    text: str  # what the page shows
    src: str | None
    run: str | None
    kind: str
    derived: str | None


class _Numbers(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.found: list[PageNumber] = []
        self._cur: dict | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "span" and "data-value" in a and "n" in (a.get("class") or "").split():
            self._cur, self._text = a, []

    def handle_data(self, data):
        if self._cur is not None:
            self._text.append(data)

    def handle_endtag(self, tag):
        if tag == "span" and self._cur is not None:
            a = self._cur
            self.found.append(
                PageNumber(
                    a["data-value"],
                    "".join(self._text),
                    a.get("data-src"),
                    a.get("data-run"),
                    a.get("data-fmt", "auto"),
                    a.get("data-derived"),
                )
            )
            self._cur = None


def numbers(html: str) -> list[PageNumber]:
    """Every number span of a page."""
    p = _Numbers()
    p.feed(html)
    return p.found


def _same(page_value: str, json_value) -> bool:
    if page_value == "null":
        return json_value is None
    if json_value is None or isinstance(json_value, (str, list, dict)):
        return False
    if isinstance(json_value, bool):
        return page_value == ("true" if json_value else "false")
    a = float(page_value)
    return a == float(json_value) or (math.isnan(a) and math.isnan(float(json_value)))


RECORD_NAME = re.compile(r"[A-Za-z0-9_]+(\.seed[0-9]+)?")  # <experiment>[.seed<N>], or manifest


def verify_numbers(html: str, runs: dict[str | None, str | Path]) -> tuple[int, list[str]]:
    """Resolve every ``data-src`` number of ``html`` in its run folder (``runs``: data-run label ->
    folder; ``None`` for a single-run page). Returns (numbers checked, problems)."""
    docs: dict[tuple, object] = {}
    problems, checked = [], 0
    for n in numbers(html):
        if not n.src:
            continue
        key, _, ptr = n.src.partition("#")
        if not RECORD_NAME.fullmatch(key):  # read from the page: never a path outside the run folder
            problems.append(f"{n.src}: {key!r} is not a record name")
            continue
        root = runs.get(n.run)
        if root is None:
            problems.append(f"{n.src}: unknown run {n.run!r}")
            continue
        if (n.run, key) not in docs:
            path = Path(root) / f"{key}.json"
            docs[(n.run, key)] = json.loads(path.read_text()) if path.is_file() else None
        doc = docs[(n.run, key)]
        if doc is None:
            problems.append(f"{n.src}: no {key}.json in {root}")
            continue
        try:
            value = resolve(doc, ptr)
        except (KeyError, IndexError, ValueError) as exc:
            problems.append(f"{n.src}: does not resolve ({exc!r})")
            continue
        checked += 1
        if not _same(n.value, value):
            problems.append(f"{n.src}: page says {n.value}, JSON says {value!r}")
        elif n.text != fmt(value, n.kind):
            problems.append(f"{n.src}: shown as {n.text!r}, expected {fmt(value, n.kind)!r}")
    return checked, problems


_FETCHING_ATTRS = {
    "src",
    "href",
    "xlink:href",
    "srcset",
    "poster",
    "action",
    "data",
    "formaction",
    "background",
    "manifest",
    "ping",
    "cite",
}
_CSS_URL = re.compile(r"(?i)url\(\s*[\"']?\s*([^\"')\s]*)|@import")


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []
        self._style = False

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            value = (value or "").strip()
            if name in _FETCHING_ATTRS and value and not (value.startswith("#") or value.lower().startswith("data:")):
                self.found.append(f"<{tag} {name}={value!r}>")
            if name == "style":
                self._css(value, tag)
        if tag == "meta" and any(n == "http-equiv" and (v or "").lower() == "refresh" for n, v in attrs):
            self.found.append("<meta http-equiv=refresh>")
        self._style = tag == "style"

    def handle_endtag(self, tag):
        self._style = False

    def handle_data(self, data):
        if self._style:
            self._css(data, "style")

    def _css(self, css: str, where: str) -> None:
        for m in _CSS_URL.finditer(css):
            target = m.group(1) if m.group(1) is not None else None
            if target is None or not (target.startswith("#") or target.lower().startswith("data:")):
                self.found.append(f"{where}: {m.group(0)}")


def external_references(html: str) -> list[str]:
    """What would make a browser reach beyond the file: tag attributes that load or link something
    (``src``, ``href``, ...) other than in-page anchors (``#...``) and ``data:`` URIs, CSS ``url()`` and
    ``@import``, meta refresh. Text that merely mentions a URL is not a reference (escaped data stays
    text); pages should still avoid it, which the tests check separately."""
    p = _Refs()
    p.feed(html)
    return p.found


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2:
        print("usage: python -m atlas_core.report.check PAGE.html RUN_DIR [RUN_DIR_B ...]", file=sys.stderr)
        return 2
    html = Path(argv[0]).read_text()
    runs = {None: argv[1]} if len(argv) == 2 else {chr(ord("a") + i): d for i, d in enumerate(argv[1:])}
    checked, problems = verify_numbers(html, runs)
    ext = external_references(html)
    print(f"{checked} numbers checked, {len(problems)} problem(s), {len(ext)} external reference(s)")
    for p in problems + ext:
        print("  " + p)
    return 1 if problems or ext else 0


if __name__ == "__main__":
    sys.exit(main())
