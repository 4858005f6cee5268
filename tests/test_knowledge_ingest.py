"""Ingestion end to end: documents in every format served over loopback HTTP, fetched, indexed and searched."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from liveavatar.errors import ParamError
from liveavatar.knowledge.index import CURRENT
from liveavatar.knowledge.ingest import Ingestor, IngestStatus
from servers import web_server
from test_knowledge_extract import FILLER, make_doc, make_docx, make_pdf

FILES: dict[str, tuple[bytes, str]] = {
    "/files/manual.pdf": (
        make_pdf(
            [
                ["Zorblax owner's manual", *FILLER.split(". ")],
                ["Warranty", "The Zorblax warranty lasts 17 months from the date of purchase.", FILLER[:90]],
            ]
        ),
        "application/pdf",
    ),
    "/files/handbook.docx": (
        make_docx(
            [FILLER, "Employees of Quillfeather Labs receive 23 vacation days per year.", FILLER],
            table=[["Permit", "Lot"], ["Parking permit", "Blue lot B7"]],
            heading="Staff handbook",
        ),
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ),
    "/files/prices.csv": (
        b"product,price,color\nPlain Lamp,19 EUR,white\nGlimmerstone Lamp,249 EUR,teal\nDesk Fan,35 EUR,black\n",
        "text/csv",
    ),
    "/files/faq.json": (
        json.dumps(
            {
                "faq": [
                    {"question": "Is shipping free?", "answer": "Shipping is free above 50 EUR."},
                    {"question": "Who founded Velotrax?", "answer": "Imogen Parsley founded Velotrax in 1987."},
                ]
            }
        ).encode(),
        "application/json",
    ),
    "/files/stores.xml": (
        "<?xml version='1.0' encoding='utf-8'?><stores><store><city>Bergen</city><manager>Ada Lund</manager>"
        "</store><store><city>Tromsø</city><manager>Oskar Brandvold</manager></store></stores>".encode(),
        "application/xml",
    ),
    "/files/release.md": (
        f"# Release notes\n\n{FILLER}\n\n## Nimbus-9\n\nThe Nimbus-9 firmware adds support for the **Krellic** "
        "protocol.\n".encode(),
        "text/markdown",
    ),
    "/files/support.txt": (
        f"{FILLER}\n\nThe support hotline for Pemberton devices is open from 7am to 3pm on Saturdays.\n".encode(),
        "text/plain",
    ),
    "/about": (
        b"<html><head><title>About us</title><script>var tracking = 'scriptword';</script></head><body>"
        b"<nav>Home | Shop | navword</nav><h1>Sprocketville museum</h1>"
        b"<p>The Sprocketville museum owns 412 antique bicycles.</p><p>" + FILLER.encode() + b"</p></body></html>",
        "text/html; charset=utf-8",
    ),
    "/files/memo.doc": (
        make_doc(["Internal memo", FILLER, "The Quorvane archive opens at 6am on Tuesdays.", FILLER]),
        "application/msword",
    ),
    "/files/corrupt.pdf": (os.urandom(3000), "application/pdf"),
    "/files/other.txt": (b"The Huxley tram depot closes at 23:40 every night.", "text/plain"),
}

QUESTIONS = {
    "How long is the Zorblax warranty?": "The Zorblax warranty lasts 17 months",
    "How many vacation days do Quillfeather employees get?": "23 vacation days",
    "What does the Glimmerstone lamp cost?": "product: Glimmerstone Lamp\nprice: 249 EUR",
    "Who founded Velotrax?": "Imogen Parsley founded Velotrax in 1987.",
    "Who manages the store in Tromsø?": "city: Tromsø\nmanager: Oskar Brandvold",
    "Which protocol does the Nimbus-9 firmware support?": "Krellic",
    "When is the Pemberton support hotline open on Saturday?": "7am to 3pm",
    "How many antique bicycles does the Sprocketville museum have?": "412 antique bicycles",
    "When does the Quorvane archive open on Tuesdays?": "The Quorvane archive opens at 6am on Tuesdays.",
}

DOC_NAMES = [
    "manual.pdf",
    "handbook.docx",
    "memo.doc",
    "prices.csv",
    "faq.json",
    "stores.xml",
    "release.md",
    "support.txt",
]


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        try:
            if self.path.startswith("/huge"):
                # more than any test limit, streamed without a length (and with one, when asked)
                self.send_response(200)
                self.send_header("content-type", "text/plain")
                if self.path == "/huge-declared":
                    self.send_header("content-length", str(10_000_000))
                self.end_headers()
                for _ in range(200):
                    self.wfile.write(b"overflow " * 1000)
                return
            if self.path not in FILES:
                self.send_error(404)
                return
            body, content_type = FILES[self.path]
            self.send_response(200)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 serving the test documents."""
    with web_server(_Handler) as url:
        yield url


def _docs(site: str, *names: str) -> list[dict[str, Any]]:
    return [{"name": name, "url": f"{site}/files/{name}", "size": len(FILES[f"/files/{name}"][0])} for name in names]


def _by_name(status: IngestStatus) -> dict[str, tuple[str, str]]:
    return {document.name: (document.state, document.reason) for document in status.documents}


async def test_knowledge_base_in_every_format_answers_its_questions(site: str, tmp_path: Path) -> None:
    ingestor = Ingestor(tmp_path, allow_private_urls=True)
    updates: list[IngestStatus] = []
    status = await ingestor.ingest("kb1", _docs(site, *DOC_NAMES), [f"{site}/about"], progress=updates.append)
    assert status.state == "ready", status
    assert all(document.state == "ready" and document.chunks >= 1 for document in status.documents), status
    assert [document.name for document in status.documents] == [*DOC_NAMES, f"{site}/about"]
    assert status.chunks == sum(document.chunks for document in status.documents)
    assert status.progress == 1.0
    progress = [update.progress for update in updates]
    assert progress == sorted(progress) and progress[0] == 0.0 and updates[-1] == status
    assert {update.state for update in updates[:-1]} == {"indexing"}
    seen = {(document.name, document.state) for update in updates for document in update.documents}
    assert {("manual.pdf", state) for state in ("pending", "fetching", "indexing", "ready")} <= seen

    assert any(0.6 <= update.progress < 1.0 for update in updates)  # the index build reports progress too

    index = await ingestor.indexes.aget("kb1")
    assert index is not None and index is ingestor.index("kb1")
    for question, answer in QUESTIONS.items():
        best = (await index.asearch(question, k=4))[0]
        assert answer in best.text, (question, best)
    assert all("scriptword" not in chunk.text and "navword" not in chunk.text for chunk in index.chunks)
    assert index.search("How long is the Zorblax warranty?")[0].source == "manual.pdf"

    api = status.to_api()
    assert api["state"] == "ready" and api["documents"][0] == {
        "name": "manual.pdf",
        "source": f"{site}/files/manual.pdf",
        "state": "ready",
        "reason": "",
        "chunks": status.documents[0].chunks,
    }
    assert ingestor.status("kb1") == IngestStatus.from_api(json.loads(json.dumps(api)))
    await ingestor.aclose()


async def test_private_addresses_are_refused_by_default(site: str, tmp_path: Path) -> None:
    ingestor = Ingestor(tmp_path, allow_private_urls=False)
    status = await ingestor.ingest("kb2", _docs(site, "support.txt"), [f"{site}/about"])
    assert status.state == "failed"
    for state, reason in _by_name(status).values():
        assert state == "failed" and "private" in reason
    index = ingestor.index("kb2")
    assert index is not None and len(index) == 0 and index.search("Pemberton") == []
    await ingestor.aclose()


async def test_a_corrupt_document_fails_alone(site: str, tmp_path: Path) -> None:
    ingestor = Ingestor(tmp_path, allow_private_urls=True)
    docs = _docs(site, "corrupt.pdf", "support.txt") + [{"name": "gone.txt", "url": f"{site}/files/gone.txt"}]
    status = await ingestor.ingest("kb3", docs, [])
    states = _by_name(status)
    assert status.state == "ready"
    assert states["corrupt.pdf"][0] == "failed" and "PDF" in states["corrupt.pdf"][1]
    assert states["gone.txt"] == ("failed", states["gone.txt"][1]) and "404" in states["gone.txt"][1]
    assert states["support.txt"] == ("ready", "")
    index = ingestor.index("kb3")
    assert index is not None and "7am to 3pm" in index.search("Pemberton hotline Saturday")[0].text
    await ingestor.aclose()


async def test_doc_without_antiword_fails_with_the_reason(
    site: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    ingestor = Ingestor(tmp_path, allow_private_urls=True, embeddings=False)
    status = await ingestor.ingest("kb8", _docs(site, "memo.doc", "support.txt"), [])
    states = _by_name(status)
    assert states["memo.doc"][0] == "failed" and "apt-get install antiword" in states["memo.doc"][1]
    assert states["support.txt"] == ("ready", "") and status.state == "ready"
    await ingestor.aclose()


async def test_oversize_documents_fail_cleanly(site: str, tmp_path: Path) -> None:
    sizes = {name: len(FILES[f"/files/{name}"][0]) for name in ("manual.pdf", "handbook.docx", "faq.json")}
    # each file fits the per-file limit, but after the PDF the DOCX no longer fits the total (the JSON does)
    limit, total = sizes["handbook.docx"], sizes["handbook.docx"] + sizes["manual.pdf"] - 1
    assert sizes["faq.json"] < sizes["handbook.docx"] - 1
    ingestor = Ingestor(tmp_path, allow_private_urls=True, max_file_bytes=limit, max_total_bytes=total)
    docs = [
        {"name": "streamed.txt", "url": f"{site}/huge"},
        {"name": "declared.txt", "url": f"{site}/huge-declared"},
        *_docs(site, "manual.pdf", "handbook.docx", "faq.json"),
    ]
    status = await ingestor.ingest("kb4", docs, [])
    states = _by_name(status)
    assert states["streamed.txt"][0] == "failed" and f"larger than {limit} bytes" in states["streamed.txt"][1]
    assert states["declared.txt"][0] == "failed" and f"larger than {limit} bytes" in states["declared.txt"][1]
    assert "in total" not in states["streamed.txt"][1]
    assert states["manual.pdf"][0] == "ready"
    assert states["handbook.docx"][0] == "failed" and "in total" in states["handbook.docx"][1]
    assert states["faq.json"][0] == "ready"
    assert status.state == "ready"
    await ingestor.aclose()


async def test_reingest_replaces_the_index_atomically(site: str, tmp_path: Path) -> None:
    ingestor = Ingestor(tmp_path, allow_private_urls=True, embeddings=False)
    await ingestor.ingest("kb5", _docs(site, "support.txt"), [])
    first = ingestor.index("kb5")
    assert first is not None and ingestor.index("kb5") is first  # cached
    assert "7am to 3pm" in first.search("Pemberton hotline")[0].text

    status = await ingestor.ingest("kb5", _docs(site, "other.txt"), [])
    assert status.state == "ready"
    second = ingestor.index("kb5")
    assert second is not None and second is not first
    assert second.search("Pemberton hotline") == []
    assert "23:40" in second.search("When does the Huxley tram depot close?")[0].text
    versions = [entry.name for entry in (tmp_path / "kb5").iterdir() if entry.is_dir()]
    assert versions == [(tmp_path / "kb5" / CURRENT).read_text()]
    assert not [entry for entry in (tmp_path / "kb5").iterdir() if entry.name.startswith(".")]

    # two ingestions of one base at once run one after the other: the later call's sources win
    await asyncio.gather(
        ingestor.ingest("kb5", _docs(site, "support.txt"), []), ingestor.ingest("kb5", _docs(site, "faq.json"), [])
    )
    latest = ingestor.index("kb5")
    assert latest is not None and {chunk.source for chunk in latest.chunks} == {"faq.json"}

    ingestor.delete("kb5")
    assert not (tmp_path / "kb5").exists()
    assert ingestor.index("kb5") is None and ingestor.status("kb5") is None
    await ingestor.aclose()


async def test_uploads_are_ingested_with_the_rest(site: str, tmp_path: Path) -> None:
    ingestor = Ingestor(tmp_path, allow_private_urls=True, embeddings=False)
    upload = await ingestor.ingest_upload("kb6", "../../Quarterly report.docx", make_docx(["Revenue grew by 31%."]))
    assert upload.parent.parent == tmp_path / "kb6" / "uploads" and upload.name == "Quarterly_report.docx"
    with pytest.raises(ParamError, match="unsupported"):
        await ingestor.ingest_upload("kb6", "tool.exe", b"MZ\x90\x00")
    with pytest.raises(ParamError, match="invalid knowledge base id"):
        await ingestor.ingest_upload("../etc", "a.txt", b"x")
    status = await ingestor.ingest(
        "kb6", _docs(site, "faq.json"), [], uploads=[("Quarterly report.docx", upload), ("lost.txt", tmp_path / "no")]
    )
    states = _by_name(status)
    assert states["Quarterly report.docx"] == ("ready", "") and states["lost.txt"][0] == "failed"
    index = ingestor.index("kb6")
    assert index is not None and "31%" in index.search("How much did revenue grow?")[0].text
    await ingestor.aclose()


async def test_deleting_during_ingestion_discards_the_result(site: str, tmp_path: Path) -> None:
    ingestor = Ingestor(tmp_path, allow_private_urls=True, embeddings=False)

    def delete_when_fetching(status: IngestStatus) -> None:
        if status.documents[0].state == "fetching":
            ingestor.delete("kb7")

    status = await ingestor.ingest("kb7", _docs(site, "support.txt"), [], progress=delete_when_fetching)
    assert status.state == "failed" and "deleted" in status.reason
    assert not (tmp_path / "kb7").exists() and ingestor.index("kb7") is None
    await ingestor.aclose()


async def test_status_is_live_while_indexing_and_stored_from_the_start(site: str, tmp_path: Path) -> None:
    ingestor = Ingestor(tmp_path, allow_private_urls=True, embeddings=False)
    ingestor.schedule("kb8", _docs(site, "support.txt", "faq.json"), [], revision=3)
    scheduled = ingestor.status("kb8")
    assert scheduled is not None and (scheduled.state, scheduled.progress) == ("indexing", 0.0)
    assert [document.state for document in scheduled.documents] == ["pending", "pending"]
    live: list[float] = []
    stored: list[tuple[str, int]] = []

    def watch(status: IngestStatus) -> None:
        current = ingestor.status("kb8")
        assert current is not None
        live.append(current.progress)
        with contextlib.suppress(FileNotFoundError):  # the first report comes before the first write
            data = json.loads((tmp_path / "kb8" / "status.json").read_text())
            stored.append((data["state"], data["revision"]))

    status = await ingestor.ingest("kb8", _docs(site, "support.txt", "faq.json"), [], progress=watch, revision=3)
    assert status.state == "ready" and status.revision == 3
    assert live == sorted(live) and len(set(live)) >= 4 and live[-1] == 1.0, live
    # a server killed at any point of the run finds "indexing" on disk and resumes
    assert len(stored) == len(live) - 1 and set(stored) == {("indexing", 3)}, stored
    data = json.loads((tmp_path / "kb8" / "status.json").read_text())
    assert (data["state"], data["revision"]) == ("ready", 3)
    assert ingestor.status("kb8") == status  # now from disk, revision included
    await ingestor.aclose()
