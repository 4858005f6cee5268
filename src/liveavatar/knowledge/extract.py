"""Document bytes -> plain text, one reader per format (PDF, DOCX, DOC, TXT, MD, JSON, XML, CSV, HTML)."""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
import shutil
import subprocess
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit
from xml.parsers import expat

from liveavatar.errors import ParamError, ProcessingError

FORMATS = frozenset({"pdf", "doc", "docx", "txt", "md", "json", "xml", "csv", "html"})
"""Formats `extract_text` reads (the API's document formats plus HTML for web pages)."""

DOC_TOOL_TIMEOUT = 60.0
MAX_UNZIPPED_BYTES = 1 << 30
"""A DOCX whose parts inflate beyond this is refused (zip bomb)."""

_CONTENT_TYPES = {
    "application/pdf": "pdf",
    "application/msword": "doc",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "text/plain": "txt",
    "text/markdown": "md",
    "text/x-markdown": "md",
    "application/json": "json",
    "application/xml": "xml",
    "text/xml": "xml",
    "text/csv": "csv",
    "text/html": "html",
    "application/xhtml+xml": "html",
}
_SUFFIXES = {"htm": "html", "xhtml": "html", "markdown": "md", "text": "txt"}


def detect_format(name: str, content_type: str = "", data: bytes = b"") -> str | None:
    """The format of a document from its name (or URL), then its content type, then its first bytes."""
    path = urlsplit(name).path if "://" in name else name
    suffix = PurePosixPath(path).suffix.lower().lstrip(".")
    suffix = _SUFFIXES.get(suffix, suffix)
    if suffix in FORMATS:
        return suffix
    mime = content_type.split(";", 1)[0].strip().lower()
    if mime in _CONTENT_TYPES:
        return _CONTENT_TYPES[mime]
    if mime.endswith("+json"):
        return "json"
    if mime.endswith("+xml"):
        return "xml"
    return _sniff(data)


def _sniff(data: bytes) -> str | None:
    head = data[:1024].lstrip()
    if head.startswith(b"%PDF-"):
        return "pdf"
    if head.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
        return "doc"
    if head.startswith(b"PK\x03\x04") and b"word/" in data[:65536]:
        return "docx"
    lowered = head[:512].lower()
    if lowered.startswith((b"<!doctype html", b"<html")) or b"<html" in lowered:
        return "html"
    if lowered.startswith(b"<?xml"):
        return "xml"
    if head[:1] in (b"{", b"["):
        return "json"
    return None


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def extract_text(data: bytes, name: str, content_type: str = "") -> str:
    """Plain text of a document; ParamError when it is unreadable, ProcessingError when a tool is missing."""
    fmt = detect_format(name, content_type, data)
    if fmt is None:
        raise ParamError(f"unsupported document format: {name[:200]!r}")
    reader = _READERS[fmt]
    try:
        text = reader(data, content_type)
    except (ParamError, ProcessingError):
        raise
    except Exception as exc:  # each reader library has its own error tree; all mean "cannot read this file"
        raise ParamError(f"cannot read {name[:200]!r} as {fmt.upper()}: {type(exc).__name__}: {exc}"[:500]) from exc
    return _tidy(text)


def _tidy(text: str) -> str:
    # Lone surrogates (a JSON "\ud800" escape, a "unicode_escape" charset, a broken PDF) are not text:
    # replaced here, so that no stored passage or answer built from one can fail to encode.
    text = _LONE_SURROGATE.sub("\ufffd", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    text = re.sub(r"[ \t\u00a0]+", " ", text)
    text = re.sub(r" ?\n ?", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


# --- text encodings ---------------------------------------------------------------------------------------------

_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"))
_BOMS16 = ((codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
_PREFERRED = ("utf_8", "cp1252", "latin_1", "iso8859_15", "cp1250", "cp1251")


def decode(data: bytes, content_type: str = "") -> str:
    """Bytes -> str: BOM, then the declared charset, then UTF-8, then detection, then cp1252."""
    for bom, encoding in (*_BOMS, *_BOMS16):
        if data.startswith(bom):
            return data.decode(encoding, errors="replace")
    declared = re.search(r"charset=[\"']?([\w.:-]+)", content_type, re.IGNORECASE)
    if declared:
        try:
            return data.decode(declared.group(1))
        except (LookupError, UnicodeDecodeError):
            pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        from charset_normalizer import from_bytes
    except ImportError:
        return data.decode("cp1252", errors="replace")
    matches = list(from_bytes(data[: 1 << 20]))
    if not matches:
        return data.decode("cp1252", errors="replace")
    # short texts leave many encodings tied: among the tied, prefer the common Western ones
    least = min(match.chaos for match in matches)
    tied = [match.encoding for match in matches if match.chaos <= least + 0.01]
    chosen = next((name for name in _PREFERRED if name in tied), tied[0])
    return data.decode(chosen, errors="replace")


# --- readers ----------------------------------------------------------------------------------------------------


def _read_txt(data: bytes, content_type: str) -> str:
    return decode(data, content_type)


_MD_RULES = (
    (re.compile(r"^```.*$|^~~~.*$", re.MULTILINE), ""),
    (re.compile(r"!\[([^\]]*)\]\([^)]*\)"), r"\1"),
    (re.compile(r"\[([^\]]+)\]\([^)]*\)"), r"\1"),
    (re.compile(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$", re.MULTILINE), r"\n\1\n"),
    (re.compile(r"^\s{0,3}>\s?", re.MULTILINE), ""),
    (re.compile(r"^\s*(?:[-*_]\s*){3,}$", re.MULTILINE), ""),
    (re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1"), r"\2"),
    (re.compile(r"<[^>\n]+>"), " "),
)


def _read_md(data: bytes, content_type: str) -> str:
    text = decode(data, content_type)
    for pattern, replacement in _MD_RULES:
        text = pattern.sub(replacement, text)
    return text


def _read_pdf(data: bytes, content_type: str) -> str:
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data))
    if reader.is_encrypted and not reader.decrypt(""):
        raise ParamError("the PDF is password-protected")
    return "\n\n".join(page.extract_text() or "" for page in reader.pages)


def _read_docx(data: bytes, content_type: str) -> str:
    import docx
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        if sum(info.file_size for info in archive.infolist()) > MAX_UNZIPPED_BYTES:
            raise ParamError("the DOCX inflates to more than 1 GiB")
    document = docx.Document(io.BytesIO(data))
    parts: list[str] = []
    for block in document.iter_inner_content():
        if isinstance(block, Paragraph):
            parts.append(block.text)
        elif isinstance(block, Table):
            for row in block.rows:
                cells = list(dict.fromkeys(cell.text.strip() for cell in row.cells))
                parts.append(" | ".join(cell for cell in cells if cell))
            parts.append("")
    return "\n\n".join(parts)


def doc_tool() -> list[str] | None:
    """The command line that prints a legacy .doc file as text: antiword, else catdoc; None if neither is installed."""
    if shutil.which("antiword"):
        return ["antiword", "-w", "0", "-m", "UTF-8.txt"]
    if shutil.which("catdoc"):
        return ["catdoc", "-w", "-d", "utf-8"]
    return None


def _read_doc(data: bytes, content_type: str) -> str:
    command = doc_tool()
    if command is None:
        raise ProcessingError("legacy .doc files need the `antiword` (or `catdoc`) program: apt-get install antiword")
    with tempfile.TemporaryDirectory(prefix="liveavatar-doc-") as folder:
        path = Path(folder) / "document.doc"
        path.write_bytes(data)
        try:
            result = subprocess.run(
                [*command, str(path)],
                capture_output=True,
                timeout=DOC_TOOL_TIMEOUT,
                check=False,
                env={"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": folder},
            )
        except subprocess.TimeoutExpired as exc:
            raise ParamError(f"reading the .doc file took longer than {DOC_TOOL_TIMEOUT:g} s") from exc
    if result.returncode < 0:
        raise ParamError(f"{command[0]} crashed (signal {-result.returncode}) reading the .doc file: it is damaged")
    if result.returncode != 0:
        detail = result.stderr.decode("utf-8", errors="replace").strip().splitlines()
        raise ParamError(f"{command[0]} cannot read the .doc file: {detail[-1] if detail else result.returncode}")
    return result.stdout.decode("utf-8", errors="replace")


def _flatten_json(value: Any, path: str) -> Iterator[str]:
    if isinstance(value, dict):
        yielded = False
        for key, item in value.items():
            label = f"{path} {key}" if path else str(key)
            if isinstance(item, dict | list):
                yield ""
            yield from _flatten_json(item, label)
            yielded = True
        if not yielded and path:
            yield f"{path}: (empty)"
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict | list):
                yield ""
            yield from _flatten_json(item, path)
    elif value is None:
        yield f"{path}: null" if path else "null"
    else:
        shown = json.dumps(value) if isinstance(value, bool) else str(value)
        yield f"{path}: {shown}" if path else shown


def _read_json(data: bytes, content_type: str) -> str:
    text = decode(data, content_type)
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        # JSON Lines: one document per line
        value = [json.loads(line) for line in text.splitlines() if line.strip()]
    return "\n".join(_flatten_json(value, ""))


class _Refused(Exception):
    pass


def _refuse(*_: object) -> int:
    raise _Refused("entity declarations and external entities are not allowed")


def _read_xml(data: bytes, content_type: str) -> str:
    # expat with every entity hook refused: no billion laughs, no external entities, no DTD fetching
    parser = expat.ParserCreate()
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.EntityDeclHandler = _refuse
    parser.UnparsedEntityDeclHandler = _refuse
    parser.ExternalEntityRefHandler = _refuse
    lines: list[str] = []
    stack: list[tuple[str, list[str], list[bool]]] = []

    def flush_parent() -> None:
        if stack:
            pending = " ".join("".join(stack[-1][1]).split())
            if pending:
                lines.append(pending)
            stack[-1][1].clear()
            stack[-1][2][0] = True

    def start(tag: str, attrs: dict[str, str]) -> None:
        flush_parent()
        local = tag.rsplit("}", 1)[-1].rsplit(":", 1)[-1]
        for key, value in attrs.items():
            if value.strip() and not key.startswith("xmlns"):
                lines.append(f"{local} {key.rsplit(':', 1)[-1]}: {value.strip()}")
        stack.append((local, [], [False]))

    def end(tag: str) -> None:
        local, buffer, had_children = stack.pop()
        text = " ".join("".join(buffer).split())
        if text:
            lines.append(text if had_children[0] else f"{local}: {text}")
        elif had_children[0]:
            lines.append("")

    def characters(text: str) -> None:
        if stack:
            stack[-1][1].append(text)

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = characters
    try:
        parser.Parse(data, True)
    except _Refused as exc:
        raise ParamError(f"unsafe XML refused: {exc}") from exc
    except expat.ExpatError as exc:
        raise ParamError(f"malformed XML: {exc}") from exc
    return "\n".join(lines)


def _read_csv(data: bytes, content_type: str) -> str:
    text = decode(data, content_type)
    sample = text[:65536]
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(sample, delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    rows = csv.reader(io.StringIO(text), dialect)
    header = [cell.strip() for cell in next(rows, [])]
    blocks: list[str] = []
    for row in rows:
        pairs = []
        for index, cell in enumerate(row):
            if not cell.strip():
                continue
            column = header[index] if index < len(header) and header[index] else f"column {index + 1}"
            pairs.append(f"{column}: {cell.strip()}")
        if pairs:
            blocks.append("\n".join(pairs))
    if not blocks and header:
        return " ".join(header)
    return "\n\n".join(blocks)


_SKIPPED = frozenset({"script", "style", "noscript", "template", "svg", "nav", "head", "iframe", "object", "canvas"})
_BLOCKS = frozenset(
    {
        "p", "div", "section", "article", "main", "header", "footer", "aside", "li", "ul", "ol", "dl", "dt", "dd",
        "table", "tr", "blockquote", "pre", "figure", "figcaption", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6",
        "form", "fieldset", "details", "summary", "address", "caption", "title", "body",
    }
)  # fmt: skip
_VOID = frozenset({"br", "hr", "img", "input", "meta", "link", "area", "base", "col", "embed", "source", "wbr"})


class _HtmlText(HTMLParser):
    """Readable text of an HTML page: headings and paragraphs kept, scripts, styles and navigation dropped."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title = ""
        self._skip: list[str] = []
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        if tag == "body" and "head" in self._skip:
            del self._skip[self._skip.index("head") :]  # an unclosed <head> ends where the body starts
        if tag in _SKIPPED and tag not in _VOID:
            self._skip.append(tag)
        elif tag in _BLOCKS or tag in ("td", "th"):
            self.parts.append("\n\n" if tag in _BLOCKS else " | ")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        if self._skip and tag == self._skip[-1]:
            self._skip.pop()
        elif tag in self._skip:
            del self._skip[self._skip.index(tag) :]
        elif tag in _BLOCKS:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        elif not self._skip:
            self.parts.append(data)

    def text(self) -> str:
        blocks = (" ".join(block.split()).strip(" |") for block in re.split(r"\n\s*\n", "".join(self.parts)))
        body = "\n\n".join(block for block in blocks if block)
        title = " ".join(self.title.split())
        return f"{title}\n\n{body}" if title and not body.lstrip().startswith(title) else body


def html_to_text(html: str) -> str:
    """Readable text of an HTML page (title, headings, paragraphs, lists, tables)."""
    parser = _HtmlText()
    parser.feed(html)
    parser.close()
    return parser.text()


def _read_html(data: bytes, content_type: str) -> str:
    if "charset=" not in content_type.lower():
        meta = re.search(rb"<meta[^>]+charset=[\"']?([\w.:-]+)", data[:4096], re.IGNORECASE)
        if meta:
            content_type = f"text/html; charset={meta.group(1).decode('ascii', errors='replace')}"
    return html_to_text(decode(data, content_type))


_READERS: dict[str, Callable[[bytes, str], str]] = {
    "pdf": _read_pdf,
    "docx": _read_docx,
    "doc": _read_doc,
    "txt": _read_txt,
    "md": _read_md,
    "json": _read_json,
    "xml": _read_xml,
    "csv": _read_csv,
    "html": _read_html,
}
