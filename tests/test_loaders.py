"""Document loaders: each type extracts the right text; bad uploads fail with a clear message."""

from __future__ import annotations

import io
import json
import os
import random
import struct
import time
import zipfile

import pytest

from chat.errors import DocumentError
from retrieval import loaders
from retrieval.loaders import load_document
from retrieval.sanitize import safe_filename, sanitize_text
from retrieval.types import Section

MB = 1024 * 1024


def make_pdf(*page_texts: str) -> bytes:
    """A minimal valid PDF, one page per text, written by hand with a correct xref table."""
    n = len(page_texts)
    font_id = 3 + 2 * n
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(n))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {n} >>".encode(),
    ]
    for i, text in enumerate(page_texts):
        stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {4 + 2 * i} 0 R "
            f"/Resources << /Font << /F1 {font_id} 0 R >> >> >>".encode()
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref_at = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref_at,
    )
    return bytes(out)


def make_docx() -> bytes:
    """A .docx with paragraphs, two headings and a 3x3 table with a merged row."""
    import docx

    document = docx.Document()
    document.add_paragraph("Opening paragraph before any heading.")
    document.add_heading("Results", level=1)
    document.add_paragraph("The experiment worked.")
    table = document.add_table(rows=3, cols=3)
    for r, row in enumerate([("name", "score", "pass"), ("alice", "42", "42")]):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    table.cell(2, 0).merge(table.cell(2, 2)).text = "merged"
    document.add_heading("Details", level=2)
    document.add_paragraph("Nested detail text.")
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


@pytest.fixture
def write(tmp_path):
    """Write bytes or text to tmp_path/name and return the path."""

    def _write(name: str, content: bytes | str):
        path = tmp_path / name
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return path

    return _write


def load(path, max_bytes: int = 10 * MB) -> list[Section]:
    return load_document(path, path.name, max_bytes)


def fails(path, *fragments: str, max_bytes: int = 10 * MB) -> str:
    """Assert loading fails with a one-line DocumentError naming the file and each fragment."""
    with pytest.raises(DocumentError) as info:
        load_document(path, path.name, max_bytes)
    message = str(info.value)
    assert "\n" not in message and message.startswith(path.name)
    for fragment in fragments:
        assert fragment in message
    return message


# -- each type ---------------------------------------------------------------------------


def test_txt_is_one_section(write):
    sections = load(write("notes.txt", "first line\r\nsecond line\n"))
    assert sections == [Section(text="first line\nsecond line")]


def test_md_keeps_raw_markdown(write):
    text = "# Title\n\nSome *text*.\n\n## Sub\n\n- item"
    assert load(write("README.MD", text)) == [Section(text=text)]


def test_html_keeps_visible_text_only(write):
    html = """<!doctype html><html><head><title>My  Page</title>
    <style>body { color: red }</style><script>alert('x')</script>
    <meta http-equiv="refresh" content="0; url=http://evil.example/"></head>
    <body><!-- a comment --><h1>Heading</h1><p>Some <b>bold</b> text &amp; more&nbsp;here.</p>
    <img src="http://evil.example/pixel.png"><p>Second
    paragraph &lt;b&gt;</p><table><tr><td>a</td><td>b</td></tr></table>
    <script>document.write('gone')</script></body></html>"""
    [section] = load(write("page.htm", html))
    assert section.section == "My Page"
    assert section.text == (
        "Heading\n\nSome bold text & more here.\n\nSecond paragraph <b>\n\na | b"
    )
    for absent in ("alert", "color", "gone", "comment", "http", "evil", "<img"):
        assert absent not in section.text


def test_csv_rows_use_the_header(write):
    csv_text = 'name,city,notes\nAlice,Paris,"likes ""quotes"", commas"\nBob,,\n\n'
    [section] = load(write("people.csv", csv_text))
    assert section.text == 'name: Alice; city: Paris; notes: likes "quotes", commas\nname: Bob'


def test_csv_semicolon_delimiter(write):
    [section] = load(write("eu.csv", "Name;Preis\nBrot;2,50\nKäse;7,10\n"))
    assert section.text == "Name: Brot; Preis: 2,50\nName: Käse; Preis: 7,10"


def test_json_nested_is_flattened(write):
    data = '{"name": "demo", "meta": {"tags": ["a", "b"], "ok": true, "n": null}, "empty": {}}'
    [section] = load(write("data.json", data))
    assert section.text.splitlines() == [
        "name: demo",
        "meta.tags: a, b",
        "meta.ok: true",
        "meta.n: null",
        "empty: {}",
    ]


def test_pdf_one_section_per_page(write):
    sections = load(write("two.pdf", make_pdf("Hello page one", "Hello page two")))
    assert [(s.page, s.text) for s in sections] == [(1, "Hello page one"), (2, "Hello page two")]


def test_pdf_skips_empty_pages(write):
    sections = load(write("gap.pdf", make_pdf("first", "", "third")))
    assert [(s.page, s.text) for s in sections] == [(1, "first"), (3, "third")]


def test_pdf_with_empty_user_password_opens(write):
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    for page in PdfReader(io.BytesIO(make_pdf("Restricted but readable"))).pages:
        writer.add_page(page)
    writer.encrypt(user_password="", owner_password="owner")
    buffer = io.BytesIO()
    writer.write(buffer)
    [section] = load(write("restricted.pdf", buffer.getvalue()))
    assert section.text == "Restricted but readable"


def test_docx_paragraphs_headings_and_tables(write):
    sections = load(write("Report.DOCX", make_docx()))
    assert [(s.section, s.text) for s in sections] == [
        (None, "Opening paragraph before any heading."),
        (
            "Results",
            "Results\nThe experiment worked.\nname | score | pass\nalice | 42 | 42\nmerged",
        ),
        ("Results > Details", "Details\nNested detail text."),
    ]


def test_latin1_text_falls_back(write):
    [section] = load(write("old.txt", "café “quoted” naïve".encode("cp1252")))
    assert section.text == "café “quoted” naïve"


def test_utf16_with_bom_is_text(write):
    [section] = load(write("notepad.txt", "Grüße\r\nzwei".encode("utf-16")))
    assert section.text == "Grüße\nzwei"


def test_text_is_sanitized(write):
    [section] = load(write("ctl.md", "e\u0301t\u00e9\x07 \x1b[31mred\r\n".encode()))
    assert section.text == "été [31mred"


# -- bad inputs --------------------------------------------------------------------------


def test_binary_bytes_named_txt(write):
    noise = bytes(random.Random(0).randrange(256) for _ in range(4096)) + b"\x00" * 8
    fails(write("noise.txt", noise), "looks like a binary file", ".pdf")


@pytest.mark.parametrize(
    "head, what",
    [
        (b"\x89PNG\r\n\x1a\n", "PNG"),
        (b"%PDF-1.7\n", "PDF"),
        (b"PK\x03\x04", "zip"),
        (b"\x7fELF\x02\x01", "executable"),
        (b"GIF89a", "GIF"),
        (b"\xff\xd8\xff\xe0", "JPEG"),
    ],
)
def test_magic_numbers_named_as_text(write, head, what):
    fails(write("renamed.json", head + b"plain ascii after the magic"), "binary", what)


def test_non_utf8_non_text_is_refused(write):
    fails(write("greek.csv", bytes(range(0xC0, 0xFF)) * 40), "not UTF-8", "UTF-8 encoding")


def test_empty_file(write):
    fails(write("empty.txt", b""), "is empty")


def test_whitespace_only_file(write):
    fails(write("blank.md", " \n\t\r\n "), "is empty")


def test_html_without_visible_text(write):
    fails(write("blank.html", "<html><head><title>t</title></head><script>x</script></html>"))


def test_over_limit_rejected_before_reading(tmp_path, monkeypatch):
    path = tmp_path / "huge.pdf"
    with open(path, "wb") as f:
        f.truncate(200 * MB)  # sparse: no disk used
    monkeypatch.setattr(loaders, "_read_limited", lambda *a: pytest.fail("read the file"))
    monkeypatch.setattr(loaders, "_extract_pdf", lambda *a: pytest.fail("parsed the file"))
    start = time.perf_counter()
    message = fails(path, "is 200 MB", "the limit is 1 MB", "--max-upload-mb", max_bytes=MB)
    assert time.perf_counter() - start < 1, message


def test_limit_message_distinguishes_near_sizes(write):
    fails(write("edge.txt", b"x" * (MB + 1)), "1,048,577 bytes", "limit is 1 MB", max_bytes=MB)


def test_truncated_pdf(write):
    pdf = make_pdf("Hello page one", "Hello page two")
    fails(write("cut.pdf", pdf[: len(pdf) // 3]), "could not be read as a PDF")


def test_garbage_pdf(write):
    fails(write("junk.pdf", b"%PDF-1.4\n" + b"\x13\x37garbage" * 50), "could not be read as a PDF")


def test_pdf_without_header(write):
    fails(write("fake.pdf", b"just some text"), "is not a PDF")


def test_pdf_without_text_layer(write):
    fails(write("scan.pdf", make_pdf("", "")), "no extractable text", "OCR")


def test_encrypted_pdf(write):
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    for page in PdfReader(io.BytesIO(make_pdf("Top secret"))).pages:
        writer.add_page(page)
    writer.encrypt("secret")
    buffer = io.BytesIO()
    writer.write(buffer)
    fails(write("locked.pdf", buffer.getvalue()), "encrypted (password-protected)", "decrypt")


def _no_python_docx(monkeypatch):
    import docx

    monkeypatch.setattr(docx, "Document", lambda *a: pytest.fail("python-docx was called"))


def test_docx_zip_bomb_rejected_before_parsing(tmp_path, monkeypatch):
    _no_python_docx(monkeypatch)
    path = tmp_path / "bomb.docx"
    zeros = bytes(MB)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.writestr("[Content_Types].xml", "<Types/>")
        with zf.open("word/document.xml", "w") as member:
            for _ in range(200):
                member.write(zeros)
    assert os.path.getsize(path) < 2 * MB
    fails(path, "looks like a zip bomb", "not opened")


def test_docx_high_ratio_member_rejected(tmp_path, monkeypatch):
    _no_python_docx(monkeypatch)
    path = tmp_path / "ratio.docx"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("word/document.xml", bytes(8 * MB))
    fails(path, "zip bomb", "word/document.xml", max_bytes=50 * MB)


def test_docx_too_many_members(tmp_path, monkeypatch):
    _no_python_docx(monkeypatch)
    path = tmp_path / "many.docx"
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(loaders.DOCX_MAX_MEMBERS + 1):
            zf.writestr(f"m{i}", b"")
    fails(path, "zip bomb", "members")


def test_docx_lying_about_its_size_fails_cleanly(tmp_path):
    # A member that declares 1 KB but inflates to 64 MB passes the declared-size checks;
    # zipfile then stops at the declared size and the CRC check fails.
    buffer = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(make_docx())) as src:
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as dst:
            for info in src.infolist():
                big = info.filename == "word/document.xml"
                dst.writestr(info.filename, bytes(64 * MB) if big else src.read(info))
    data = bytearray(buffer.getvalue())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as zf:
        info = zf.getinfo("word/document.xml")
    central = data.find(b"word/document.xml", data.find(b"PK\x01\x02")) - 46  # name is at +46
    struct.pack_into("<I", data, central + 24, 1000)  # central directory: uncompressed size
    struct.pack_into("<I", data, info.header_offset + 22, 1000)  # local header: same
    path = tmp_path / "liar.docx"
    path.write_bytes(data)
    start = time.perf_counter()
    fails(path, "could not be read as a .docx", "CRC")
    assert time.perf_counter() - start < 2


def test_docx_not_a_zip(write):
    fails(write("plain.docx", b"this is not a zip file at all"), "is not a valid .docx")


def test_old_doc_renamed_docx(write):
    fails(write("old.docx", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(500)), "old .doc")


def test_docx_zip_without_document(tmp_path):
    path = tmp_path / "other.docx"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("hello.txt", "hi")
    fails(path, "not a valid .docx", "word/document.xml")


def test_docx_with_broken_xml(tmp_path):
    path = tmp_path / "broken.docx"
    with zipfile.ZipFile(io.BytesIO(make_docx())) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            body = src.read(info)
            dst.writestr(info, body[:100] if info.filename == "word/document.xml" else body)
    fails(path, "could not be read as a .docx")


def test_malformed_json(write):
    fails(write("bad.json", '{"a": 1,,}'), "is not valid JSON", "line 1")


def test_deeply_nested_json(write):
    fails(write("deep.json", "[" * 100_000 + "]" * 100_000), "JSON")


def test_unsupported_suffix(write):
    fails(write("setup.exe", b"MZ\x90\x00"), ".exe files are not supported", ".txt", ".docx")


def test_no_suffix(write):
    fails(write("Makefile", "all:\n"), "without an extension")


def test_missing_file(tmp_path):
    message = fails(tmp_path / "gone.txt", "could not be read", "No such file")
    assert str(tmp_path) not in message  # the server's temp path is not shown to the user


def test_csv_with_oversized_field(write):
    fails(write("wide.csv", "a,b\n" + '"' + "x" * 200_000 + '",1\n'), "is not valid CSV", ".txt")


def test_html_svg_title_is_not_the_page_title(write):
    html = "<body><svg><title>icon</title></svg><p>Body text</p></body>"
    assert load(write("svg.html", html)) == [Section(text="Body text")]


def test_message_uses_safe_name(write):
    path = write("x.exe", b"data")
    with pytest.raises(DocumentError, match=r"^evil\.exe cannot"):
        load_document(path, "../../\x00evil.exe", MB)


# -- sanitize ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\evil\\x.txt", "x.txt"),
        ("a\x00b\nc.txt", "abc.txt"),
        ("tab\there\x7f\x85.md", "tab here.md"),
        ("..", "document"),
        ("", "document"),
        ("/", "document"),
        ("dir/..", "dir"),
        ("报告.pdf", "报告.pdf"),
        ("e\u0301.txt", "\u00e9.txt"),
        ("evil\u202etxt.exe", "eviltxt.exe"),
        ("  spaced name.txt ", "spaced name.txt"),
    ],
)
def test_safe_filename(raw, expected):
    assert safe_filename(raw) == expected


def test_safe_filename_caps_length_and_keeps_suffix():
    name = safe_filename("x" * 500 + ".docx")
    assert len(name) == 200 and name.endswith(".docx")
    assert len(safe_filename("y" * 500)) == 200


def test_sanitize_text():
    assert sanitize_text("a\x00b\ud800c\udfffd") == "abcd"
    assert sanitize_text("\ud83d\ude00") == "\U0001f600"  # a valid pair is joined, not dropped
    assert sanitize_text("e\u0301") == "\u00e9"
    assert sanitize_text("one\r\ntwo\rthree\n") == "one\ntwo\nthree\n"
    assert sanitize_text("tab\tkept\x01\x1b\x7f\x9f") == "tab\tkept"


def test_json_that_unpacks_far_beyond_its_size_is_refused(write):
    # 20 KB that flattens to about 950 KB of "[0][0]...[0][i]: 0" lines (each value in
    # its own list: a list of plain values would be one line).
    bomb = "[" * 60 + "[0]," * 4999 + "[0]" + "]" * 60
    message = fails(write("bomb.json", bomb), "unpacks to more than", "characters")
    assert "upload it as .txt" in message
    # The issue's own example nests deeper still: refused before it is parsed.
    fails(write("deeper.json", "[" * 200 + "0," * 999 + "0" + "]" * 200), "nested more than")


def test_csv_whose_headers_repeat_beyond_its_size_is_refused(write):
    header = ",".join(f"column {i:03d} " + "x" * 110 for i in range(100))
    rows = "\n".join(",".join("1" * 100) for _ in range(300))
    fails(write("wide.csv", header + "\n" + rows), "unpacks to more than")


def test_ordinary_json_and_csv_still_load(write):
    data = {"items": [{"name": f"item {i}", "price": i} for i in range(200)]}
    sections = load(write("shop.json", json.dumps(data)))
    assert "items[199].name: item 199" in sections[0].text
    table = "name,price\n" + "\n".join(f"item {i},{i}" for i in range(200))
    assert "name: item 5; price: 5" in load(write("shop.csv", table))[0].text
