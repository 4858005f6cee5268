"""Turn detection: when the user starts and stops speaking (server_vad silence rule, or semantic_vad)."""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

from liveavatar.speech.stt import Transcript
from liveavatar.speech.vad import FRAME_SAMPLES, FRAME_SECONDS, SAMPLE_RATE, VAD

log = logging.getLogger(__name__)

FloatAudio = npt.NDArray[np.float32]
Transcribe = Callable[[FloatAudio], Awaitable[Transcript]]
"""Async speech-to-text for semantic_vad: 16 kHz mono float audio -> Transcript (language bound by the caller)."""
Verdict = Literal["complete", "unfinished", "unclear"]

MIN_SPEECH_MS: Final = 200
"""Voiced time an utterance needs before it counts (shorter bursts are clicks, coughs, bumps)."""
CANDIDATE_GAP_MS: Final = 300
"""A not-yet-counted burst followed by this much silence (or silence_duration_ms if shorter) is dropped."""
NEGATIVE_GAP: Final = 0.15
"""Hysteresis: inside speech a frame stays voiced down to `threshold - NEGATIVE_GAP` (as Silero's own helper)."""
TAIL_MS: Final = 200
"""Silence kept after the last voiced frame in SpeechStopped.audio (Whisper ends words better with some)."""
MAX_TURN_S: Final = 60.0
"""A turn this long is ended regardless (a stuck noise source must not grow the buffer without bound)."""
SEMANTIC_CHECK_MS: Final = 250
"""semantic_vad: a pause this long makes the detector transcribe the speech so far and judge it."""
SEMANTIC_WAIT_MS: Final[Mapping[Verdict, int]] = {"complete": SEMANTIC_CHECK_MS, "unclear": 800, "unfinished": 2000}
"""semantic_vad: total silence that ends the turn, by what the speech so far sounds like."""
SEMANTIC_MAX_AUDIO_S: Final = 28.0
"""semantic_vad judges at most this much of the latest audio (one Whisper window; bounds the pause's cost)."""


@dataclass(frozen=True)
class TurnSettings:
    """When the user has finished speaking (server_vad's three knobs, or semantic_vad)."""

    type: Literal["server_vad", "semantic_vad"] = "server_vad"
    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500


@dataclass(frozen=True)
class SpeechStarted:
    """The user has started speaking; `t` is the speech onset on the session clock (seconds)."""

    t: float


@dataclass(frozen=True, eq=False)
class SpeechStopped:
    """The user's turn is over: decided at `t`; `audio` is 16 kHz mono float from prefix padding to speech end."""

    t: float
    audio: FloatAudio
    speech_start: float
    speech_end: float
    """When the voice stopped (`t` minus the silence that ended the turn)."""
    audio_start: float
    """Session time of `audio[0]` (speech_start minus the prefix padding available)."""
    transcript: Transcript | None = None
    """semantic_vad's transcript of the whole utterance when it already made one (saves a second STT run)."""


@dataclass(frozen=True)
class Partial:
    """semantic_vad judged the speech so far at a pause: its transcript and whether it sounds finished."""

    t: float
    text: str
    verdict: Verdict


TurnEvent = SpeechStarted | SpeechStopped | Partial


class TurnDetector:
    """Cuts one session's 16 kHz mic audio into user turns; times come from the `t` given with the audio.

    Feed it every chunk (any length) with the session time of the chunk's first sample. The audio is
    the clock: silence is counted in samples, so results do not depend on how fast `feed` is called.
    """

    def __init__(
        self,
        vad: VAD,
        settings: TurnSettings | None = None,
        *,
        transcribe: Transcribe | None = None,
        min_speech_ms: int = MIN_SPEECH_MS,
    ) -> None:
        self._vad = vad.stream()
        self._settings = settings or TurnSettings()
        self._next_settings: TurnSettings | None = None
        self._transcribe = transcribe
        self._min_speech = min_speech_ms / 1000
        self._pending = np.zeros(0, dtype=np.float32)
        self._pending_t = 0.0
        self._history: deque[FloatAudio] = deque(maxlen=self._history_frames())
        self._in_utterance = False
        self._started = False
        self._frames: list[FloatAudio] = []
        self._audio_start = 0.0
        self._onset = 0.0
        self._voiced = 0.0
        self._last_voiced_end = 0.0
        self._verdict: Verdict | None = None
        self._transcript: Transcript | None = None
        self._feeding = asyncio.Lock()  # feed/flush from two tasks at once would interleave frames

    @property
    def settings(self) -> TurnSettings:
        """The settings the current (or next) utterance is judged by."""
        return self._settings

    @property
    def speaking(self) -> bool:
        """True between SpeechStarted and SpeechStopped."""
        return self._started

    @property
    def audio_start(self) -> float:
        """Session time of the current utterance's first audio sample (prefix padding included)."""
        return self._audio_start

    @property
    def voice_start(self) -> float:
        """Session time the current utterance's voice began."""
        return self._onset

    @property
    def voice_end(self) -> float:
        """Session time of the end of the current utterance's last voiced frame so far."""
        return self._last_voiced_end

    @property
    def heard_until(self) -> float:
        """Session time of the end of the audio judged so far (a partial frame waits for the next feed)."""
        return self._pending_t

    def audio_so_far(self) -> FloatAudio:
        """The current utterance's audio from `audio_start` to `heard_until` (a copy; empty outside one)."""
        return np.concatenate(self._frames) if self._frames else np.zeros(0, np.float32)

    def update(self, settings: TurnSettings) -> None:
        """Use new settings from the next utterance on (at once when nobody is speaking)."""
        if self._in_utterance:
            self._next_settings = settings
        else:
            self._apply(settings)

    async def feed(self, audio: FloatAudio, t: float) -> list[TurnEvent]:
        """Take 16 kHz mono float audio starting at session time `t`; return the events it completes.

        Awaits only under semantic_vad, while a pause is being transcribed.
        """
        async with self._feeding:
            return await self._feed(audio, t)

    async def _feed(self, audio: FloatAudio, t: float) -> list[TurnEvent]:
        if not len(self._pending):
            self._pending_t = t
        data = np.concatenate((self._pending, np.asarray(audio, dtype=np.float32).reshape(-1)))
        events: list[TurnEvent] = []
        whole = len(data) // FRAME_SAMPLES * FRAME_SAMPLES
        for start in range(0, whole, FRAME_SAMPLES):
            frame = data[start : start + FRAME_SAMPLES]
            frame_t = self._pending_t + start / SAMPLE_RATE
            await self._step(frame, frame_t, self._vad.process(frame), events)
        self._pending = data[whole:].copy()
        self._pending_t += whole / SAMPLE_RATE
        return events

    async def flush(self) -> list[TurnEvent]:
        """End of the audio stream: end an open turn now (a burst too short to count is dropped)."""
        async with self._feeding:
            return self._flush()

    def _flush(self) -> list[TurnEvent]:
        now = self._pending_t
        self._pending = np.zeros(0, dtype=np.float32)
        if not self._started:
            self._drop_candidate()
            return []
        return [self._stop(max(now, self._last_voiced_end))]

    def reset(self) -> None:
        """Forget any utterance in progress and the VAD state (e.g. after the user's track was replaced)."""
        self._vad.reset()
        self._pending = np.zeros(0, dtype=np.float32)
        self._history.clear()
        self._end_utterance()

    async def _step(self, frame: FloatAudio, start: float, probability: float, events: list[TurnEvent]) -> None:
        end = start + FRAME_SECONDS
        settings = self._settings
        if not self._in_utterance:
            if probability < settings.threshold:
                self._history.append(frame)
                return
            self._begin(frame, start)
        else:
            self._frames.append(frame)
        if probability >= max(settings.threshold - NEGATIVE_GAP, 0.01):
            self._voiced += FRAME_SECONDS
            self._last_voiced_end = end
            self._verdict = None  # speech resumed: the next pause is judged afresh
        if not self._started and self._voiced >= self._min_speech - 1e-9:
            self._started = True
            events.append(SpeechStarted(self._onset))
        silence = end - self._last_voiced_end
        if not self._started:
            if silence * 1000 >= min(CANDIDATE_GAP_MS, settings.silence_duration_ms) - 1e-6:
                self._drop_candidate()
            return
        if end - self._onset >= MAX_TURN_S:
            events.append(self._stop(end))
        elif settings.type == "semantic_vad":
            await self._judge(silence, end, events)
        elif silence * 1000 >= settings.silence_duration_ms - 1e-6:
            events.append(self._stop(end))

    async def _judge(self, silence: float, now: float, events: list[TurnEvent]) -> None:
        if silence * 1000 < SEMANTIC_CHECK_MS - 1e-6:
            return
        if self._verdict is None:
            self._verdict, transcript = await self._classify()
            events.append(Partial(now, transcript.text if transcript else "", self._verdict))
            covered = sum(len(f) for f in self._frames) <= SEMANTIC_MAX_AUDIO_S * SAMPLE_RATE
            self._transcript = transcript if covered else None
        if silence * 1000 >= SEMANTIC_WAIT_MS[self._verdict] - 1e-6:
            events.append(self._stop(now))

    async def _classify(self) -> tuple[Verdict, Transcript | None]:
        if self._transcribe is None:
            return "unclear", None
        try:
            audio = np.concatenate(self._frames)[-round(SEMANTIC_MAX_AUDIO_S * SAMPLE_RATE) :]
            transcript = await self._transcribe(audio)
        except Exception:  # a failed STT must not stop turn taking: fall back to the middle wait
            log.warning("semantic_vad: transcription failed; judging the pause as unclear", exc_info=True)
            return "unclear", None
        return classify_completeness(transcript.text, transcript.language), transcript

    def _begin(self, frame: FloatAudio, start: float) -> None:
        prefix = int(self._settings.prefix_padding_ms * SAMPLE_RATE / 1000)
        before = np.concatenate(self._history)[-prefix:] if self._history and prefix else np.zeros(0, np.float32)
        self._in_utterance = True
        self._frames = [before, frame] if len(before) else [frame]
        self._audio_start = start - len(before) / SAMPLE_RATE
        self._onset = start
        self._voiced = 0.0
        self._last_voiced_end = start
        self._verdict = None
        self._transcript = None
        self._history.clear()

    def _stop(self, now: float) -> SpeechStopped:
        audio = np.concatenate(self._frames) if self._frames else np.zeros(0, np.float32)
        keep_until = min(now, self._last_voiced_end + TAIL_MS / 1000)
        audio = audio[: max(0, round((keep_until - self._audio_start) * SAMPLE_RATE))]
        transcript = self._transcript if self._verdict is not None else None
        event = SpeechStopped(now, audio, self._onset, self._last_voiced_end, self._audio_start, transcript)
        tail = self._frames[-self._history_frames() :]
        self._end_utterance()
        self._history.extend(tail)
        return event

    def _drop_candidate(self) -> None:
        frames = self._frames
        self._end_utterance()
        self._history.extend(frames)  # a dropped burst still counts as audio before the next onset

    def _end_utterance(self) -> None:
        self._in_utterance = False
        self._started = False
        self._frames = []
        self._verdict = None
        self._transcript = None
        if self._next_settings is not None:
            self._apply(self._next_settings)
            self._next_settings = None

    def _apply(self, settings: TurnSettings) -> None:
        self._settings = settings
        if self._history.maxlen != self._history_frames():
            self._history = deque(self._history, maxlen=self._history_frames())

    def _history_frames(self) -> int:
        return math.ceil(self._settings.prefix_padding_ms / 1000 / FRAME_SECONDS) + 1


# semantic_vad's completeness heuristic ------------------------------------------------------------------

_WORD = re.compile(r"\d+(?:[.,:]\d+)*|[^\W\d_]+(?:['’][^\W_]+)*")
_NUMBER = re.compile(r"^\d+(?:[.,:]\d+)*$")
_HANGING = ("...", "…", ",", ";", ":", "-", "–", "—")
_TERMINAL = (".", "!", "?", "。", "！", "？")
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?。！？])\s+")


def _words(spaced: str) -> frozenset[str]:
    return frozenset(spaced.split())


CONTINUATIONS: Final[Mapping[str, frozenset[str]]] = {
    "en": _words(
        # conjunctions, prepositions, articles/possessives, fillers, arithmetic words: never the last word
        "and but or nor so because cause if than whether although though unless until while whereas plus"
        " to of in at for with from about into onto by via per between without towards toward like"
        " a an the my your our their its every"
        " um umm uh uhm er erm hmm mm ah"
        " point dot minus times"
    ),
    "de": _words(
        "und aber oder denn sondern weil dass daß ob wenn obwohl bevor nachdem während sowie"
        " für von zum zur vom beim mit dem"
        " ein eine einen einem einer eines den des mein meine dein deine unser unsere"
        " äh ähm öhm hm hmm komma plus minus mal"
    ),
}
"""Per language: words after which a speaker has not finished (the sentence needs what comes next)."""
QUESTION_WORDS: Final[Mapping[str, frozenset[str]]] = {
    "en": _words("what where when why how who whom whose which"),
    "de": _words("was wo wann warum wie wer wen wem welche welcher welches wieso weshalb wohin woher"),
}
VERB_HINTS: Final[Mapping[str, frozenset[str]]] = {
    "en": _words(
        "is are was were am be been do does did can could would should will shall may might must have has had"
        " get gets go goes want wants need needs mean means"
    ),
    "de": _words(
        "ist sind war waren bin bist hat habe haben hast kann kannst können wird werden soll sollte muss"
        " gibt geht gehen macht machen heißt kostet"
    ),
}
NUMBER_CUES: Final = _words("number phone code zip pin digits nummer telefonnummer postleitzahl")
NUMBER_WORDS: Final = _words(
    "zero oh one two three four five six seven eight nine ten null eins zwei drei vier fünf sechs sieben acht neun zehn"
)


def classify_completeness(text: str, language: str = "en") -> Verdict:
    """Judge whether `text` sounds like a finished turn: "complete", "unfinished" or "unclear".

    Unfinished: it trails off (ellipsis, comma, dash), its last word needs a continuation (a conjunction,
    preposition, article, filler such as "and", "but", "so", "to", "the", "um"), a number is being
    dictated (two or more number tokens at the end, or one after a cue like "number"/"code"), or its last
    sentence starts with a question word and has no verb and no question mark ("how many"). Complete:
    otherwise, when it ends with terminal punctuation. Unclear: nothing recognised, or no terminal mark.
    """
    stripped = text.strip().strip("\"'“”«»)]")
    words = [w.lower().replace("’", "'") for w in _WORD.findall(stripped)]
    if not words:
        return "unclear"
    if stripped.endswith(_HANGING):
        return "unfinished"
    lang = language if language in CONTINUATIONS else "en"
    if words[-1] in CONTINUATIONS[lang]:
        return "unfinished"
    if _dictating_number(words):
        return "unfinished"
    last_sentence = [w.lower() for w in _WORD.findall(_SENTENCE_SPLIT.split(stripped)[-1])]
    if (
        last_sentence
        and last_sentence[0] in QUESTION_WORDS.get(lang, frozenset())
        and not stripped.endswith(("?", "？"))
        and not any(w in VERB_HINTS[lang] or w.endswith(("'s", "'re", "'ll", "'ve", "'d")) for w in last_sentence)
    ):
        return "unfinished"
    return "complete" if stripped.endswith(_TERMINAL) else "unclear"


def _dictating_number(words: list[str]) -> bool:
    def numeric(word: str) -> bool:
        return bool(_NUMBER.match(word)) or word in NUMBER_WORDS

    trailing = 0
    while trailing < len(words) and numeric(words[-1 - trailing]):
        trailing += 1
    if trailing >= 2:
        return True
    return trailing == 1 and any(w in NUMBER_CUES for w in words[-5:-1])
