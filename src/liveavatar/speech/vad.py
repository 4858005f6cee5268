"""Voice activity detection: Silero VAD v6 (ONNX, shipped with faster-whisper) run with onnxruntime."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt

from liveavatar.errors import ProcessingError
from liveavatar.loading import load_once

SAMPLE_RATE: Final = 16000
FRAME_SAMPLES: Final = 512
"""Silero's frame at 16 kHz: 32 ms (the model takes no other size)."""
FRAME_SECONDS: Final = FRAME_SAMPLES / SAMPLE_RATE
CONTEXT_SAMPLES: Final = 64
"""The tail of the previous frame that Silero v5/v6 read before each frame."""
STATE_SHAPE: Final = (1, 1, 128)


class VadStream(Protocol):
    """Speech detection state of one audio stream (one per session; not shared between threads)."""

    def process(self, frame: npt.NDArray[np.float32]) -> float:
        """Speech probability (0..1) of the next FRAME_SAMPLES samples of 16 kHz mono float audio."""
        ...

    def reset(self) -> None:
        """Forget the stream's history (a new, unrelated stream follows)."""
        ...


class VAD(Protocol):
    """A voice activity detector: one per process, its model shared; one stream per session."""

    def stream(self) -> VadStream:
        """A fresh per-stream state on the shared model."""
        ...

    def load(self) -> None:
        """Load the model now (blocking), so the first stream does not wait for it."""
        ...


def silero_model_path() -> Path:
    """Path of the Silero VAD v6 ONNX file inside the installed faster-whisper package."""
    try:
        import faster_whisper
    except ImportError as exc:
        raise ProcessingError("faster-whisper (which ships the Silero VAD model) is not installed") from exc
    return Path(faster_whisper.__file__).parent / "assets" / "silero_vad_v6.onnx"


@load_once
def load_silero_session(path: Path) -> Any:
    """The process-wide onnxruntime session for a Silero model file (loaded on first use, ~30 ms)."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise ProcessingError("onnxruntime is not installed") from exc
    options = onnxruntime.SessionOptions()
    # One thread per call: frames are tiny (32 ms) and many sessions share few cores.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return onnxruntime.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors (missing file, bad graph)
        raise ProcessingError(f"cannot load the Silero VAD model {path}: {exc}") from exc


class SileroVAD:
    """Silero VAD v6: the ONNX model loaded once per process, shared by every stream (runs are thread-safe)."""

    def __init__(self, model_path: Path | None = None) -> None:
        self._path = model_path
        self._session: Any = None

    def load(self) -> None:
        """Load the model now if it is not yet (blocking, tens of ms)."""
        if self._session is None:
            self._session = load_silero_session(self._path or silero_model_path())

    def stream(self) -> SileroStream:
        """A fresh per-stream state (recurrent state and context) on the shared model."""
        self.load()
        return SileroStream(self._session)


class SileroStream:
    """One stream's Silero state: LSTM h/c and the previous frame's last 64 samples."""

    def __init__(self, session: Any) -> None:
        self._session = session
        self._h = np.zeros(STATE_SHAPE, dtype=np.float32)
        self._c = np.zeros(STATE_SHAPE, dtype=np.float32)
        self._input = np.zeros((1, CONTEXT_SAMPLES + FRAME_SAMPLES), dtype=np.float32)

    def process(self, frame: npt.NDArray[np.float32]) -> float:
        """Speech probability (0..1) of the next 512 samples (32 ms) of 16 kHz mono float audio."""
        if frame.shape != (FRAME_SAMPLES,):
            raise ValueError(f"Silero VAD takes frames of {FRAME_SAMPLES} samples, got shape {frame.shape}")
        window = self._input
        window[0, CONTEXT_SAMPLES:] = frame
        try:
            probability, self._h, self._c = self._session.run(None, {"input": window, "h": self._h, "c": self._c})
        except Exception as exc:  # onnxruntime errors have no common base class
            raise ProcessingError(f"Silero VAD failed: {exc}") from exc
        window[0, :CONTEXT_SAMPLES] = window[0, -CONTEXT_SAMPLES:]
        return float(np.asarray(probability).reshape(-1)[0])

    def reset(self) -> None:
        """Forget the stream's history."""
        self._h = np.zeros(STATE_SHAPE, dtype=np.float32)
        self._c = np.zeros(STATE_SHAPE, dtype=np.float32)
        self._input[:] = 0.0
