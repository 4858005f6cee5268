"""The reply pipeline on a scripted clock: Turn, Playback.clear, what was heard, and the Conversation."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from liveavatar.errors import Code, RateLimited
from liveavatar.media import AUDIO_PTIME, AUDIO_RATE, AUDIO_SAMPLES, ScriptedClock, untimed
from liveavatar.protocol import AUDIO_END, AUDIO_START, ChatStream, Message
from liveavatar.session.conversation import MAX_QUEUED_REPLIES, Conversation, retell
from liveavatar.session.playback import FADE_SAMPLES, Playback
from liveavatar.session.settings import SessionSettings
from liveavatar.session.speaker import Speaker
from liveavatar.session.turn import Failure, Sentence, Spoken, TextDelta, TextSource, Turn
from liveavatar.speech.base import WORD_GAP, SpeechChunk, Voice
from liveavatar.speech.fake import FAKE_VOICE, FakeTTS
from liveavatar.speech.voices import VoiceRegistry

STORY = "One two three. Four five six. Seven eight nine."


@dataclass
class Wire:
    """What a turn sends to the client, decoded, each with the session time it was sent at."""

    clock: ScriptedClock
    sent: list[tuple[float, Message]] = field(default_factory=list)

    def chat(self, chunks: list[str]) -> None:
        self.sent.extend((self.clock.now(), json.loads(chunk)) for chunk in chunks)

    def event(self, message: Message) -> None:
        self.sent.append((self.clock.now(), message))

    def pieces(self) -> list[Message]:
        return [m for _, m in self.sent if m["type"] == "chat"]

    def text(self) -> str:
        return "".join(m["pld"]["text"] for m in self.pieces())

    def events(self) -> list[Any]:
        return [m["pld"]["event"] for _, m in self.sent if m["type"] == "event"]

    def errors(self) -> list[int]:
        return [m["pld"]["code"] for _, m in self.sent if m["type"] == "event" and m["pld"]["event"] == "error"]


class Track:
    """The audio track's part: every 20 ms of session time, one frame is read from the speaker."""

    def __init__(self, clock: ScriptedClock, speaker: Speaker) -> None:
        self.clock = clock
        self.speaker = speaker
        self.frames: list[np.ndarray[Any, Any]] = []

    async def play(self, seconds: float) -> None:
        for _ in range(round(seconds / AUDIO_PTIME)):
            self.frames.append(self.speaker.audio_frame(self.clock.now()))
            await self.clock.advance(AUDIO_PTIME)

    async def play_until(self, done: asyncio.Task[None] | Turn, limit: float = 30.0) -> None:
        waited = 0.0
        while not _done(done) and waited < limit:
            await self.play(AUDIO_PTIME)
            waited += AUDIO_PTIME
        assert _done(done), "did not finish in scripted time"

    def audible_after(self, t: float) -> int:
        """Samples above a whisper from session time `t` on."""
        start = round(t * AUDIO_RATE)
        audio = np.concatenate(self.frames)[start:]
        return int(np.count_nonzero(np.abs(audio) > 64))


def _done(what: asyncio.Task[None] | Turn) -> bool:
    if isinstance(what, Turn):
        return what._task is not None and what._task.done()
    return what.done()


def make_turn(
    text: TextSource,
    tts: Any = None,
    clock: ScriptedClock | None = None,
    timings: list[tuple[str, float]] | None = None,
) -> tuple[Turn, Track, Wire]:
    clock = clock or ScriptedClock()
    speaker = Speaker()
    wire = Wire(clock)
    turn = Turn(
        text,
        tts=tts or FakeTTS(),
        voice=FAKE_VOICE,
        speaker=speaker,
        clock=clock,
        chat=ChatStream("reply-mid", "bot"),
        send_chat=wire.chat,
        send_event=wire.event,
        timing=(lambda stage, seconds: timings.append((stage, seconds))) if timings is not None else untimed,
    )
    return turn, Track(clock, speaker), wire


async def test_a_sentence_ready_after_the_last_one_played_is_timed_as_a_speech_gap() -> None:
    clock = ScriptedClock()
    timings: list[tuple[str, float]] = []
    sentence = FakeTTS().chunk_for("One two three.").duration
    # each sentence takes longer to synthesise than the one before it plays: the playback runs dry twice
    slow = FakeTTS(delay_s=sentence + 0.5, sleep=lambda s: clock.wait_until(clock.now() + s))
    turn, track, _ = make_turn(retell(STORY), slow, clock, timings)
    turn.start()
    await track.play_until(turn)
    gaps = [seconds for stage, seconds in timings if stage == "speech_gap"]
    assert len(gaps) == 2 and all(0.4 < gap < 0.6 for gap in gaps), gaps
    timings.clear()
    turn, track, _ = make_turn(retell(STORY), FakeTTS(), clock, timings)
    turn.start()
    await track.play_until(turn)
    assert "speech_gap" not in {stage for stage, _ in timings} and "playback_lead" in {s for s, _ in timings}


async def test_a_retold_reply_plays_whole_with_text_as_each_sentence_starts() -> None:
    turn, track, wire = make_turn(retell(STORY))
    turn.start()
    await track.play_until(turn)
    await turn.wait()
    assert turn.stopped_at is None and turn.heard() == STORY
    assert wire.text() == STORY
    pieces = wire.pieces()
    assert all(p["mid"] == "reply-mid" for p in pieces)
    assert [p["idx"] for p in pieces] == list(range(len(pieces)))
    assert pieces[-1]["fin"] and pieces[-1]["pld"]["text"] == "" and not any(p["fin"] for p in pieces[:-1])
    assert wire.events() == [AUDIO_START, AUDIO_END]
    # Each sentence's text goes out when its sound starts, not before.
    starts = {piece.text: piece.start for piece in turn.pieces}
    for t, message in wire.sent:
        if message["type"] == "chat" and message["pld"]["text"].strip():
            assert t >= starts[message["pld"]["text"].strip()] - 1e-9
    # The turn ends when the last sample has been played.
    assert track.clock.now() >= turn.pieces[-1].end - 1e-9


async def test_a_reply_opens_with_its_first_clause_and_asks_the_tts_by_when_its_sound_runs_out() -> None:
    tts = FakeTTS()
    text = "Well, one two three four five. Six seven."
    turn, track, wire = make_turn(retell(text), tts)
    turn.start()
    await track.play_until(turn)
    assert [piece.text for piece in turn.pieces] == ["Well,", "one two three four five.", "Six seven."]
    assert wire.text() == text and turn.heard() == text
    assert all(a.end == pytest.approx(b.start) for a, b in zip(turn.pieces, turn.pieces[1:], strict=False))  # no gap
    # Each piece is due when the speech queued before it runs out: the first at once, the next after "Well,".
    first, second, third = (request.due for request in tts.requests)
    assert first is not None and second is not None and third is not None
    assert second - first == pytest.approx(turn.pieces[0].end, abs=0.05)
    assert third - first == pytest.approx(turn.pieces[1].end, abs=0.05)


async def test_interrupt_cuts_the_sound_within_a_frame_and_keeps_only_what_was_heard() -> None:
    turn, track, wire = make_turn(retell(STORY))
    turn.start()
    await track.play(1.5)
    stopped = await turn.interrupt()
    assert stopped == pytest.approx(1.5)  # the next sample to play: silent from the next frame
    await track.play(1.0)
    fade = FADE_SAMPLES / AUDIO_RATE
    assert track.audible_after(stopped + fade) == 0
    heard = turn.heard()
    assert heard and STORY.startswith(heard) and heard != STORY
    # Whole words up to the one being said when the sound stopped.
    said = [p for p in turn.pieces if p.start < stopped]
    assert heard.split()[-1] in said[-1].text.split()
    assert wire.pieces()[-1]["fin"] and wire.events()[-1] == AUDIO_END
    assert await turn.interrupt() == stopped  # idempotent


async def test_a_failing_tts_ends_the_turn_with_1201_after_what_it_could_say() -> None:
    class BrokenTTS(FakeTTS):
        async def synthesize(
            self, text: str, voice: Voice, *, speed: float = 1.0, pron_map: Mapping[str, str] | None = None, **more: Any
        ) -> AsyncIterator[SpeechChunk]:
            if "Four" in text:
                raise RuntimeError("the engine crashed")
            async for chunk in super().synthesize(text, voice, speed=speed, pron_map=pron_map, **more):
                yield chunk

    turn, track, wire = make_turn(retell(STORY), BrokenTTS())
    turn.start()
    await track.play_until(turn)
    await turn.wait()
    assert wire.errors() == [1201]
    assert turn.heard() == "One two three."
    assert wire.pieces()[-1]["fin"] and wire.events()[-1] == AUDIO_END


async def test_a_streamed_answer_shows_deltas_as_produced_and_speaks_each_sentence_once() -> None:
    async def answer() -> TextSource:
        yield Failure(Code.PROCESSING_ERROR, "the language model stumbled")
        for delta in ("Hello ", "there. How ", "are you?"):
            yield TextDelta(delta)
        yield Sentence("Hello there.", shown=True)
        yield Sentence("How are you?", shown=True)

    turn, track, wire = make_turn(answer())
    turn.start()
    await track.play_until(turn)
    assert wire.text() == "Hello there. How are you?"  # as the LLM produced it, never narrated again
    texts = [(t, m) for t, m in wire.sent if m["type"] == "chat" and m["pld"]["text"]]
    assert all(t <= turn.pieces[0].start for t, _ in texts)  # shown before any sound (it starts with the next frame)
    assert wire.errors() == [1218]
    assert turn.heard() == "Hello there. How are you?"


def test_speech_on_an_idle_timeline_starts_with_the_next_frame() -> None:
    playback = Playback()
    playback.read()
    playback.read()
    assert playback.schedule(np.full(AUDIO_SAMPLES, 7, dtype=np.int16)) == 2 * AUDIO_SAMPLES
    assert np.all(playback.read() == 7)


def test_playback_clear_fades_and_says_where_the_sound_stopped() -> None:
    playback = Playback(lead=0.0)
    tone = np.full(AUDIO_RATE, 10_000, dtype=np.int16)
    start = playback.schedule(tone)
    assert start == 0
    for _ in range(10):
        playback.read()
    stop = playback.clear()
    assert stop == 10 * AUDIO_SAMPLES
    after = np.concatenate([playback.read() for _ in range(5)])
    assert np.all(np.diff(np.abs(after[:FADE_SAMPLES]).astype(int)) <= 0)  # fades out...
    assert after[0] > 0 and not np.any(after[FADE_SAMPLES:])  # ...then silence
    assert not playback.busy and playback.tail == playback.cursor


def test_heard_counts_whole_words_by_phoneme_timing_or_by_time() -> None:
    chunk = FakeTTS().chunk_for("alpha beta gamma")
    piece = Spoken("alpha beta gamma", 1.0, 1.0 + len(chunk.audio) / chunk.sample_rate, chunk.phonemes)
    gaps = [p for p in chunk.phonemes if p.phoneme == WORD_GAP]
    assert piece.heard(0.5) == "" and piece.heard(piece.end) == "alpha beta gamma"
    assert piece.heard(1.0 + gaps[0].start - 0.01) == "alpha"
    assert piece.heard(1.0 + gaps[0].end + 0.01) == "alpha beta"
    untimed = Spoken("one two three four", 0.0, 4.0)
    assert untimed.heard(1.5) == "one two"


def make_conversation(mode: int = 1) -> tuple[Conversation, Track, Wire]:
    clock = ScriptedClock()
    speaker = Speaker()
    wire = Wire(clock)
    tts = FakeTTS()
    conversation = Conversation(
        speaker=speaker,
        clock=clock,
        voices=VoiceRegistry([FAKE_VOICE], {"fake": lambda: tts}),
        settings=lambda: SessionSettings(avatar_id="a", voice_id=FAKE_VOICE.voice_id, mode=1),
        send_chat=wire.chat,
        send_event=wire.event,
    )
    return conversation, Track(clock, speaker), wire


async def test_replies_play_in_order_answer_with_the_chat_mid_and_are_recorded_as_heard() -> None:
    conversation, track, wire = make_conversation()
    task = asyncio.create_task(conversation.run())
    try:
        conversation.answer("First answer.", "client-mid")
        conversation.say("Then a line of its own.")
        await track.play(8.0)
        mids = [p["mid"] for p in wire.pieces()]
        assert mids[0] == "client-mid" and mids[-1] != "client-mid"
        assert wire.text() == "First answer.Then a line of its own."
        assert conversation.history == [
            {"from": "user", "text": "First answer."},
            {"from": "bot", "text": "First answer.", "interrupted": False},
            {"from": "bot", "text": "Then a line of its own.", "interrupted": False},
        ]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_interrupt_drops_owed_replies_and_the_queue_is_bounded() -> None:
    conversation, track, wire = make_conversation()
    task = asyncio.create_task(conversation.run())
    try:
        conversation.answer(STORY)
        await track.play(0.5)
        for index in range(MAX_QUEUED_REPLIES):
            conversation.answer(f"Owed reply {index}.")
        with pytest.raises(RateLimited):
            conversation.answer("One too many.")
        assert conversation.speaking
        stopped = await conversation.interrupt()
        assert stopped == pytest.approx(0.5)
        assert not conversation.speaking and await conversation.interrupt() is None
        await track.play(3.0)
        assert [m["text"] for m in conversation.history if m["from"] == "user"] == [STORY]
        assert conversation.history[-1]["interrupted"] is True
        assert conversation.transcript()["interrupts"] == [{"at": 0.5, "silent_from": 0.5}]
        conversation.answer("After the interrupt.")  # the queue has room again
        await track.play(3.0)
        assert conversation.history[-1] == {"from": "bot", "text": "After the interrupt.", "interrupted": False}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
