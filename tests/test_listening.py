"""Listening: resampling a WebRTC mic, Silero VAD, turn detection (server_vad, semantic_vad), Whisper STT.

Speech comes from the packaged Piper voice (English) and espeak-ng (German) at 22.05 kHz, upsampled to
48 kHz s16 stereo 20 ms frames like a browser mic, then sent through the server's Resampler. Times are
sample counts on the audio itself: no wall clock is asserted (speed figures: bench/models.py).
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from scipy.signal import resample_poly

from conftest import same_words
from liveavatar.errors import ParamError
from liveavatar.speech.espeak import espeak_library
from liveavatar.speech.partials import LONG_SPEECH_S, PAUSE_S, PartialTranscriber, PassGate, agreed_prefix
from liveavatar.speech.piper import PiperEngine
from liveavatar.speech.resample import Resampler
from liveavatar.speech.stt import (
    Transcript,
    WhisperSTT,
    multilingual_model_path,
    normalize_stt_language,
)
from liveavatar.speech.turns import (
    SEMANTIC_WAIT_MS,
    TAIL_MS,
    Partial,
    SpeechStarted,
    SpeechStopped,
    TurnDetector,
    TurnEvent,
    TurnSettings,
    classify_completeness,
)
from liveavatar.speech.vad import FRAME_SAMPLES, FRAME_SECONDS, SileroVAD
from liveavatar.speech.voices import PIPER_JOE

Float = npt.NDArray[np.float32]
TTS_RATE = 22050
MIC_RATE = 48000
MIC_FRAME = 960  # 20 ms at 48 kHz, per channel
TIMING_SLACK = 0.15  # Silero needs 1-3 frames to rise or fall, plus a frame of granularity


# --- audio makers -----------------------------------------------------------------------------------------


@functools.cache
def _piper() -> PiperEngine:
    engine = PiperEngine()
    engine.load()
    return engine


@functools.cache
def phrase(text: str) -> npt.NDArray[np.int16]:
    """Piper speech for `text` at 22.05 kHz, its leading and trailing silence cut (so gaps are exact)."""
    chunk = _piper().speak(text, PIPER_JOE, 1.0)
    assert chunk is not None and chunk.sample_rate == TTS_RATE
    return _trim(chunk.audio)


@functools.cache
def german(text: str) -> npt.NDArray[np.int16]:
    """espeak-ng German speech for `text` at 22.05 kHz, trimmed."""
    library = espeak_library()
    audio, _ = library.synthesize(text, "de", 175)
    assert library.sample_rate == TTS_RATE
    return _trim(audio)


def _trim(audio: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
    loud = np.flatnonzero(np.abs(audio.astype(np.int32)) > 500)
    return audio[loud[0] : loud[-1] + 1]


def silence(seconds: float) -> npt.NDArray[np.int16]:
    return np.zeros(round(seconds * TTS_RATE), dtype=np.int16)


def mic_frames(audio_22k: npt.NDArray[np.int16]) -> list[npt.NDArray[np.int16]]:
    """What aiortc hands the server for this speech: 48 kHz s16 packed stereo frames of 960 samples, (1, 1920)."""
    up = resample_poly(audio_22k.astype(np.float64), 320, 147)  # 22050 * 320 / 147 = 48000
    pcm = np.clip(np.round(up), -32768, 32767).astype(np.int16)
    pcm = np.concatenate((pcm, np.zeros(-len(pcm) % MIC_FRAME, dtype=np.int16)))
    stereo = np.repeat(pcm, 2)  # L R L R ...
    return [stereo[i : i + 2 * MIC_FRAME].reshape(1, -1) for i in range(0, len(stereo), 2 * MIC_FRAME)]


def listen(audio_22k: npt.NDArray[np.int16]) -> Float:
    """The 16 kHz mono float audio the server gets from this speech through its Resampler."""
    resampler = Resampler()
    parts = [resampler.process(frame, MIC_RATE, 2) for frame in mic_frames(audio_22k)]
    return np.concatenate([*parts, resampler.flush()])


async def detect(detector: TurnDetector, audio_22k: npt.NDArray[np.int16]) -> list[TurnEvent]:
    """Feed speech to a detector frame by frame as the server would; times are the resampler's sample count."""
    resampler = Resampler()
    events: list[TurnEvent] = []
    for frame in mic_frames(audio_22k):
        t = resampler.emitted / 16000
        events += await detector.feed(resampler.process(frame, MIC_RATE, 2), t)
    return events + await detector.flush()


def kinds(events: Sequence[TurnEvent]) -> list[str]:
    return [type(event).__name__ for event in events]


def stops(events: Sequence[TurnEvent]) -> list[SpeechStopped]:
    return [event for event in events if isinstance(event, SpeechStopped)]


def words(text: str) -> list[str]:
    return re.findall(r"[a-zäöüß]+", text.lower())


def overlap(said: str, heard: str) -> float:
    """Share of the said words that were heard."""
    expected, got = words(said), set(words(heard))
    return sum(w in got for w in expected) / len(expected)


# --- fixtures ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vad() -> SileroVAD:
    model = SileroVAD()
    model.load()
    return model


@pytest.fixture(scope="module")
def stt(tmp_path_factory: pytest.TempPathFactory) -> WhisperSTT:
    backend = WhisperSTT(cache_dir=tmp_path_factory.mktemp("whisper-base"))
    backend.model_for("en")
    return backend


class ScriptedVAD:
    """A VAD whose speech probability is written into the audio: each frame's first sample."""

    def stream(self) -> ScriptedStream:
        return ScriptedStream()

    def load(self) -> None:
        pass  # nothing to load


class ScriptedStream:
    def process(self, frame: Float) -> float:
        return float(frame[0])

    def reset(self) -> None:
        pass


def scripted(*pieces: tuple[float, float]) -> Float:
    """Audio for ScriptedVAD from (probability, seconds) pieces, whole frames each."""
    return np.concatenate(
        [np.full(round(seconds / FRAME_SECONDS) * FRAME_SAMPLES, p, dtype=np.float32) for p, seconds in pieces]
    )


async def feed_in_chunks(detector: TurnDetector, audio: Float, chunk: int = 320) -> list[TurnEvent]:
    events: list[TurnEvent] = []
    for start in range(0, len(audio), chunk):
        events += await detector.feed(audio[start : start + chunk], start / 16000)
    return events


# --- VAD --------------------------------------------------------------------------------------------------


def test_silero_vad_marks_speech_and_silence(vad: SileroVAD) -> None:
    speech = phrase("The quick brown fox jumps over the lazy dog")
    audio = listen(np.concatenate((silence(1.0), speech, silence(1.5))))
    stream = vad.stream()
    probabilities = np.array([stream.process(audio[i : i + 512]) for i in range(0, len(audio) - 511, 512)])
    times = np.arange(len(probabilities)) * FRAME_SECONDS
    end = 1.0 + len(speech) / TTS_RATE
    inside = probabilities[(times > 1.1) & (times < end - 0.15)]
    before = probabilities[times < 0.95]
    after = probabilities[times > end + 0.3]
    assert np.mean(inside >= 0.5) > 0.8, inside.round(2)
    assert before.max() < 0.2 and after.max() < 0.2

    # Streams share the model, never the state: interleaving two streams changes nothing.
    one, two = vad.stream(), vad.stream()
    interleaved = []
    for i in range(0, len(audio) - 511, 512):
        interleaved.append(one.process(audio[i : i + 512]))
        two.process(np.zeros(512, dtype=np.float32))
    assert np.allclose(interleaved, probabilities, atol=1e-6)
    with pytest.raises(ValueError):
        one.process(np.zeros(480, dtype=np.float32))


# --- server_vad -------------------------------------------------------------------------------------------


async def test_one_turn_per_utterance_with_the_right_times(vad: SileroVAD) -> None:
    first, second = phrase("Hello there, how are you today"), phrase("Please tell me a short story")
    audio = np.concatenate((silence(1.0), first, silence(1.5), second, silence(1.5)))
    spoken = [(1.0, 1.0 + len(first) / TTS_RATE)]
    spoken.append((spoken[0][1] + 1.5, spoken[0][1] + 1.5 + len(second) / TTS_RATE))
    detector = TurnDetector(vad, TurnSettings())
    events = await detect(detector, audio)
    assert kinds(events) == ["SpeechStarted", "SpeechStopped"] * 2
    for (begin, end), started, stopped in zip(spoken, events[::2], events[1::2], strict=True):
        assert isinstance(started, SpeechStarted) and isinstance(stopped, SpeechStopped)
        assert abs(started.t - begin) < TIMING_SLACK and stopped.speech_start == started.t
        assert abs(stopped.speech_end - end) < TIMING_SLACK
        assert 0.5 <= stopped.t - stopped.speech_end < 0.5 + FRAME_SECONDS + 1e-6
        assert stopped.audio_start == pytest.approx(started.t - 0.3, abs=1e-6), "300 ms of prefix padding"
        assert len(stopped.audio) == round((stopped.speech_end + TAIL_MS / 1000 - stopped.audio_start) * 16000)
        assert stopped.audio.dtype == np.float32 and stopped.transcript is None
    assert not detector.speaking


@pytest.mark.parametrize(("silence_ms", "turns"), [(800, 1), (300, 2)])
async def test_a_400ms_pause_ends_the_turn_only_when_silence_duration_is_shorter(
    vad: SileroVAD, silence_ms: int, turns: int
) -> None:
    first, second = phrase("I would like to order a pizza"), phrase("with extra cheese please")
    audio = np.concatenate((silence(1.0), first, silence(0.4), second, silence(1.5)))
    events = await detect(TurnDetector(vad, TurnSettings(silence_duration_ms=silence_ms)), audio)
    assert kinds(events) == ["SpeechStarted", "SpeechStopped"] * turns
    done = stops(events)
    assert abs(done[-1].speech_end - (1.0 + (len(first) + len(second)) / TTS_RATE + 0.4)) < TIMING_SLACK
    assert done[-1].t - done[-1].speech_end == pytest.approx(silence_ms / 1000, abs=FRAME_SECONDS + 1e-6)
    if turns == 2:
        assert abs(done[0].speech_end - (1.0 + len(first) / TTS_RATE)) < TIMING_SLACK


async def test_update_takes_effect_on_the_next_utterance(vad: SileroVAD) -> None:
    first, second = phrase("I would like to order a pizza"), phrase("with extra cheese please")
    utterance = np.concatenate((first, silence(0.4), second))
    detector = TurnDetector(vad, TurnSettings(silence_duration_ms=800))
    resampler = Resampler()
    events: list[TurnEvent] = []
    for frame in mic_frames(np.concatenate((silence(1.0), utterance, silence(2.0), utterance, silence(1.5)))):
        new = await detector.feed(resampler.process(frame, MIC_RATE, 2), resampler.emitted / 16000)
        if any(isinstance(event, SpeechStarted) for event in new) and not events:
            detector.update(TurnSettings(silence_duration_ms=300))  # mid-utterance: this one keeps 800 ms
            assert detector.settings.silence_duration_ms == 800
        events += new
    assert kinds(events) == ["SpeechStarted", "SpeechStopped"] * 3, "one turn, then the pause splits the next"
    assert detector.settings.silence_duration_ms == 300
    first_stop, *later = stops(events)
    assert first_stop.t - first_stop.speech_end >= 0.8
    assert all(0.3 <= stop.t - stop.speech_end < 0.4 for stop in later)


async def test_clicks_are_ignored_and_hysteresis_bridges_dips() -> None:
    detector = TurnDetector(ScriptedVAD(), TurnSettings(silence_duration_ms=500), min_speech_ms=200)
    audio = scripted(
        (0.0, 0.32),
        (0.9, 0.128),  # a 128 ms click: under min_speech_ms
        (0.0, 0.64),
        (0.9, 0.64),  # speech from 1.088 s
        (0.4, 0.32),  # a dip above threshold - 0.15 keeps the voice going
        (0.9, 0.32),
        (0.1, 1.0),
    )
    events = await feed_in_chunks(detector, audio)
    assert kinds(events) == ["SpeechStarted", "SpeechStopped"]
    started, stopped = events
    assert isinstance(stopped, SpeechStopped)
    assert started == SpeechStarted(pytest.approx(1.088))
    assert stopped.speech_end == pytest.approx(1.088 + 1.28)
    assert stopped.t == pytest.approx(1.088 + 1.28 + 0.512)
    assert stopped.audio_start == pytest.approx(1.088 - 0.3)
    assert np.all(stopped.audio[: round(0.3 * 16000)] == 0.0), "prefix padding: the silence before the onset"


async def test_a_turn_open_when_the_stream_ends_is_closed_by_flush() -> None:
    detector = TurnDetector(ScriptedVAD(), TurnSettings())
    events = await feed_in_chunks(detector, scripted((0.0, 0.32), (0.9, 0.64)))
    assert kinds(events) == ["SpeechStarted"] and detector.speaking
    [stopped] = await detector.flush()
    assert isinstance(stopped, SpeechStopped) and stopped.t == pytest.approx(0.96)
    assert not detector.speaking and await detector.flush() == []


# --- partial transcription ---------------------------------------------------------------------------------

WORDS = tuple(f"w{i}" for i in range(1, 40))


class FakeSTT:
    """STT at the model boundary: three words per second of audio it is given; records each pass."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, str]] = []
        """(seconds of audio, forced prefix) of each pass, in the order they began."""
        self.hold: asyncio.Event | None = None
        """While set to an unset Event, passes wait for it (a pass still running)."""
        self.fail = False

    async def __call__(self, audio: Float, prefix: str) -> Transcript:
        self.calls.append((len(audio) / 16000, prefix))
        if self.hold is not None:
            await self.hold.wait()
        if self.fail:
            raise RuntimeError("no model")
        text = " ".join(WORDS[: round(3 * len(audio) / 16000)])
        assert text.startswith(prefix), "a pass's text starts with its forced prefix"
        return Transcript(text, "en")


async def listen_along(
    detector: TurnDetector, partials: PartialTranscriber, audio: Float, t: float = 0.0, chunk: int = 320
) -> tuple[list[TurnEvent], list[Transcript]]:
    """Feed audio from session time `t` as the listener does: passes follow each feed, a stop asks for the final."""
    events: list[TurnEvent] = []
    finals: list[Transcript] = []
    for start in range(0, len(audio), chunk):
        new = await detector.feed(audio[start : start + chunk], t + start / 16000)
        for event in new:
            if isinstance(event, SpeechStopped):
                finals.append(await partials.final(event.audio, event.audio_start, event.speech_end))
        events += new
        partials.follow(detector)
        await asyncio.sleep(0)  # the listener waits for the next mic frame: passes run meanwhile
    return events, finals


def test_agreed_prefix_keeps_the_words_two_passes_share() -> None:
    cook = "What should I cook for"
    assert agreed_prefix(f"{cook}?", f"{cook} dinner tonight?") == cook
    assert agreed_prefix("Why is this guy?", "Why is the sky blue?") == "Why is"
    assert agreed_prefix("Sorry to interrupt, what", "Sorry to interrupt. What time") == "Sorry to interrupt. What"
    assert agreed_prefix("", "Hello there") == "" and agreed_prefix("Hello", "Goodbye") == ""


async def test_the_pass_made_in_the_final_pause_is_the_turns_transcript() -> None:
    stt = FakeSTT()
    detector, partials = TurnDetector(ScriptedVAD(), TurnSettings()), PartialTranscriber(stt)
    events, finals = await listen_along(detector, partials, scripted((0.0, 0.32), (0.9, 0.96), (0.0, 1.0)))
    assert kinds(events) == ["SpeechStarted", "SpeechStopped"]
    stopped = events[1]
    assert isinstance(stopped, SpeechStopped) and stopped.speech_end == pytest.approx(1.28)
    # One pass, started 128 ms into the pause (the first 32 ms frame past PAUSE_S), long before the
    # 500 ms silence ended the turn; no voice came after it, so it is the transcript: no pass after the end.
    assert stt.calls == [(pytest.approx(1.28 + 0.128 - 0.02), "")]
    assert stopped.t == pytest.approx(1.28 + 0.512) and PAUSE_S < 0.128 < 0.5
    assert finals == [Transcript(" ".join(WORDS[:4]), "en")]
    assert partials.reused == 1 and partials.passes == 1


async def test_speech_after_a_pause_pass_is_transcribed_again_with_the_agreed_words_forced() -> None:
    stt = FakeSTT()
    detector, partials = TurnDetector(ScriptedVAD(), TurnSettings()), PartialTranscriber(stt, every_s=60.0)
    audio = scripted((0.0, 0.32), (0.9, 0.96), (0.0, 0.32), (0.9, 0.64), (0.0, 0.32), (0.9, 0.64), (0.0, 1.0))
    events, finals = await listen_along(detector, partials, audio)
    assert kinds(events) == ["SpeechStarted", "SpeechStopped"], "the 320 ms pauses are shorter than the silence"
    # A pass in each pause; the third is forced to start with the words the first two agreed on.
    assert [prefix for _, prefix in stt.calls] == ["", "", " ".join(WORDS[:4])]
    assert [seconds for seconds, _ in stt.calls] == pytest.approx([1.388, 2.348, 3.308])
    assert finals == [Transcript(" ".join(WORDS[:10]), "en")] and partials.reused == 1
    assert partials.committed == "", "the next utterance starts afresh"


async def test_long_speech_gets_passes_while_it_goes_on_and_only_one_at_a_time() -> None:
    stt = FakeSTT()
    stt.hold = asyncio.Event()
    detector = TurnDetector(ScriptedVAD(), TurnSettings())
    partials = PartialTranscriber(stt, every_s=1.0, long_s=1.0)
    audio = scripted((0.0, 0.32), (0.9, 3.2))
    events, _ = await listen_along(detector, partials, audio)
    assert kinds(events) == ["SpeechStarted"]
    assert stt.calls == [(pytest.approx(0.32 + 1.024 - 0.02), "")], "one pass after 1 s of voice, still running"
    stt.hold.set()
    await asyncio.sleep(0)
    more, finals = await listen_along(detector, partials, scripted((0.9, 1.28), (0.0, 1.0)), t=3.52)
    assert kinds(more) == ["SpeechStopped"] and len(finals) == 1
    seconds = [s for s, _ in stt.calls]
    # The next pass starts at the first feed after the first ended (it came 1 s after its cut), then every
    # second of new audio; the pause pass covers the rest and is reused.
    assert seconds[1] == pytest.approx(3.52 - 0.02, abs=0.02) and len(seconds) == 4
    assert seconds[2] == pytest.approx(seconds[1] + 1.024, abs=0.02)
    assert seconds[3] == pytest.approx(3.52 + 1.28 + 0.128 - 0.02, abs=0.02)
    assert [p for _, p in stt.calls] == ["", "", " ".join(WORDS[:4]), " ".join(WORDS[:10])]
    assert partials.reused == 1


async def test_passes_during_speech_wait_for_a_free_stt_but_pause_passes_do_not() -> None:
    stt = FakeSTT()
    busy = PassGate(running=1)  # another session's pass is running on the shared STT
    detector, partials = TurnDetector(ScriptedVAD(), TurnSettings()), PartialTranscriber(stt, busy, long_s=1.0)
    _, finals = await listen_along(detector, partials, scripted((0.0, 0.32), (0.9, 2.56), (0.0, 1.0)))
    assert [s for s, _ in stt.calls] == [pytest.approx(0.32 + 2.56 + 0.128 - 0.02)], "only the pause pass"
    assert partials.reused == 1 and len(finals) == 1

    # A slow STT (0.8 s a pass lately) spaces the passes during speech to keep it busy half the time at most:
    # the first after long_s (at the 32nd frame's end), the next 0.7 * 0.8 s / 0.5 later (the fake's instant
    # pass lowered the average), at the end of the frame reaching 1.024 + 1.12 s. Shorter speech gets none.
    for long_s, starts in ((1.0, [32 * FRAME_SECONDS, 68 * FRAME_SECONDS]), (LONG_SPEECH_S, [])):
        stt = FakeSTT()
        slow = PassGate(pass_s=0.8)
        detector, partials = TurnDetector(ScriptedVAD(), TurnSettings()), PartialTranscriber(stt, slow, long_s=long_s)
        await listen_along(detector, partials, scripted((0.0, 0.32), (0.9, 2.88), (0.0, 1.0)))
        during = [seconds + 0.02 - 0.32 for seconds, _ in stt.calls[:-1]]  # from the voice's start
        assert during == pytest.approx(starts, abs=1e-6), long_s
        assert slow.pass_s < 0.8, "fast fake passes bring the average down"


async def test_a_turn_ending_before_its_pass_or_after_a_failed_one_is_transcribed_at_the_end() -> None:
    stt = FakeSTT()
    stt.fail = True
    detector, partials = TurnDetector(ScriptedVAD(), TurnSettings()), PartialTranscriber(stt)
    with pytest.raises(RuntimeError):
        await listen_along(detector, partials, scripted((0.0, 0.32), (0.9, 0.96), (0.0, 1.0)))
    assert len(stt.calls) == 2 and partials.reused == 0, "the failed pause pass, then the final one (failing too)"

    stt = FakeSTT()
    quick = TurnDetector(ScriptedVAD(), TurnSettings(silence_duration_ms=64))
    partials = PartialTranscriber(stt)
    _, finals = await listen_along(quick, partials, scripted((0.0, 0.32), (0.9, 0.96), (0.0, 1.0)))
    assert stt.calls == [(pytest.approx(1.28 + 0.064 - 0.02), "")], "silence shorter than PAUSE_S: one pass at the end"
    assert len(finals) == 1 and partials.reused == 0


# --- semantic_vad -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "verdict"),
    [
        ("I would like to order a pizza.", "complete"),
        ("What time is it?", "complete"),
        ("Thank you!", "complete"),
        ("I would like to order a pizza and", "unfinished"),
        ("I would like to order a pizza and...", "unfinished"),
        ("I was thinking, um", "unfinished"),
        ("So I went to the", "unfinished"),
        ("but", "unfinished"),
        ("My phone number is 0176.", "unfinished"),
        ("It is 3 4 5.", "unfinished"),
        ("I am 25.", "complete"),
        ("How many.", "unfinished"),
        ("How many?", "complete"),
        ("Ich möchte eine Pizza und", "unfinished"),
        ("Ich möchte eine Pizza bestellen.", "complete"),
        ("", "unclear"),
        ("pizza", "unclear"),
    ],
)
def test_completeness_heuristic(text: str, verdict: str) -> None:
    language = "de" if "Ich" in text else "en"
    assert classify_completeness(text, language) == verdict


async def test_semantic_vad_waits_by_verdict_and_rejudges_after_more_speech() -> None:
    said: list[str] = ["I want to order a pizza and", "I want to order a pizza and a salad."]
    heard: list[float] = []

    async def transcribe(audio: Float) -> Transcript:
        heard.append(len(audio) / 16000)
        return Transcript(said[len(heard) - 1], "en")

    detector = TurnDetector(ScriptedVAD(), TurnSettings(type="semantic_vad"), transcribe=transcribe)
    audio = scripted((0.0, 0.32), (0.9, 0.96), (0.0, 1.6), (0.9, 0.64), (0.0, 3.0))
    events = await feed_in_chunks(detector, audio)
    assert kinds(events) == ["SpeechStarted", "Partial", "Partial", "SpeechStopped"]
    _, unfinished, complete, stopped = events
    assert unfinished == Partial(pytest.approx(1.28 + 0.256), said[0], "unfinished")
    assert complete == Partial(pytest.approx(3.52 + 0.256), said[1], "complete")
    assert isinstance(stopped, SpeechStopped) and stopped.t == complete.t
    assert stopped.transcript is not None and stopped.transcript.text == said[1]
    # 300 ms prefix padding (from 0.02 s) + speech + the pause so far
    assert heard == pytest.approx([1.536 - 0.02, 3.776 - 0.02])

    async def broken(audio: Float) -> Transcript:
        raise RuntimeError("no model")

    fallback = TurnDetector(ScriptedVAD(), TurnSettings(type="semantic_vad"), transcribe=broken)
    events = await feed_in_chunks(fallback, scripted((0.0, 0.32), (0.9, 0.96), (0.0, 2.0)))
    assert kinds(events) == ["SpeechStarted", "Partial", "SpeechStopped"]
    assert events[-1].t == pytest.approx(1.28 + SEMANTIC_WAIT_MS["unclear"] / 1000, abs=FRAME_SECONDS)


async def test_semantic_vad_waits_longer_after_an_unfinished_sentence(vad: SileroVAD, stt: WhisperSTT) -> None:
    async def transcribe(audio: Float) -> Transcript:
        return await stt.transcribe(audio, "en")

    waits = {}
    for text in ("I would like to order a pizza and", "I would like to order a pizza."):
        speech = phrase(text)
        detector = TurnDetector(vad, TurnSettings(type="semantic_vad"), transcribe=transcribe)
        events = await detect(detector, np.concatenate((silence(1.0), speech, silence(3.0))))
        assert kinds(events) == ["SpeechStarted", "Partial", "SpeechStopped"], events
        partial, stopped = events[1], events[2]
        assert isinstance(partial, Partial) and isinstance(stopped, SpeechStopped)
        assert abs(stopped.speech_end - (1.0 + len(speech) / TTS_RATE)) < TIMING_SLACK
        waits[text.endswith(".")] = stopped.t - stopped.speech_end
    assert waits[True] == pytest.approx(0.25, abs=FRAME_SECONDS + 1e-6), "a finished sentence ends the turn at once"
    assert waits[False] == pytest.approx(2.0, abs=FRAME_SECONDS + 1e-6), "a trailing 'and' waits for more"


# --- speech to text ---------------------------------------------------------------------------------------


def test_stt_language_normalisation() -> None:
    assert normalize_stt_language(None) is None and normalize_stt_language("") is None
    assert normalize_stt_language("en-US") == "en"
    assert normalize_stt_language("pt_BR") == "pt"
    assert normalize_stt_language("DE") == "de"
    assert normalize_stt_language("iw") == "he"
    assert normalize_stt_language("auto") == "auto"
    with pytest.raises(ParamError):
        normalize_stt_language("xx-YY")


async def test_whisper_tiny_en_transcribes_the_turns_the_detector_cuts(vad: SileroVAD, stt: WhisperSTT) -> None:
    sentences = ["The weather is lovely today", "Can you recommend a good book about history"]
    audio = np.concatenate((silence(0.5), phrase(sentences[0]), silence(1.5), phrase(sentences[1]), silence(1.0)))
    turns = stops(await detect(TurnDetector(vad, TurnSettings()), audio))
    assert len(turns) == 2
    for said, turn in zip(sentences, turns, strict=True):
        transcript = await stt.transcribe(turn.audio, "en-US")
        assert transcript.language == "en" and transcript.segments
        assert same_words(words(transcript.text), words(said))
    # A forced prefix (the words earlier partial passes agreed on) is kept and the rest decoded after it.
    forced = await stt.transcribe(turns[1].audio, "en", prefix="Can you recommend")
    assert forced.text.startswith("Can you recommend") and same_words(words(forced.text), words(sentences[1]))
    empty = await stt.transcribe(np.zeros(800, dtype=np.float32), None)
    assert empty == Transcript("", "en", (), 0.05), "too short to be worth a model run"


def test_multilingual_model_is_assembled_once(tmp_path: Path) -> None:
    folder = multilingual_model_path(tmp_path)
    model = folder / "model.bin"
    assert {"model.bin", "config.json"} <= {p.name for p in folder.iterdir()}
    stamp = model.stat().st_mtime_ns
    assert multilingual_model_path(tmp_path) == folder and model.stat().st_mtime_ns == stamp, "reused"


async def test_whisper_base_transcribes_german(stt: WhisperSTT) -> None:
    stt.model_for("de")
    said = "Guten Morgen. Ich möchte heute eine große Pizza mit Käse bestellen."
    audio = listen(np.concatenate((silence(0.3), german(said), silence(0.3))))
    transcript = await stt.transcribe(audio, "de-DE")
    assert transcript.language == "de"
    assert overlap(said, transcript.text) >= 0.5
    detected = await stt.transcribe(audio, "auto")
    assert detected.language == "de" and overlap(said, detected.text) >= 0.5
