"""The knowledge-base test corpora, shared by the index tests and the benches (bench/models.py, bench/answers.py).

Two corpora: eight short documents of shared filler, each with one distinctive fact (`FACTS`, asked by
`QUESTIONS`), and a synthetic ~200-page corpus of nonsense words with one numeric fact on every tenth page
(`plant_facts`, asked by `plant_question`).
"""

from __future__ import annotations

import random
from typing import Final

from liveavatar.knowledge.chunking import Chunk, chunk_text

FILLER: Final = [
    "Our company builds household devices and supports them for many years after the sale.",
    "Customers can reach the service team by mail or by phone, and every device ships with a printed guide.",
    "Standard warranty terms apply to accessories for six months unless a local law says otherwise.",
    "Spare parts are available from authorised dealers in most countries and regions.",
    "Returns are accepted within thirty days when the packaging is undamaged and complete.",
    "The annual report lists revenue, staff numbers and the opening of new regional offices.",
]

FACTS: Final = {
    "manual": "The Zorblax warranty lasts 17 months from the date of purchase.",
    "handbook": "Employees of Quillfeather Labs receive 23 vacation days per year.",
    "prices": "product: Glimmerstone Lamp\nprice: 249 EUR\ncolor: teal",
    "faq": "faq answer: Imogen Parsley founded the Velotrax company in 1987.",
    "stores": "city: Tromsø\nmanager: Oskar Brandvold",
    "release": "The Nimbus-9 firmware adds support for the Krellic protocol.",
    "support": "The support hotline for Pemberton devices is open from 7am to 3pm on Saturdays.",
    "about": "The Sprocketville museum owns 412 antique bicycles.",
}
"""One fact per document name."""

QUESTIONS: Final = {
    "How long is the Zorblax warranty?": "17 months",
    "How many vacation days do Quillfeather employees get?": "23 vacation days",
    "What does the Glimmerstone lamp cost?": "249 EUR",
    "Who founded Velotrax?": "Imogen Parsley",
    "Who manages the store in Tromsø?": "Oskar Brandvold",
    "Which protocol does the Nimbus-9 firmware support?": "Krellic",
    "When is the Pemberton support hotline open on Saturday?": "7am to 3pm",
    "How many antique bicycles does the Sprocketville museum have?": "412",
}
"""Question -> the words of FACTS that answer it."""

PLANT_PAGES: Final = 200
PLANT_UNITS: Final = range(0, PLANT_PAGES, 10)


def facts_chunks() -> list[Chunk]:
    """The eight FACTS documents, each several paragraphs of shared filler with its fact in the middle."""
    rng = random.Random(7)
    chunks = []
    for name, fact in FACTS.items():
        paragraphs = [" ".join(rng.sample(FILLER, 4)) for _ in range(6)]
        paragraphs.insert(3, fact)
        chunks.extend(chunk_text("\n\n".join(paragraphs), name, target_words=60, max_words=90, overlap_words=15))
    return chunks


def plant_facts() -> dict[int, str]:
    """Unit number -> the sentence of the ~200-page corpus that states how many crates it stores."""
    return {n: f"Unit {n} of the Obrexa plant stores {plant_crates(n)} crates of kelvane." for n in PLANT_UNITS}


def plant_crates(unit: int) -> int:
    """The number of crates unit `unit` stores."""
    return unit * 7 + 3


def plant_question(unit: int) -> str:
    """The question whose answer is unit `unit`'s fact."""
    return f"How many crates of kelvane does unit {unit} store?"


def plant_chunks() -> list[Chunk]:
    """The synthetic ~200-page corpus: 450 nonsense words a page, a plant fact on every tenth page."""
    rng = random.Random(1)
    vocabulary = [f"{a}{b}" for a in ("ka", "lo", "mi", "nu", "pe", "ro", "su", "ti") for b in range(400)]
    facts = plant_facts()
    chunks = []
    for page in range(PLANT_PAGES):
        words = [rng.choice(vocabulary) for _ in range(450)]
        paragraphs = [" ".join(words[i : i + 75]) + "." for i in range(0, 450, 75)]
        if page in facts:
            paragraphs.insert(2, facts[page])
        chunks.extend(chunk_text("\n\n".join(paragraphs), f"page-{page}"))
    return chunks
