"""Fault suite, documents: text read from uploaded or fetched files is always valid Unicode (finding 1)."""

from __future__ import annotations

import pytest

from liveavatar.knowledge.extract import extract_text


@pytest.mark.parametrize(
    ("name", "data", "content_type"),
    [
        ("notes.json", b'{"q": "half an emoji \\ud83d here", "a": "\\udc00 lone low"}', "application/json"),
        ("notes.txt", b"caf\\u00e9 \\ud800 end", "text/plain; charset=unicode_escape"),
        ("notes.csv", b"word,spoken\nhi,\\ud800\n", "text/csv; charset=raw_unicode_escape"),
    ],
)
def test_lone_surrogates_in_a_document_are_replaced(name: str, data: bytes, content_type: str) -> None:
    text = extract_text(data, name, content_type)
    text.encode("utf-8")  # would raise on a lone surrogate
    assert "\ufffd" in text
