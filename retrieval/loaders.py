"""Turn an uploaded file into Sections of clean text, refusing anything unsafe or unreadable.

Every failure is a ``DocumentError`` whose one-line message names the file and says what to
do. The order of checks matters: type (by suffix) and size are checked before a byte is
read, and the bytes are sniffed before any parser sees them.

Limits (see the constants below):
- the upload limit ``max_bytes`` is passed in (``--max-upload-mb``);
- a .docx may unpack to at most 20x the upload limit, capped at 100 MiB (but never less
  than 2x the upload limit, so image-heavy documents still load), with at most 2,000
  members, no member over 5 MiB that compresses better than 100:1, and only the
  stored/deflate compression methods Word itself uses;
- a PDF may have at most 2,000 pages; pypdf itself caps every decompressed stream at 75 MB.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import zipfile
from html.parser import HTMLParser
from pathlib import Path

from chat.errors import DocumentError
from retrieval.sanitize import decode_text, safe_filename, sanitize_text, sniff_binary
from retrieval.types import SUPPORTED_SUFFIXES, Section

TEXT_SUFFIXES = (".txt", ".md", ".html", ".htm", ".csv", ".json")
MIB = 1024 * 1024
DOCX_MAX_MEMBERS = 2000
DOCX_MAX_TOTAL = 100 * MIB
DOCX_MAX_RATIO = 100
DOCX_RATIO_MIN_SIZE = 5 * MIB
PDF_MAX_PAGES = 2000

_SUPPORTED = ", ".join(SUPPORTED_SUFFIXES)


def _error(name: str, problem: str) -> DocumentError:
    return DocumentError(f"{name} {problem}")


def _mb(n: int) -> str:
    value = n / MIB
    if value == int(value):
        return f"{value:.0f} MB"
    return f"{value:.1f} MB" if value >= 1 else f"{value:.2f} MB"


def _reason(exc: BaseException) -> str:
    """A short, single-line description of a parser's exception."""
    text = " ".join(str(exc).split())
    return (text[:150] + "...") if len(text) > 150 else (text or type(exc).__name__)


def load_document(path: str | Path, filename: str, max_bytes: int) -> list[Section]:
    """Read the upload at ``path`` (originally named ``filename``) into Sections of text."""
    name = safe_filename(filename)
    suffix = Path(name).suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        kind = f"{suffix} files are" if suffix else "files without an extension are"
        raise _error(name, f"cannot be added: {kind} not supported; use one of {_SUPPORTED}")
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise _error(name, f"could not be read ({exc.strerror or exc}); upload it again") from None
    if size > max_bytes:
        shown = _mb(size)
        if float(shown.split()[0]) * MIB <= max_bytes:  # "1.0 MB; the limit is 1 MB" helps no one
            shown = f"{size:,} bytes"
        raise _error(name, f"is {shown}; the limit is {_mb(max_bytes)} (--max-upload-mb)")
    if size == 0:
        raise _error(name, "is empty (0 bytes); upload a file with some text in it")
    data = _read_limited(path, max_bytes, name)
    if suffix in TEXT_SUFFIXES:
        text = _decode_text(data, name)
        sections = _TEXT_EXTRACTORS[suffix](text, name)
    elif suffix == ".pdf":
        sections = _extract_pdf(data, name)
    else:
        sections = _extract_docx(data, name, max_bytes)
    sections = [s for s in (_clean(s) for s in sections) if s.text]
    if not sections:
        raise _error(name, "is empty (no text found); upload a file with some text in it")
    return sections


def _read_limited(path: str | Path, max_bytes: int, name: str) -> bytes:
    # Read at most one byte past the limit, in case the file grew after the size check.
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as exc:
        raise _error(name, f"could not be read ({exc.strerror or exc}); upload it again") from None
    if len(data) > max_bytes:
        raise _error(name, f"is over the limit of {_mb(max_bytes)} (--max-upload-mb)")
    return data


def _clean(section: Section) -> Section:
    section.text = sanitize_text(section.text).strip()
    if section.section is not None:
        section.section = " ".join(sanitize_text(section.section).split()) or None
    return section


# -- sniffing and decoding ---------------------------------------------------------------


def _decode_text(data: bytes, name: str) -> str:
    """Decode a text upload, refusing binary content."""
    what = sniff_binary(data)
    if what:
        raise _error(
            name, f"looks like a binary file ({what}), not text; only {_SUPPORTED} are supported"
        )
    text = decode_text(data)
    if text is None:
        raise _error(name, "is not UTF-8 text; save it with UTF-8 encoding and upload it again")
    return text


# -- text formats ------------------------------------------------------------------------


def _extract_plain(text: str, name: str) -> list[Section]:
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


def _extract_html(text: str, name: str) -> list[Section]:
    parser = _VisibleText()
    parser.feed(text)
    parser.close()
    title = " ".join("".join(parser.title).split()) or None
    return [Section(text=parser.text(), section=title)]


def _extract_csv(text: str, name: str) -> list[Section]:
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
    for row in rows[1:]:
        cols = header + [f"column {i + 1}" for i in range(len(header), len(row))]
        lines.append(
            "; ".join(f"{c}: {v.strip()}" for c, v in zip(cols, row, strict=False) if v.strip())
        )
    return [Section(text="\n".join(lines))]


def _json_scalar(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict | list):
        return "{}" if isinstance(value, dict) else "[]"
    return json.dumps(value)


def _extract_json(text: str, name: str) -> list[Section]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}: {exc.msg}"
        raise _error(name, f"is not valid JSON ({where}); fix it or upload it as .txt") from None
    except (ValueError, RecursionError) as exc:
        raise _error(name, f"is not usable JSON ({_reason(exc)}); upload it as .txt") from None
    # Flatten iteratively: deeply nested JSON must not hit the recursion limit.
    lines: list[str] = []
    stack: list[tuple[str, object]] = [("", data)]
    while stack:
        key, value = stack.pop()
        if isinstance(value, dict) and value:
            items = [(f"{key}.{k}" if key else str(k), v) for k, v in value.items()]
        elif isinstance(value, list) and value:
            items = [(f"{key}[{i}]", v) for i, v in enumerate(value)]
        else:
            lines.append(f"{key}: {_json_scalar(value)}" if key else _json_scalar(value))
            continue
        stack.extend(reversed(items))
    return [Section(text="\n".join(lines))]


_TEXT_EXTRACTORS = {
    ".txt": _extract_plain,
    ".md": _extract_plain,
    ".html": _extract_html,
    ".htm": _extract_html,
    ".csv": _extract_csv,
    ".json": _extract_json,
}


# -- PDF -----------------------------------------------------------------------------------


def _extract_pdf(data: bytes, name: str) -> list[Section]:
    """One Section per PDF page with text (``page`` is 1-based)."""
    if not data.lstrip().startswith(b"%PDF"):
        raise _error(name, "is not a PDF (it does not start with %PDF); check the file type")
    import pypdf
    from pypdf.errors import DependencyError

    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            try:
                decrypted = reader.decrypt("")
            except DependencyError:
                raise _error(
                    name,
                    "is encrypted with AES, which needs the 'cryptography' package; "
                    "decrypt it first (or pip install cryptography)",
                ) from None
            if not decrypted:
                raise _error(name, "is encrypted (password-protected); decrypt it first")
        n_pages = len(reader.pages)
    except DocumentError:
        raise
    except Exception as exc:  # pypdf raises many types on malformed input
        raise _error(name, f"could not be read as a PDF: {_reason(exc)}") from None
    if n_pages > PDF_MAX_PAGES:
        raise _error(name, f"has {n_pages} pages; the limit is {PDF_MAX_PAGES}; split it first")
    sections, failure = [], None
    for i in range(n_pages):
        try:
            text = reader.pages[i].extract_text() or ""
        except Exception as exc:  # one bad page should not lose the others
            failure = failure or exc
            continue
        if text.strip():
            sections.append(Section(text=text, page=i + 1))
    if not sections:
        if failure is not None:
            raise _error(name, f"could not be read as a PDF: {_reason(failure)}")
        raise _error(
            name, "has no extractable text (scanned?); OCR is not supported, use a text PDF"
        )
    return sections


# -- DOCX ----------------------------------------------------------------------------------


def _check_docx_zip(data: bytes, name: str, max_bytes: int) -> None:
    """Refuse non-zips and zip bombs using the sizes the archive declares (no inflating).

    zipfile stops reading a member at its declared size (then fails its CRC check), so
    declared sizes bound what python-docx can unpack later.
    """
    if data.startswith(b"\xd0\xcf\x11\xe0"):
        raise _error(
            name,
            "is not a .docx (it is an old .doc or a password-protected file); "
            "save it as an unprotected .docx",
        )
    not_docx = "is not a valid .docx ({}); save it again from Word as .docx"
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = zf.infolist()
    except Exception as exc:  # BadZipFile mostly, but a damaged directory raises others
        raise _error(name, not_docx.format(f"not a zip archive: {_reason(exc)}")) from None
    bomb = "looks like a zip bomb ({}); it was not opened"
    if len(infos) > DOCX_MAX_MEMBERS:
        raise _error(name, bomb.format(f"{len(infos)} members, limit {DOCX_MAX_MEMBERS}"))
    limit = max(min(20 * max_bytes, DOCX_MAX_TOTAL), 2 * max_bytes)
    total = sum(i.file_size for i in infos)
    if total > limit:
        raise _error(name, bomb.format(f"unpacks to {_mb(total)}, limit {_mb(limit)}"))
    for info in infos:
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise _error(name, not_docx.format("unsupported zip compression"))
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > DOCX_RATIO_MIN_SIZE and ratio > DOCX_MAX_RATIO:
            raise _error(name, bomb.format(f"{info.filename} compressed {ratio:.0f}:1"))
    if "word/document.xml" not in {i.filename for i in infos}:
        raise _error(name, not_docx.format("no word/document.xml inside"))


def _heading_level(paragraph) -> int | None:
    style = paragraph.style
    style_name = (style.name or "") if style is not None else ""
    if style_name == "Title":
        return 0
    if style_name.startswith("Heading"):
        digits = style_name.removeprefix("Heading").strip()
        return int(digits) if digits.isdigit() else 1
    return None


def _extract_docx(data: bytes, name: str, max_bytes: int) -> list[Section]:
    """Paragraphs and tables in document order; a heading starts a new Section."""
    _check_docx_zip(data, name, max_bytes)
    import docx
    from docx.table import Table

    try:
        document = docx.Document(io.BytesIO(data))
        blocks = list(document.iter_inner_content())
        sections: list[Section] = []
        path: list[tuple[int, str]] = []  # open headings as (level, text)
        lines: list[str] = []

        def flush() -> None:
            if any(line.strip() for line in lines):
                label = " > ".join(text for _, text in path) or None
                sections.append(Section(text="\n".join(lines), section=label))
            lines.clear()

        for block in blocks:
            if isinstance(block, Table):
                for row in block.rows:
                    # A merged cell is repeated once per grid column it spans: keep it once.
                    cells = {id(c): c.text.strip() for c in row.cells}.values()
                    if any(cells):
                        lines.append(" | ".join(c for c in cells if c))
                continue
            level = _heading_level(block)
            if level is not None and block.text.strip():
                flush()
                path = [(lvl, t) for lvl, t in path if lvl < level] + [(level, block.text.strip())]
            lines.append(block.text)
        flush()
    except DocumentError:
        raise
    except Exception as exc:  # python-docx/lxml raise many types on malformed input
        raise _error(name, f"could not be read as a .docx: {_reason(exc)}") from None
    return sections
