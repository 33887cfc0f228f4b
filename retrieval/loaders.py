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

import io
import os
import zipfile
from pathlib import Path

from chat.errors import DocumentError
from retrieval.loaders_common import MIB, _error, _mb, _reason
from retrieval.sanitize import decode_text, safe_filename, sanitize_text, sniff_binary
from retrieval.text_formats import _TEXT_EXTRACTORS, too_much_text
from retrieval.types import SUPPORTED_SUFFIXES, Section

TEXT_SUFFIXES = (".txt", ".md", ".html", ".htm", ".csv", ".json")
DOCX_MAX_MEMBERS = 2000
DOCX_MAX_TOTAL = 100 * MIB
DOCX_MAX_RATIO = 100
DOCX_RATIO_MIN_SIZE = 5 * MIB
PDF_MAX_PAGES = 2000
# Text may grow past the upload's size (CSV headers repeat on every row, JSON key
# paths on every value), but not without bound: a few KB must not become megabytes.
TEXT_RATIO = 32
TEXT_FLOOR = 64 * 1024


def max_text_chars(upload_bytes: int) -> int:
    """The most text a document of ``upload_bytes`` may yield."""
    return TEXT_RATIO * upload_bytes + TEXT_FLOOR


_SUPPORTED = ", ".join(SUPPORTED_SUFFIXES)


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
        sections = _TEXT_EXTRACTORS[suffix](text, name, max_text_chars(size))
    elif suffix == ".pdf":
        sections = _extract_pdf(data, name)
    else:
        sections = _extract_docx(data, name, max_bytes)
    if sum(len(s.text) for s in sections) > max_text_chars(size):
        raise too_much_text(name, max_text_chars(size))
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
