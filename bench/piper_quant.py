"""Piper's voice model quantized several ways: CPU per second of speech, and how far the sound moves from float.

Each variant is a model file built from the packaged float model (`liveavatar.speech.piper_int8`: static QDQ,
per-channel int8 weights, uint8 activations calibrated on the module's sentences; or onnxruntime's dynamic
quantization), loaded as the shipped float model is (`lean_session`: two onnxruntime threads that sleep when
idle, alignment output). For each:
- CPU: the replies of bench/tts.py, split as a reply is, through `PiperEngine.speak` + 48 kHz resampling;
  `time.process_time()` of the whole process per second of audio, min and median of `--runs` passes; first
  clause wall and CPU ms (median).
- Sound against the float model on EVAL_TEXTS (none of them calibrated on), with Piper's noise off
  (noise_scale = noise_w = 0: the outputs are deterministic and sample-aligned): log-mel distance (mean
  |dB| over 80 bands, frames within 60 dB of the loudest), SNR of the waveform, high band (> 7 kHz) energy
  and the noise floor in pauses relative to float (dB; + is more hiss), DC offset, clipped samples, and
  whether the phoneme durations (the lip-sync) are the same.
- Words: Whisper tiny.en (packaged, faster-whisper) transcribes EVAL_TEXTS as spoken with Piper's default
  noise (seeded alike for every variant): word error rate in %.
Prints one line per variant, writes bench/results/piper_quant.json; asserts nothing.

    .venv/bin/python bench/piper_quant.py [--runs 3] [--only float,dec-flow-conv,...] [--no-wer]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from common import BENCH_DIR, Reply, machine_info, write_json
from tts import SEED, _pieces, _speak_pass

EVAL_TEXTS = (
    "The library closes early on public holidays.",
    "Could you tell me where the nearest pharmacy is?",
    "I'm afraid the train to Boston has been cancelled.",
    "Fresh vegetables are delivered every Monday and Friday.",
    "Please remember to bring your passport and a pen.",
    "That sounds like a great idea, let's do it!",
    "The hotel offers free breakfast and a heated swimming pool.",
    "My grandmother grew roses, tulips and sunflowers in her garden.",
    "Turn left at the traffic lights, then walk straight for five minutes.",
    "What time does the concert start tonight?",
    "Our support team answers every message within one day.",
    "The scientist carefully measured the chemical reaction.",
    "Unfortunately, we cannot accept cash at this counter.",
    "Thunderstorms are expected across the valley this afternoon.",
    "He plays the violin beautifully, doesn't he?",
    "Your package will arrive on Wednesday between noon and three.",
    "A cup of hot chocolate is perfect on a snowy evening.",
    "Ask me anything about the exhibition, I'm happy to help.",
    "The bridge was built more than a hundred years ago.",
    "Thanks for waiting, your table is ready now.",
)
WHISPER_RATE = 16000
HIGH_BAND_HZ = 7000.0


def _recipes() -> dict[str, Any]:
    """name -> QuantRecipe (static QDQ) or ("dynamic", op types, node pattern)."""
    from liveavatar.speech.piper_int8 import FLOW_AND_EARLY_DECODER, QuantRecipe

    decoder = r"^/dec/(resblocks|ups)\.\d+/"
    dec_flow = r"^/(dec/(resblocks|ups)\.\d+|flow/flows\.\d+/enc)/"
    flow = r"^/flow/flows\.\d+/enc/"
    return {
        "dyn-matmul": ("dynamic", ("MatMul",), r"."),
        "dyn-dec-conv": ("dynamic", ("Conv",), decoder),
        "flow-conv": QuantRecipe("flow-conv", flow),
        "flow-dec-early": FLOW_AND_EARLY_DECODER,
        "dec-conv-minmax": QuantRecipe("dec-conv-minmax", decoder, percentile=None),
        "dec-conv": QuantRecipe("dec-conv", decoder),
        "dec-conv-convT": QuantRecipe(
            "dec-conv-convT", r"^/dec/(resblocks\.\d+/|ups\.\d+/)", ("Conv", "ConvTranspose")
        ),
        "dec-flow-conv-minmax": QuantRecipe("dec-flow-conv-minmax", dec_flow, percentile=None),
        "dec-flow-conv": QuantRecipe("dec-flow-conv", dec_flow),
        "dec-flow-conv-p99.9": QuantRecipe("dec-flow-conv-p99.9", dec_flow, percentile=99.9),
        "dec-flow-act": QuantRecipe("dec-flow-act", dec_flow + r"|^/dec/resblocks", ("Conv", "LeakyRelu", "Add")),
        "all-conv": QuantRecipe("all-conv", r"^/(?!dec/conv_p)", ("Conv",)),
        "full": QuantRecipe(
            "full", r".", ("Conv", "ConvTranspose", "MatMul", "LeakyRelu", "Add", "Mul"), percentile=None
        ),
    }


def build_variants(names: list[str], out_dir: Path) -> dict[str, tuple[Path, float]]:
    """name -> (model path, build seconds); float is the packaged model itself; NAME+2d is NAME's file."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from liveavatar.speech.piper import packaged_joe_paths
    from liveavatar.speech.piper_int8 import build_int8_model

    model_path, config_path = packaged_joe_paths()
    recipes = _recipes()
    built: dict[str, tuple[Path, float]] = {}
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        base = name.removesuffix("+2d")
        if base in built:
            built[name] = built[base]
            continue
        if base == "float":
            built[name] = (model_path, 0.0)
            continue
        recipe = recipes[base]
        target = out_dir / f"{base}.onnx"
        started = time.perf_counter()
        if isinstance(recipe, tuple):
            _, op_types, pattern = recipe
            model = onnx.load(str(model_path))
            nodes = [n.name for n in model.graph.node if n.op_type in op_types and re.search(pattern, n.name)]
            quantize_dynamic(
                model, target, op_types_to_quantize=list(op_types), per_channel=True,
                weight_type=QuantType.QInt8, nodes_to_quantize=nodes,
            )  # fmt: skip
        else:
            build_int8_model(model_path, config_path, target, recipe)
        built[name] = (target, time.perf_counter() - started)
        print(f"built {base} in {built[name][1]:.1f} s ({target.stat().st_size >> 20} MB)", flush=True)
    return built


def _voice(model_path: Path, as_2d: bool) -> Any:
    """A PiperVoice on `model_path`, in the session the project ships (seeded for comparable noise)."""
    import json

    import onnxruntime
    from piper import PiperVoice
    from piper.config import PiperConfig

    from liveavatar.speech.piper import lean_session, packaged_joe_paths

    _, config_path = packaged_joe_paths()
    onnxruntime.set_seed(SEED)
    config = PiperConfig.from_dict(json.loads(config_path.read_text(encoding="utf-8")))
    return PiperVoice(config=config, session=lean_session(model_path, as_2d=as_2d))


def measure_cpu(model_path: Path, as_2d: bool, runs: int) -> Reply:
    """CPU per audio second (min, median over `runs`) and first-clause wall/CPU ms (median)."""
    from liveavatar.speech.piper import PiperEngine
    from liveavatar.speech.voices import PIPER_JOE

    engine = PiperEngine(_voice(model_path, as_2d))
    pieces = _pieces()
    _speak_pass(engine, pieces, PIPER_JOE)  # warm-up
    per_audio: list[float] = []
    walls: list[float] = []
    cpus: list[float] = []
    for _ in range(runs):
        cpu, audio_s, first_walls, first_cpus, _ = _speak_pass(engine, pieces, PIPER_JOE)
        per_audio.append(cpu / audio_s)
        walls.extend(first_walls)
        cpus.extend(first_cpus)
    return {
        "cpu_per_audio_s_min": min(per_audio),
        "cpu_per_audio_s_median": statistics.median(per_audio),
        "first_clause_wall_ms_median": statistics.median(walls),
        "first_clause_cpu_ms_median": statistics.median(cpus),
    }


def raw_outputs(
    model_path: Path, as_2d: bool, noise_scale: float = 0.0
) -> list[tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]]:
    """(float audio, samples per phoneme id) of each EVAL_TEXTS sentence, unnormalised; durations noise off."""
    from piper.config import SynthesisConfig

    voice = _voice(model_path, as_2d)
    quiet = SynthesisConfig(noise_scale=noise_scale, noise_w_scale=0.0)
    out = []
    for text in EVAL_TEXTS:
        for phonemes in voice.phonemize(text):
            audio, samples = voice.phoneme_ids_to_audio(voice.phonemes_to_ids(phonemes), quiet, include_alignments=True)
            out.append((np.asarray(audio, dtype=np.float32), np.asarray(samples)))
    return out


def spoken(model_path: Path, as_2d: bool) -> list[npt.NDArray[np.int16]]:
    """EVAL_TEXTS as the engine speaks them (default noise, seeded), at 16 kHz for Whisper."""
    from liveavatar.speech.piper import PiperEngine
    from liveavatar.speech.resample import resample
    from liveavatar.speech.voices import PIPER_JOE

    engine = PiperEngine(_voice(model_path, as_2d))
    out = []
    for text in EVAL_TEXTS:
        chunk = engine.speak(text, PIPER_JOE, 1.0)
        assert chunk is not None
        out.append(resample(chunk.audio, chunk.sample_rate, WHISPER_RATE))
    return out


def _mel_filters(rate: int, n_fft: int, bands: int = 80, top: float = 8000.0) -> npt.NDArray[np.float64]:
    def mel(hz: Any) -> Any:
        return 2595.0 * np.log10(1.0 + np.asarray(hz) / 700.0)

    points = 700.0 * (10 ** (np.linspace(mel(0.0), mel(top), bands + 2) / 2595.0) - 1.0)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / rate)
    filters = np.zeros((bands, len(freqs)))
    for band in range(bands):
        low, centre, high = points[band : band + 3]
        rising = (freqs - low) / (centre - low)
        falling = (high - freqs) / (high - centre)
        filters[band] = np.clip(np.minimum(rising, falling), 0.0, None)
    return filters


def _power(audio: npt.NDArray[np.float32], n_fft: int = 1024, hop: int = 256) -> npt.NDArray[np.float64]:
    padded = np.pad(audio.astype(np.float64), (n_fft // 2, n_fft // 2))
    frames = 1 + (len(padded) - n_fft) // hop
    index = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    spectrum: npt.NDArray[np.float64] = np.abs(np.fft.rfft(padded[index] * np.hanning(n_fft), axis=1)) ** 2
    return spectrum


def compare(
    reference: list[tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]],
    variant: list[tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]],
    rate: int,
) -> Reply:
    """Distances of `variant`'s sentences from `reference`'s (noise off, same phonemes)."""
    filters = _mel_filters(rate, 1024)
    freqs = np.fft.rfftfreq(1024, 1.0 / rate)
    high = freqs > HIGH_BAND_HZ
    mel_db: list[float] = []
    snr: list[float] = []
    high_db: list[float] = []
    floor_db: list[float] = []
    floor_abs: list[float] = []
    floor_ref: list[float] = []
    same_durations = True
    dc = 0.0
    clipped = 0
    for (ref, ref_samples), (got, got_samples) in zip(reference, variant, strict=True):
        same_durations &= bool(np.array_equal(ref_samples, got_samples))
        dc = max(dc, abs(float(got.mean())))
        clipped += int((np.abs(got) >= 1.0).sum())
        if len(ref) != len(got):
            continue
        p_ref, p_got = _power(ref), _power(got)
        m_ref = 10 * np.log10(p_ref @ filters.T + 1e-10)
        m_got = 10 * np.log10(p_got @ filters.T + 1e-10)
        loud = m_ref.max(axis=1) > m_ref.max() - 60.0
        floor = m_ref.max() - 80.0  # below this nobody hears a difference
        mel_db.append(float(np.abs(np.maximum(m_ref, floor) - np.maximum(m_got, floor))[loud].mean()))
        snr.append(float(10 * np.log10((ref.astype(np.float64) ** 2).sum() / (((ref - got) ** 2).sum() + 1e-20))))
        high_db.append(float(10 * np.log10(p_got[:, high].sum() / p_ref[:, high].sum())))
        frame_energy = p_ref.sum(axis=1)
        pauses = frame_energy < frame_energy.max() * 10 ** (-50 / 10)
        if pauses.any():
            floor_db.append(float(10 * np.log10(p_got[pauses].sum() / (p_ref[pauses].sum() + 1e-20))))
            peak = frame_energy.max()
            floor_abs.append(float(10 * np.log10(p_got[pauses].mean() / peak)))
            floor_ref.append(float(10 * np.log10(p_ref[pauses].mean() / peak)))
    return {
        "log_mel_distance_db": statistics.mean(mel_db) if mel_db else None,
        "log_mel_distance_db_worst": max(mel_db) if mel_db else None,
        "snr_db": statistics.median(snr) if snr else None,
        "high_band_vs_float_db": statistics.mean(high_db) if high_db else None,
        "pause_floor_vs_float_db": statistics.mean(floor_db) if floor_db else None,
        "pause_floor_db": statistics.mean(floor_abs) if floor_abs else None,
        "pause_floor_float_db": statistics.mean(floor_ref) if floor_ref else None,
        "dc_max": dc,
        "clipped_samples": clipped,
        "same_durations": same_durations,
    }


def word_error_rate(transcribe: Callable[[npt.NDArray[np.int16]], str], audios: list[npt.NDArray[np.int16]]) -> float:
    """Word error rate (%) of Whisper's transcripts of `audios` against EVAL_TEXTS."""
    errors = words = 0
    for text, audio in zip(EVAL_TEXTS, audios, strict=True):
        want, got = _words(text), _words(transcribe(audio))
        errors += _edit_distance(want, got)
        words += len(want)
    return 100.0 * errors / words


def _words(text: str) -> list[str]:
    return re.sub(r"[^a-z' ]+", " ", text.lower().replace("-", " ")).split()


def _edit_distance(a: list[str], b: list[str]) -> int:
    row = list(range(len(b) + 1))
    for i, word in enumerate(a, 1):
        previous, row[0] = row[0], i
        for j, other in enumerate(b, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (word != other))
    return row[-1]


def whisper() -> Callable[[npt.NDArray[np.int16]], str]:
    """Whisper tiny.en from the packaged model: int16 16 kHz audio -> text."""
    from faster_whisper import WhisperModel

    from liveavatar.speech.stt import english_model_path

    model = WhisperModel(
        str(english_model_path()), device="cpu", compute_type="int8", cpu_threads=2, local_files_only=True
    )

    def transcribe(audio: npt.NDArray[np.int16]) -> str:
        segments, _ = model.transcribe(audio.astype(np.float32) / 32768.0, language="en", beam_size=5)
        return " ".join(segment.text for segment in segments)

    return transcribe


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--only", default="", help="comma-separated variants (float is always measured); NAME+2d: with 2-D convs"
    )
    parser.add_argument("--no-wer", action="store_true", help="skip the Whisper word error rate")
    parser.add_argument("--models", type=Path, default=BENCH_DIR / "results" / "piper_quant")
    parser.add_argument("--output", type=Path, default=BENCH_DIR / "results" / "piper_quant.json")
    args = parser.parse_args(argv)
    names = ["float", *(args.only.split(",") if args.only else [*_recipes(), "float+2d", "flow-dec-early+2d"])]
    names = list(dict.fromkeys(names))
    print(f"cores {os.cpu_count()}, load {os.getloadavg()[0]:.2f}; {args.runs} runs per variant", flush=True)
    built = build_variants(names, args.models)
    transcribe = None if args.no_wer else whisper()
    from liveavatar.speech.piper import packaged_joe_paths

    rate = 22050
    reference = raw_outputs(packaged_joe_paths()[0], as_2d=False)
    # The yardstick: how far Piper's own latent noise (default noise_scale, durations fixed) moves the float model.
    natural = compare(reference, raw_outputs(packaged_joe_paths()[0], as_2d=False, noise_scale=0.667), rate)
    print("float with its noise vs without: " + ", ".join(f"{k} {v:.2f}" for k, v in natural.items() if v is not None))
    results: list[Reply] = []
    for name, (path, build_s) in built.items():
        result: Reply = {"variant": name, "build_s": build_s, "size_mb": path.stat().st_size / 2**20}
        as_2d = name.endswith("+2d")
        result |= measure_cpu(path, as_2d, args.runs)
        result |= compare(reference, raw_outputs(path, as_2d), rate)
        result["wer_percent"] = None if transcribe is None else word_error_rate(transcribe, spoken(path, as_2d))
        results.append(result)
        print(_line(result), flush=True)
    print(f"load after {os.getloadavg()[0]:.2f}")
    write_json(args.output, {"machine": machine_info(), "float_noise_vs_quiet": natural, "variants": results})
    return 0


def _line(r: Reply) -> str:
    def num(key: str, spec: str) -> str:
        value = r[key]
        return "-" if value is None else format(value, spec)

    return (
        f"{r['variant']:18s} CPU/audio s min {r['cpu_per_audio_s_min']:.4f} median {r['cpu_per_audio_s_median']:.4f}"
        f" | first clause {r['first_clause_wall_ms_median']:.0f} ms wall {r['first_clause_cpu_ms_median']:.0f} ms CPU"
        f" | log-mel {num('log_mel_distance_db', '.2f')} dB (worst {num('log_mel_distance_db_worst', '.2f')})"
        f" SNR {num('snr_db', '.1f')} dB | >7k {num('high_band_vs_float_db', '+.2f')} dB"
        f" pauses {num('pause_floor_vs_float_db', '+.2f')} dB (at {num('pause_floor_db', '.0f')} dB of the peak frame)"
        f" | DC {r['dc_max']:.4f} clipped {r['clipped_samples']}"
        f" | durations same {r['same_durations']} | WER {num('wer_percent', '.1f')}%"
        f" | {r['size_mb']:.0f} MB built in {r['build_s']:.0f} s"
    )


if __name__ == "__main__":
    sys.exit(main())
