"""Measuring client for bench/dialogue.py: asks a dialogue-mode session questions and times the spoken answers.

Run by the bench, not by hand: `python bench/dialogue_client.py URL API_KEY`. It reads one JSON request per
line on stdin and answers each with one JSON line on stdout; it exits on `{"op": "quit"}` or end of input.

    {"op": "ask", "questions": [...], "warmup": "...", "listen": 1.0}
        -> {"cold": {...}, "answers": [{"first_sound_ms", "first_chat_ms", "first_sentence_ms", ...}, ...]}

One session (mode_type 2: the avatar answers through the server's LLM, Piper voice), joined and idle before
each question. Each answer is heard for `listen` seconds after its first sound and then interrupted: SmolLM2's
answers run to the server's 200-token cap (a minute of speech), and only their start is measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import Any

from liveavatar.client import LiveAvatarApi
from liveavatar.client.connection import Message
from liveavatar.speech.text import SentenceSplitter
from speaking_client import Listener, event_name, is_bot_chat
from transport_client import join_session, ms_since, serve

CREATE_PARAMS: dict[str, Any] = {"mode_type": 2, "voice_id": "piper-en-us-joe", "language": "en"}
"""Dialogue mode (answers from the server's LLM) with the packaged Piper voice."""
IDLE_BEFORE_CHAT = 0.6
"""Seconds the session stays idle before each question (the previous answer has stopped)."""
ANSWER_TIMEOUT = 90.0
"""The first answer after the server started also loads the LLM."""
END_TIMEOUT = 15.0
Reply = dict[str, Any]


def bot_text(chunks: list[tuple[float, Message]]) -> str:
    """The bot's text from its chat chunks, in index order."""
    parts = {int(message.get("idx", i)): str(message["pld"].get("text", "")) for i, (_, message) in enumerate(chunks)}
    return "".join(parts[i] for i in sorted(parts))


def first_sentence_at(chunks: list[tuple[float, Message]], audio_start: float | None) -> tuple[float | None, str]:
    """When the first sentence of the answer was complete at the client, and that sentence.

    The server cuts the streamed answer into sentences with the same splitter (a sentence is sure once the
    next word shows) and synthesises each as soon as it is cut. An answer of one sentence is cut when the LLM
    stops; the client sees no sign of that (`fin` comes with the end of the audio), but it comes before the
    audio can start: then the last text chunk before `audio_start` (the answer's last token) is the time.
    """
    splitter = SentenceSplitter()
    text = ""
    for at, message in chunks:
        if audio_start is not None and at > audio_start:
            break
        piece = str(message["pld"].get("text", ""))
        text += piece
        done = splitter.feed(piece)
        if done:
            return at, done[0]
    before = [at for at, _ in chunks if audio_start is not None and at <= audio_start]
    return (before[-1], text.strip()) if before else (None, "")


class DialogueWorker:
    """Holds the dialogue session while it asks, and answers the bench's requests."""

    def __init__(self, api: LiveAvatarApi) -> None:
        self.api = api

    async def ask(self, questions: list[str], warmup: str, listen: float) -> Reply:
        """One joined idle session: each question -> first bot text, first sentence, audio_start, first sound."""
        stream, _, _ = await join_session(self.api, **CREATE_PARAMS)
        listener = Listener(stream)
        listener.start()
        try:
            cold = await self._ask_once(listener, warmup, listen)
            answers = [await self._ask_once(listener, question, listen) for question in questions]
        finally:
            await listener.aclose()
            await stream.aclose(self.api)
        return {"cold": cold, "answers": answers}

    async def _ask_once(self, listener: Listener, question: str, listen: float) -> Reply:
        await asyncio.sleep(IDLE_BEFORE_CHAT)
        conn = listener.stream.conn
        sent = asyncio.get_running_loop().time()
        conn.send_chat(question)

        def ended() -> bool:
            return any(at > sent for at in listener.events("audio_end"))

        await listener.until(lambda: listener.first_sound(sent) is not None, ANSWER_TIMEOUT)
        interrupted = False
        with contextlib.suppress(TimeoutError):
            await listener.until(ended, listen)
        if not ended():
            await conn.interrupt()
            interrupted = True
            await listener.until(ended, END_TIMEOUT)
        end = next(at for at in listener.events("audio_end") if at > sent)
        sound = listener.first_sound(sent)
        assert sound is not None
        started = listener.first_message(sent, lambda m: event_name(m) == "audio_start")
        chunks = [(at, message) for at, message in listener.messages if sent <= at <= end and is_bot_chat(message)]
        sentence_at, sentence = first_sentence_at(chunks, started)
        return {
            "question": question,
            "first_sound_ms": ms_since(sent, sound),
            "first_chat_ms": ms_since(sent, chunks[0][0]) if chunks else None,
            "first_sentence_ms": ms_since(sent, sentence_at) if sentence_at is not None else None,
            "audio_start_ms": ms_since(sent, started) if started is not None else None,
            "first_sentence": sentence,
            "text": bot_text(chunks),
            "chunk_ms": [ms_since(sent, at) for at, _ in chunks],
            "interrupted": interrupted,
        }

    async def close(self) -> Reply:
        """Nothing is held between requests."""
        return {"closed": 0}

    async def handle(self, request: Reply) -> Reply:
        """Answer one request."""
        if request.get("op") == "ask":
            return await self.ask(list(request["questions"]), str(request["warmup"]), float(request["listen"]))
        raise ValueError(f"unknown op {request.get('op')!r}")


def main() -> None:
    """Entry point: `dialogue_client.py URL API_KEY`."""
    url, api_key = sys.argv[1], sys.argv[2]
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(url, api_key, DialogueWorker))


if __name__ == "__main__":
    main()
