"""Text formats (.txt, .md, .html, .csv, .json) turned into Sections of plain text.

HTML gives its visible text only: scripts, styles and embedded objects are
dropped and nothing is ever fetched or run.
"""

from __future__ import annotations

import csv
import io
import json
import re
from html.parser import HTMLParser

from retrieval.loaders_common import _error, _reason
from retrieval.types import Section


def _extract_plain(text: str, name: str, max_chars: int | None = None) -> list[Section]:
    return [Section(text=text)]


class _VisibleText(HTMLParser):
    """Collects the text a browser would show; nothing is fetched or executed."""

    HIDDEN = {"script", "style", "head", "template", "noscript", "svg", "math", "iframe"}
    HIDDEN |= {"object"}
    BLOCK = {"p", "div", "section", "article", "header", "footer", "main", "nav", "aside"}
    BLOCK |= {"h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "table", "blockquote", "pre"}
    BLOCK |= {"form", "figure", "figcaption", "dl", "hr", "address", "details", "summary"}
    LINE = {"br", "li", "tr", "dt", "dd", "caption", "option"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title: list[str] = []
        self.hidden: list[str] = []
        self.in_title = False
        self.in_pre = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "body":
            self.hidden.clear()  # an unclosed <head> ends where the body starts
        elif tag in self.HIDDEN:
            self.hidden.append(tag)
        elif tag == "title" and self.hidden in ([], ["head"]):  # not an <svg> <title>
            self.in_title = True
        self._break(tag)
        if tag == "pre":
            self.in_pre += 1
        elif tag in ("td", "th"):
            self.parts.append(" | ")

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        self._break(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in self.hidden:
            while self.hidden and self.hidden.pop() != tag:
                pass
        elif tag == "title":
            self.in_title = False
        elif tag == "pre" and self.in_pre:
            self.in_pre -= 1
        self._break(tag)

    def handle_data(self, data: str) -> None:
        if self.in_title:
            self.title.append(data)
        elif not self.hidden:
            self.parts.append(data if self.in_pre else re.sub(r"\s+", " ", data))

    def _break(self, tag: str) -> None:
        if tag in self.BLOCK:
            self.parts.append("\n\n")
        elif tag in self.LINE:
            self.parts.append("\n")

    def text(self) -> str:
        """The collected text: whitespace collapsed within lines, at most one blank line."""
        lines = []
        for line in "".join(self.parts).split("\n"):
            line = " ".join(line.replace("\xa0", " ").split()).strip(" |")
            if line or (lines and lines[-1]):
                lines.append(line)
        return "\n".join(lines).strip()


def _extract_html(text: str, name: str, max_chars: int | None = None) -> list[Section]:
    parser = _VisibleText()
    parser.feed(text)
    parser.close()
    title = " ".join("".join(parser.title).split()) or None
    return [Section(text=parser.text(), section=title)]


def _extract_csv(text: str, name: str, max_chars: int | None = None) -> list[Section]:
    try:
        dialect = csv.Sniffer().sniff(text[:8192], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    try:
        rows = [
            row for row in csv.reader(io.StringIO(text), dialect) if any(c.strip() for c in row)
        ]
    except csv.Error as exc:
        raise _error(
            name, f"is not valid CSV ({_reason(exc)}); fix it or upload it as .txt"
        ) from None
    if not rows:
        return []
    header = [h.strip() or f"column {i + 1}" for i, h in enumerate(rows[0])]
    if len(rows) == 1:
        return [Section(text="columns: " + ", ".join(header))]
    lines = []
    total = 0
    for row in rows[1:]:
        cols = header + [f"column {i + 1}" for i in range(len(header), len(row))]
        line = "; ".join(f"{c}: {v.strip()}" for c, v in zip(cols, row, strict=False) if v.strip())
        total += len(line) + 1
        if max_chars is not None and total > max_chars:
            raise too_much_text(name, max_chars)
        lines.append(line)
    return [Section(text="\n".join(lines))]


def _json_scalar(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict | list):
        return "{}" if isinstance(value, dict) else "[]"
    return json.dumps(value)


def _all_scalars(values: list) -> bool:
    """Whether a JSON list holds only plain values (no objects, no lists)."""
    return not any(isinstance(v, dict | list) for v in values)


def _extract_json(text: str, name: str, max_chars: int | None = None) -> list[Section]:
    if _too_deep(text):
        raise _error(
            name,
            f"is JSON nested more than {MAX_JSON_DEPTH} levels deep, more than a document "
            "needs; flatten it, or upload it as .txt",
        )
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}: {exc.msg}"
        raise _error(name, f"is not valid JSON ({where}); fix it or upload it as .txt") from None
    except (ValueError, RecursionError) as exc:
        raise _error(name, f"is not usable JSON ({_reason(exc)}); upload it as .txt") from None
    # Flatten iteratively: deeply nested JSON must not hit the recursion limit.
    lines: list[str] = []
    total = 0
    stack: list[tuple[str, object]] = [("", data)]
    while stack:
        key, value = stack.pop()
        if isinstance(value, dict) and value:
            items = [(f"{key}.{k}" if key else str(k), v) for k, v in value.items()]
        elif isinstance(value, list) and value and not _all_scalars(value):
            items = [(f"{key}[{i}]", v) for i, v in enumerate(value)]
        else:
            if isinstance(value, list) and value:
                # A list of plain values is one line: its key path once, not once per value.
                text = ", ".join(_json_scalar(v) for v in value)
            else:
                text = _json_scalar(value)
            line = f"{key}: {text}" if key else text
            total += len(line) + 1
            if max_chars is not None and total > max_chars:
                raise too_much_text(name, max_chars)
            lines.append(line)
            continue
        stack.extend(reversed(items))
    return [Section(text="\n".join(lines))]


MAX_JSON_DEPTH = 64
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_JSON_BRACKETS = re.compile(r"[^\[\]{}]+")


def _too_deep(text: str) -> bool:
    """Whether ``[`` and ``{`` (outside strings) nest deeper than ``MAX_JSON_DEPTH``."""
    depth = 0
    for ch in _JSON_BRACKETS.sub("", _JSON_STRING.sub("", text)):
        depth += 1 if ch in "[{" else -1
        if depth > MAX_JSON_DEPTH:
            return True
    return False


def too_much_text(name: str, max_chars: int):
    """The error for a document whose text grows far beyond its upload size."""
    return _error(
        name,
        f"unpacks to more than {max_chars:,} characters of text, far more than its size "
        "suggests; split it or upload it as .txt",
    )


_TEXT_EXTRACTORS = {
    ".txt": _extract_plain,
    ".md": _extract_plain,
    ".html": _extract_html,
    ".htm": _extract_html,
    ".csv": _extract_csv,
    ".json": _extract_json,
}


# -- PDF -----------------------------------------------------------------------------------
