"""espeak-ng text-to-speech through libespeak-ng (ctypes): every language, with IPA phoneme timings."""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from liveavatar.errors import ParamError, ProcessingError
from liveavatar.speech.base import SILENCE, Abandon, SpeechChunk, Voice, merge_silences, timings_from_segments

ENGINE: Final = "espeak"
LIBRARY: Final = "libespeak-ng.so.1"
NORMAL_RATE: Final = 175
"""Words per minute at speed 1.0 (espeak-ng's own default)."""

# speak_lib.h
_AUDIO_OUTPUT_SYNCHRONOUS: Final = 2
_INITIALIZE_PHONEME_EVENTS: Final = 0x0001
_INITIALIZE_PHONEME_IPA: Final = 0x0002
_INITIALIZE_DONT_EXIT: Final = 0x8000
_CHARS_UTF8: Final = 1
_PHONEMES: Final = 0x100  # "[[...]]" in the text is espeak phoneme input (pron_map may use it)
_ENDPAUSE: Final = 0x1000
_POS_CHARACTER: Final = 1
_PARAM_RATE: Final = 1
_EVENT_LIST_TERMINATED: Final = 0
_EVENT_PHONEME: Final = 7
_EE_OK: Final = 0
_STRESS_MARKS: Final = frozenset("ˈˌ")


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


class _VoiceInfo(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),  # (priority byte, language string) pairs, ended by a 0 byte
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


@dataclass(frozen=True)
class EspeakVoiceInfo:
    """One voice file of espeak-ng as espeak_ListVoices gives it."""

    name: str
    identifier: str
    """File name under espeak-ng-data/voices, e.g. `gmw/de`; espeak_SetVoiceByName accepts it."""
    gender: int
    """0 unknown, 1 male, 2 female."""
    languages: tuple[tuple[int, str], ...]
    """(priority, language code) pairs; a lower priority number is a better match."""


Event = tuple[int, str]
"""A phoneme event: (audio position in ms from the start of the text, IPA phoneme; "" for a pause)."""


@dataclass
class _Collected:
    audio: list[bytes]
    events: list[Event]


class EspeakLibrary:
    """The process's one libespeak-ng (global state inside): initialised once, every call under one lock."""

    def __init__(self, path: str = LIBRARY) -> None:
        try:
            self._lib = ctypes.CDLL(path)
        except OSError as exc:
            raise ProcessingError(
                f"espeak-ng library {path} not found: install the Debian package libespeak-ng1"
            ) from exc
        lib = self._lib
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_VoiceInfo))
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.POINTER(ctypes.c_uint),
            ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        self._lock = threading.Lock()
        self._collected: _Collected | None = None
        options = _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_PHONEME_IPA | _INITIALIZE_DONT_EXIT
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None, options)
        if rate <= 0:
            raise ProcessingError(f"espeak-ng failed to initialise (error {rate}): is espeak-ng-data there?")
        self.sample_rate: int = rate
        # The callback object must live as long as the library uses it: keep it on self.
        self._callback = _SynthCallback(self._on_synth)
        lib.espeak_SetSynthCallback(self._callback)

    def list_voices(self) -> list[EspeakVoiceInfo]:
        """Every voice file espeak-ng has (variants and MBROLA voices left out)."""
        voices: list[EspeakVoiceInfo] = []
        with self._lock:
            table = self._lib.espeak_ListVoices(None)
            index = 0
            while table[index]:
                info = table[index].contents
                identifier = (info.identifier or b"").decode("utf-8", "replace")
                index += 1
                if not identifier or identifier.startswith("mb/"):
                    continue
                voices.append(
                    EspeakVoiceInfo(
                        name=(info.name or b"").decode("utf-8", "replace").strip(),
                        identifier=identifier,
                        gender=int(info.gender),
                        languages=_parse_languages(info.languages),
                    )
                )
        return voices

    def synthesize(self, text: str, voice_name: str, rate: int) -> tuple[npt.NDArray[np.int16], list[Event]]:
        """Speak `text` with a voice at `rate` words per minute: samples and (ms, IPA phoneme) events."""
        data = text.encode("utf-8") + b"\0"
        with self._lock:
            if self._lib.espeak_SetVoiceByName(voice_name.encode("utf-8")) != _EE_OK:
                raise ParamError(f"espeak-ng has no voice {voice_name!r}")
            self._lib.espeak_SetParameter(_PARAM_RATE, rate, 0)
            collected = _Collected([], [])
            self._collected = collected
            try:
                status = self._lib.espeak_Synth(
                    data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8 | _PHONEMES | _ENDPAUSE, None, None
                )
            finally:
                self._collected = None
        if status != _EE_OK:
            raise ProcessingError(f"espeak-ng could not synthesise {text[:40]!r} (error {status})")
        audio = np.frombuffer(b"".join(collected.audio), dtype=np.int16).copy()
        return audio, collected.events

    def _on_synth(self, wav: ctypes._Pointer[ctypes.c_short], count: int, events: ctypes._Pointer[_Event]) -> int:
        collected = self._collected
        if collected is None:
            return 0
        if count > 0:
            collected.audio.append(ctypes.string_at(wav, count * 2))
        index = 0
        while events[index].type != _EVENT_LIST_TERMINATED:
            event = events[index]
            if event.type == _EVENT_PHONEME:
                # id.string holds up to 8 bytes of IPA, not NUL-terminated when full.
                raw = bytes(event.id.string).split(b"\0", 1)[0]
                collected.events.append((int(event.audio_position), raw.decode("utf-8", "ignore")))
            index += 1
        return 0


def _parse_languages(address: int | None) -> tuple[tuple[int, str], ...]:
    languages: list[tuple[int, str]] = []
    if not address:
        return ()
    offset = 0
    while True:
        priority = ctypes.string_at(address + offset, 1)[0]
        if priority == 0:
            return tuple(languages)
        code = ctypes.string_at(address + offset + 1)
        languages.append((priority, code.decode("ascii", "replace")))
        offset += len(code) + 2


_library: EspeakLibrary | None = None
_library_lock = threading.Lock()


def espeak_library() -> EspeakLibrary:
    """The process's libespeak-ng, loaded on first use (ProcessingError if it is not installed)."""
    global _library
    with _library_lock:
        if _library is None:
            _library = EspeakLibrary()
        return _library


class EspeakEngine:
    """espeak-ng for all its voices: speaks a sentence with IPA timings from its phoneme events."""

    name = ENGINE

    def __init__(self, library: EspeakLibrary | None = None) -> None:
        self._library = library

    @property
    def library(self) -> EspeakLibrary:
        """The libespeak-ng in use."""
        if self._library is None:
            self._library = espeak_library()
        return self._library

    def load(self) -> None:
        """Load libespeak-ng now if it is not yet (blocking, a few ms)."""
        _ = self.library

    def speak(self, text: str, voice: Voice, speed: float, abandon: Abandon | None = None) -> SpeechChunk | None:
        """Speak one sentence (blocking; ~1 ms per second of speech, too quick to abandon); None if no audio."""
        library = self.library
        audio, events = library.synthesize(text, voice.engine_voice or voice.language, round(NORMAL_RATE * speed))
        if len(audio) == 0:
            return None
        rate = library.sample_rate
        segments = segments_from_events(events, len(audio), rate)
        return SpeechChunk(text, audio, rate, timings_from_segments(segments, rate))


def segments_from_events(events: Iterable[Event], total: int, sample_rate: int) -> list[tuple[str, int]]:
    """Turn (ms, IPA phoneme) events into contiguous (phoneme, samples) segments covering `total` samples.

    Each phoneme lasts until the next event; audio before the first is SILENCE, as are espeak's pauses
    (events with no IPA). A bare stress mark adds its time to the phoneme before it.
    """
    starts: list[tuple[int, str]] = []
    for position_ms, ipa in events:
        start = min(max(round(position_ms * sample_rate / 1000), 0), total)
        phoneme = "".join(c for c in ipa if c not in _STRESS_MARKS)
        if ipa and not phoneme:
            continue  # a stress mark alone: no sound of its own
        starts.append((start, phoneme or SILENCE))
    segments: list[tuple[str, int]] = []
    position = 0
    current = SILENCE
    for start, phoneme in starts:
        start = max(start, position)
        segments.append((current, start - position))
        position, current = start, phoneme
    segments.append((current, total - position))
    return merge_silences(segments)
