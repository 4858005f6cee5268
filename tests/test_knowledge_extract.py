"""Document bytes -> text for every knowledge format, on documents the tests make themselves."""

from __future__ import annotations

import io
import json
import os
import struct
from pathlib import Path

import pytest

from liveavatar.errors import ParamError, ProcessingError
from liveavatar.knowledge.extract import decode, detect_format, extract_text, html_to_text

FILLER = (
    "Our company builds household devices and supports them for many years. Customers can reach the service "
    "team by mail or by phone, and every device ships with a printed guide. Standard warranty terms apply to "
    "accessories for six months. Spare parts are available from authorised dealers in most countries."
)


def _pdf_string(text: str) -> str:
    return "(" + text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") + ")"


def make_pdf(pages: list[list[str]]) -> bytes:
    """A real PDF (Helvetica, one text line per list item) written object by object, with a correct xref table."""
    objects: list[bytes] = []
    kids = []
    font_id = 3 + 2 * len(pages)
    for number, lines in enumerate(pages):
        page_id, content_id = 3 + 2 * number, 4 + 2 * number
        kids.append(f"{page_id} 0 R")
        ops = "BT /F1 11 Tf 14 TL 72 740 Td " + " ".join(f"{_pdf_string(line)} Tj T*" for line in lines) + " ET"
        stream = ops.encode("latin-1")
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 {font_id} 0 R >> >> "
            f"/Contents {content_id} 0 R >>".encode()
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    catalog = b"<< /Type /Catalog /Pages 2 0 R >>"
    tree = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(pages)} >>".encode()
    all_objects = [catalog, tree, *objects]
    all_objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(all_objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(all_objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(all_objects) + 1, xref)
    return bytes(out)


def make_docx(paragraphs: list[str], table: list[list[str]] | None = None, heading: str = "") -> bytes:
    """A real DOCX made with python-docx."""
    import docx

    document = docx.Document()
    if heading:
        document.add_heading(heading, level=1)
    for paragraph in paragraphs:
        document.add_paragraph(paragraph)
    if table:
        grid = document.add_table(rows=len(table), cols=len(table[0]))
        for r, row in enumerate(table):
            for c, cell in enumerate(row):
                grid.cell(r, c).text = cell
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def make_doc(paragraphs: list[str]) -> bytes:
    """A real legacy Word 97 .doc: a FIB, the text as one cp1252 piece, and a piece table, in an OLE container."""
    text = ("\r".join(paragraphs) + "\r").encode("cp1252")
    fc_text = 0x400
    fib = bytearray(fc_text)
    struct.pack_into("<HHHHHH", fib, 0, 0xA5EC, 0x00C1, 0, 0x0409, 0, 0x0200)  # 0x0200: table stream is 1Table
    struct.pack_into("<H", fib, 0x0C, 0x00BF)
    struct.pack_into("<II", fib, 0x18, fc_text, fc_text + len(text))  # fcMin, fcMac
    struct.pack_into("<H", fib, 0x20, 14)
    struct.pack_into("<H", fib, 0x3E, 22)
    struct.pack_into("<I", fib, 0x40, fc_text + len(text))  # cbMac
    struct.pack_into("<I", fib, 0x4C, len(text))  # ccpText
    struct.pack_into("<H", fib, 0x98, 0x5D)
    # one piece: CPs [0, n), text at fc_text, 8-bit ("compressed": bit 30 set, offset doubled)
    pieces = struct.pack("<II", 0, len(text)) + struct.pack("<HIH", 0, (fc_text * 2) | 0x40000000, 0)
    clx = b"\x02" + struct.pack("<I", len(pieces)) + pieces
    # a style sheet with one empty style: STSHI (18 bytes: cstd=1, cbSTDBaseInFile=10, ...), then cbStd=0
    styles = struct.pack("<H9H", 18, 1, 10, 0, 0, 0, 0, 0, 0, 0) + struct.pack("<H", 0)
    struct.pack_into("<II", fib, 0x1A2, 0, len(clx))  # fcClx, lcbClx
    struct.pack_into("<II", fib, 0xA2, len(clx), len(styles))  # fcStshf, lcbStshf
    word = bytes(fib) + text
    # streams of 4096 bytes or more live in regular sectors, so no mini stream is needed
    table = (clx + styles).ljust(4096, b"\0")
    return _ole({"WordDocument": word.ljust(max(4096, len(word)), b"\0"), "1Table": table})


def _ole(streams: dict[str, bytes]) -> bytes:
    """A compound file (512-byte sectors, one FAT sector) holding `streams` (WordDocument and 1Table)."""
    end, free, fat_sector, none = 0xFFFFFFFE, 0xFFFFFFFF, 0xFFFFFFFD, 0xFFFFFFFF
    fat, starts, data = [fat_sector, end], [], b""
    for body in streams.values():
        body += bytes(-len(body) % 512)
        count = len(body) // 512
        starts.append(len(fat))
        fat += [len(fat) + i + 1 for i in range(count - 1)] + [end]
        data += body
    fat += [free] * (128 - len(fat))

    def entry(name: str, kind: int, left: int, child: int, start: int, size: int) -> bytes:
        raw = (name.encode("utf-16-le") + b"\0\0") if name else b""
        head = raw.ljust(64, b"\0") + struct.pack("<HBBIII", len(raw), kind, 1, left, none, child)
        return head + bytes(36) + struct.pack("<IQ", start, size)

    sizes = [len(body) for body in streams.values()]
    # directory tree: the root's child is WordDocument; 1Table sorts before it (shorter name), as its left sibling
    directory = entry("Root Entry", 5, none, 1, end, 0) + entry("WordDocument", 2, 2, none, starts[0], sizes[0])
    directory += entry("1Table", 2, none, none, starts[1], sizes[1]) + entry("", 0, none, none, 0, 0)
    header = bytes.fromhex("D0CF11E0A1B11AE1") + bytes(16) + struct.pack("<HHHHH", 0x3E, 3, 0xFFFE, 9, 6)
    header += bytes(6) + struct.pack("<9I", 0, 1, 1, 0, 4096, end, 0, end, 0) + struct.pack("<109I", 0, *[free] * 108)
    return header + struct.pack("<128I", *fat) + directory + data


def _words(text: str) -> str:
    return " ".join(text.split())


# --- formats ----------------------------------------------------------------------------------------------------


def test_pdf_text_from_every_page() -> None:
    data = make_pdf([["Product manual", FILLER[:80]], ["The Zorblax warranty lasts 17 months (from purchase)."]])
    text = extract_text(data, "manual.pdf")
    assert "Product manual" in text
    assert "The Zorblax warranty lasts 17 months (from purchase)." in _words(text)


def test_docx_paragraphs_headings_and_tables() -> None:
    data = make_docx(
        ["Employees of Quillfeather Labs receive 23 vacation days per year.", FILLER],
        table=[["Permit", "Lot"], ["Parking permit", "Blue lot B7"]],
        heading="Staff handbook",
    )
    text = extract_text(data, "handbook.docx")
    assert "Staff handbook" in text
    assert "Employees of Quillfeather Labs receive 23 vacation days per year." in text
    assert "Parking permit | Blue lot B7" in text


def test_txt_and_md() -> None:
    assert extract_text(b"Pemberton hotline: 7am to 3pm.\r\n", "support.txt") == "Pemberton hotline: 7am to 3pm."
    md = b"# Release notes\n\nThe **Nimbus-9** firmware adds the [Krellic protocol](https://example.com/k).\n\n```\ncode\n```\n"
    text = extract_text(md, "notes.md")
    assert "Release notes" in text and "#" not in text
    assert "The Nimbus-9 firmware adds the Krellic protocol." in text
    assert "https://example.com" not in text


def test_text_decoding_fallbacks() -> None:
    assert decode("Café Olé".encode("utf-16")) == "Café Olé"
    assert decode("Café".encode("utf-8-sig")) == "Café"
    assert decode("Grüße aus Köln, schöne Straße".encode("cp1252")) == "Grüße aus Köln, schöne Straße"
    assert decode("Привет".encode("koi8-r"), "text/plain; charset=koi8-r") == "Привет"
    assert extract_text("naïve résumé".encode("latin-1"), "cv.txt") == "naïve résumé"


def test_json_is_flattened_to_key_value_lines() -> None:
    data = {
        "company": "Velotrax",
        "faq": [
            {"question": "Who founded Velotrax?", "answer": "Imogen Parsley founded Velotrax in 1987."},
            {"question": "Is shipping free?", "answer": "Yes", "free": True, "limit": None},
        ],
    }
    text = extract_text(json.dumps(data).encode(), "faq.json")
    lines = text.splitlines()
    assert "company: Velotrax" in lines
    assert "faq answer: Imogen Parsley founded Velotrax in 1987." in lines
    assert "faq free: true" in lines and "faq limit: null" in lines
    assert "{" not in text
    jsonl = b'{"city": "Oslo"}\n{"city": "Bergen"}\n'
    assert extract_text(jsonl, "cities.json").split("\n\n") == ["city: Oslo", "city: Bergen"]


def test_xml_text_with_element_names() -> None:
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<stores xmlns:x="urn:x"><store id="n1"><city>Tromsø</city>'
        "<manager>Oskar Brandvold</manager><x:note>Open <b>late</b> on Fridays</x:note></store></stores>"
    ).encode()
    text = extract_text(xml, "stores.xml")
    assert "city: Tromsø" in text.splitlines()
    assert "manager: Oskar Brandvold" in text.splitlines()
    assert "store id: n1" in text.splitlines()
    assert "late" in text and "Fridays" in text


def test_xml_entities_are_refused(tmp_path: Path) -> None:
    laughs = (
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;">'
        b'<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;">]><lolz>&lol3;</lolz>'
    )
    with pytest.raises(ParamError, match="entity|entities"):
        extract_text(laughs, "bomb.xml")
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRETVALUE")
    xxe = f'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file://{secret}">]><r>&x;</r>'.encode()
    with pytest.raises(ParamError):
        extract_text(xxe, "xxe.xml")
    with pytest.raises(ParamError, match="malformed"):
        extract_text(b"<a><b></a>", "broken.xml")


def test_csv_rows_become_column_value_lines() -> None:
    csv_text = "product,price,color\nGlimmerstone Lamp,249 EUR,teal\nPlain Lamp,19 EUR,\n"
    text = extract_text(csv_text.encode(), "prices.csv")
    blocks = text.split("\n\n")
    assert blocks[0].splitlines() == ["product: Glimmerstone Lamp", "price: 249 EUR", "color: teal"]
    assert blocks[1].splitlines() == ["product: Plain Lamp", "price: 19 EUR"]
    semicolons = extract_text(b"name;city\nAda;London\nGrace;Arlington\n", "people.csv")
    assert "name: Grace\ncity: Arlington" in semicolons


def test_html_keeps_content_and_drops_scripts_styles_navigation() -> None:
    html = """<!doctype html><html><head><title>About Sprocketville</title><style>p{color:red}</style>
    <script>var leaked = "scriptword";</script></head><body><nav><a href="/">Home</a> navword</nav>
    <h1>The museum</h1><p>The Sprocketville museum owns 412 antique bicycles.</p>
    <ul><li>Open daily</li><li>Free entry &amp; guided tours</li></ul><noscript>noscriptword</noscript>
    <table><tr><td>Mon</td><td>9-17</td></tr></table></body></html>"""
    text = html_to_text(html)
    assert text.splitlines()[0] == "About Sprocketville"
    assert "The museum" in text.split("\n\n")
    assert "The Sprocketville museum owns 412 antique bicycles." in text.split("\n\n")
    assert "Free entry & guided tours" in text
    assert "Mon | 9-17" in text
    for hidden in ("scriptword", "navword", "color:red", "noscriptword"):
        assert hidden not in text
    assert extract_text(html.encode("cp1252"), "https://example.com/about", "text/html; charset=windows-1252") == text


def test_format_detection() -> None:
    assert detect_format("Manual.PDF") == "pdf"
    assert detect_format("https://example.com/files/report.docx?download=1") == "docx"
    assert detect_format("https://example.com/page", "text/html; charset=utf-8") == "html"
    assert detect_format("https://example.com/api", "application/ld+json") == "json"
    assert detect_format("blob", "", make_pdf([["x"]])) == "pdf"
    assert detect_format("blob", "", make_docx(["x"])) == "docx"
    assert detect_format("blob", "application/octet-stream", b"\x00\x01") is None
    with pytest.raises(ParamError, match="unsupported"):
        extract_text(b"\x00\x01\x02", "archive.zip")


def test_corrupt_files_raise_param_error() -> None:
    junk = os.urandom(4096)
    with pytest.raises(ParamError, match="PDF"):
        extract_text(junk, "broken.pdf")
    with pytest.raises(ParamError, match="DOCX"):
        extract_text(junk, "broken.docx")
    truncated = make_pdf([["Zorblax"]])[:60]
    with pytest.raises(ParamError):
        extract_text(truncated, "short.pdf")


def test_legacy_doc() -> None:
    data = make_doc(["Legacy memo", "The Quorvane archive in Tromsø opens at 6am on Tuesdays.", FILLER])
    text = extract_text(data, "memo.doc")
    assert "Legacy memo" in text
    assert "The Quorvane archive in Tromsø opens at 6am on Tuesdays." in text.splitlines()
    assert detect_format("upload", "", data) == "doc"


def test_doc_reader_reports_unreadable_files() -> None:
    with pytest.raises(ParamError, match="antiword|catdoc"):
        extract_text(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + os.urandom(2000), "old.doc")


def test_doc_without_the_tool_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ProcessingError, match="antiword"):
        extract_text(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(512), "old.doc")
