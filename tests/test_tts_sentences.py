"""SentenceTTS, the shell around Piper and espeak-ng, over a scripted engine (the model boundary)."""

from __future__ import annotations

import numpy as np
import pytest

from liveavatar.errors import ParamError, ProcessingError
from liveavatar.speech.base import SpeechChunk, Voice
from liveavatar.speech.sentences import SentenceTTS

VOICE = Voice("scripted-en", "Scripted", "en", "en-US", "neutral", "scripted", "English")


class ScriptedEngine:
    """Says each text as one sample per character; "silent" gives no audio, "broken" raises."""

    name = "scripted"

    def __init__(self) -> None:
        self.spoken: list[tuple[str, float]] = []

    def load(self) -> None:
        pass  # nothing to load

    def speak(self, text: str, voice: Voice, speed: float) -> SpeechChunk | None:
        self.spoken.append((text, speed))
        if "broken" in text:
            raise RuntimeError("engine fault")
        if "silent" in text:
            return SpeechChunk(text, np.zeros(0, dtype=np.int16), 16000)
        return SpeechChunk(text, np.ones(len(text), dtype=np.int16), 16000)


async def test_sentences_are_spoken_in_order_with_pron_map_and_keep_their_own_text() -> None:
    engine = ScriptedEngine()
    tts = SentenceTTS(engine)
    text = "We use SQL. This one is silent! Last one?"
    chunks = [chunk async for chunk in tts.synthesize(text, VOICE, speed=1.1, pron_map={"sql": "sequel"})]
    assert [chunk.text for chunk in chunks] == ["We use SQL.", "Last one?"]  # no audio, no chunk
    assert engine.spoken == [("We use sequel.", 1.1), ("This one is silent!", 1.1), ("Last one?", 1.1)]
    assert len(chunks[0].audio) == len("We use sequel.")


async def test_engine_errors_become_processing_errors_and_checks_come_first() -> None:
    engine = ScriptedEngine()
    tts = SentenceTTS(engine)
    with pytest.raises(ProcessingError, match="scripted could not synthesise 'A broken one.'"):
        [chunk async for chunk in tts.synthesize("A broken one.", VOICE)]
    other = Voice("piper-en-us-joe", "Joe", "en", "en-US", "male", "piper", "English")
    with pytest.raises(ParamError):
        [chunk async for chunk in tts.synthesize("Hello.", other)]
    with pytest.raises(ParamError):
        [chunk async for chunk in tts.synthesize("Hello.", VOICE, speed=3.0)]
    assert engine.spoken == [("A broken one.", 1.0)]
