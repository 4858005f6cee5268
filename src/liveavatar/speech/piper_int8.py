"""An int8 copy of a Piper voice model, built once on this machine from the packaged float model and cached.

The packaged voice ships as float32 only and weights may not be downloaded, so the quantized model is made
here: static QDQ quantization (onnxruntime.quantization; per-channel int8 weights, uint8 activations whose
ranges are the 99.99th percentiles over CALIBRATION_TEXTS run through the float model with Piper's own
phonemizer). Quantized: the flow's WaveNet convolutions and the residual-block convolutions of the HiFi-GAN
decoder's first two upsampling stages. The last stage (at the audio rate) stays float: int8 activations there
lift the noise floor in pauses by 14-22 dB (a hiss); the text encoder and the duration predictor stay float,
so the phoneme durations (Piper's alignments, hence the lip-sync) are the float model's.
bench/piper_quant.py, with the 2-D convolutions of piper_graph.py: ~1.6x less CPU per second of speech than
the float model, log-mel distance 1.3 dB (Piper's own noise moves it 2.0 dB), the pause floor +3 dB (at -83 dB
of the loudest frame), Whisper's word error rate no worse.

The file is named after the source model's hash and the recipe (and the quantizer's version), written under a
temporary name and renamed (processes starting together wait on a lock, then read the one file), and built
in a child process (~20-30 s on the 2-core box): calibration holds a sentence's decoder activations (~1 GB at
its peak) and seeds onnxruntime's global RNG, neither of which the server should keep.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from liveavatar.config import user_cache_dir
from liveavatar.errors import ProcessingError

log = logging.getLogger(__name__)

CALIBRATION_TEXTS: Final = (
    "Sure, I can help with that.",
    "The museum opens at nine in the morning and closes at six in the evening.",
    "Would you like me to book a table for two?",
    "Wow! That is absolutely fantastic news.",
    "Please hold on for a moment while I look that up.",
    "Quickly, the zebras jumped over the fizzing, shallow brook.",
    "Our return policy lasts thirty days from the day you receive your order.",
    "Hmm, I am not entirely sure, but I think the answer is yes.",
    "The temperature will drop to minus five degrees tonight, so wear a warm jacket.",
    "Thank you very much for calling, and have a wonderful weekend!",
    "She sells seashells by the seashore, and the shells she sells are surely seashells.",
    "Is this the right way to the railway station?",
    "No, I'm sorry. That product is out of stock until the end of August.",
    "First, open the settings. Then choose privacy, and finally tap delete.",
    "The quick brown fox jumps over the lazy dog.",
    "Good evening, and welcome to the show.",
    "Our engineers measured a thousand and twenty four samples per block.",
    "Why did the chicken cross the road? To get to the other side.",
    "Artificial intelligence can summarise long documents in seconds.",
    "Yes.",
    "Okay, let's get started right away.",
    "Mountains, rivers and forests cover most of the northern region.",
    "Can you spell that for me, please? Was it B as in bravo?",
    "The meeting has been moved from Tuesday afternoon to Thursday morning.",
    "Breathe in slowly, hold it, and now breathe out.",
    "Children under twelve go in free, and students pay half price.",
    "I'd love to hear more about your project. What are you building?",
    "Watch out! The floor is wet near the entrance.",
    "He whispered softly, then shouted as loud as he could.",
    "Zero, one, two, three, four, five, six, seven, eight, nine.",
    "The European Union has twenty seven member states.",
    "Honestly, this is the best pizza I have ever had.",
)
"""Sentences whose activations set the int8 ranges: questions, exclamations, whispers and shouts, lists."""
CALIBRATION_SEED: Final = 1234
"""onnxruntime's RNG seed while calibrating (Piper's noise), so that a rebuild gives the same file."""
BUILD_TIMEOUT_S: Final = 900.0
PERCENTILE_SAMPLES: Final = 20_000
"""Values of one activation kept per calibration sentence for its percentiles."""


@dataclass(frozen=True)
class QuantRecipe:
    """Which nodes of a Piper (VITS) graph are quantized, and how; part of the cached file's name."""

    name: str
    nodes: str
    """Regular expression (re.search) over node names; only nodes of `op_types` that match are quantized."""
    op_types: tuple[str, ...] = ("Conv",)
    per_channel: bool = True
    percentile: float | None = 99.99
    """Activation ranges: this percentile at each end of the values over all calibration sentences; None: the
    plain min and max (onnxruntime's MinMax), whose rare spikes widen the int8 steps for every sample."""

    def key(self) -> str:
        """A short hash of the recipe and the quantizer's version: a new one means a new file."""
        import onnxruntime

        text = json.dumps({**asdict(self), "onnxruntime": onnxruntime.__version__}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:10]


FLOW_AND_EARLY_DECODER: Final = QuantRecipe(
    name="flow-dec-early", nodes=r"^/(flow/flows\.\d+/enc|dec/resblocks\.[0-5])/"
)
"""What ships: the flow's WaveNet convolutions and those of the decoder's first two upsampling stages."""


def default_int8_dir() -> Path:
    """Where int8 voice models are built: a per-user cache shared by every data dir (once per machine)."""
    return user_cache_dir("piper")


def file_hash(path: Path) -> str:
    """SHA-256 of a file (hex)."""
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while block := source.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def cached_int8_path(model_path: Path, cache_dir: Path, recipe: QuantRecipe = FLOW_AND_EARLY_DECODER) -> Path:
    """Where the int8 copy of `model_path` made with `recipe` lives in `cache_dir`."""
    source = file_hash(model_path)[:16]
    return cache_dir / f"{model_path.stem}.{source}.{recipe.name}-{recipe.key()}.int8.onnx"


def int8_model(
    model_path: Path, config_path: Path, cache_dir: Path, recipe: QuantRecipe = FLOW_AND_EARLY_DECODER
) -> Path:
    """The int8 copy of a Piper model, built into `cache_dir` the first time (blocking, ~20-30 s on 2 cores).

    ProcessingError when it cannot be built; the caller falls back to the float model.
    """
    target = cached_int8_path(model_path, cache_dir, recipe)
    if target.is_file():
        return target
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with _locked(target.with_name(target.name + ".lock")):
            if target.is_file():  # another process built it while this one waited
                return target
            _build_in_child(model_path, config_path, target, recipe)
    except OSError as exc:
        raise ProcessingError(f"cannot build the int8 Piper model in {cache_dir}: {exc}") from exc
    return target


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build_in_child(model_path: Path, config_path: Path, target: Path, recipe: QuantRecipe) -> None:
    log.info(
        "building the int8 Piper model %s from %s (once per machine, ~30 s; calibrating on %d sentences)",
        target.name,
        model_path.name,
        len(CALIBRATION_TEXTS),
    )
    started = time.monotonic()
    command = [
        sys.executable,
        "-m",
        __name__,
        str(model_path),
        str(config_path),
        str(target),
        json.dumps(asdict(recipe)),
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ProcessingError(f"building the int8 Piper model took over {BUILD_TIMEOUT_S:.0f} s") from exc
    if done.returncode != 0 or not target.is_file():
        tail = (done.stderr or "").strip().splitlines()[-3:]
        raise ProcessingError(f"building the int8 Piper model failed ({done.returncode}): {' | '.join(tail)}")
    log.info("built the int8 Piper model in %.0f s: %s", time.monotonic() - started, target)


def build_int8_model(model_path: Path, config_path: Path, target: Path, recipe: QuantRecipe) -> None:
    """Quantize `model_path` with `recipe` into `target` (in this process; written atomically)."""
    import numpy as np
    import onnx
    import onnxruntime
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from piper import PiperVoice

    voice = PiperVoice.load(model_path, config_path)
    inference = voice.config
    feeds: list[dict[str, Any]] = []
    for text in CALIBRATION_TEXTS:
        for phonemes in voice.phonemize(text):
            ids = voice.phonemes_to_ids(phonemes)
            scales = [inference.noise_scale, inference.length_scale, inference.noise_w_scale]
            feeds.append(
                {
                    "input": np.array([ids], dtype=np.int64),
                    "input_lengths": np.array([len(ids)], dtype=np.int64),
                    "scales": np.array(scales, dtype=np.float32),
                }
            )
    del voice

    class Feeds(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._left = iter(feeds)

        def get_next(self) -> dict[str, Any] | None:
            return next(self._left, None)

    model = onnx.load(str(model_path))
    pattern = re.compile(recipe.nodes)
    nodes = [node.name for node in model.graph.node if node.op_type in recipe.op_types and pattern.search(node.name)]
    if not nodes:
        raise ProcessingError(f"the recipe {recipe.name} matches no node of {model_path.name}")
    onnxruntime.set_seed(CALIBRATION_SEED)
    extra: dict[str, Any] = {"CalibMaxIntermediateOutputs": 8}
    if recipe.percentile is not None:
        extra["TensorQuantOverrides"] = _percentile_ranges(model, nodes, feeds, recipe.percentile)
        feeds = feeds[:1]  # every activation range is set: onnxruntime's own pass only has to run
    handle, partial = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
    os.close(handle)
    try:
        quantize_static(
            model,
            partial,
            Feeds(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(recipe.op_types),
            per_channel=recipe.per_channel,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_quantize=nodes,
            extra_options=extra,
        )
        os.chmod(partial, 0o644)  # mkstemp made it private; a model file is not a secret
        os.replace(partial, target)
    finally:
        Path(partial).unlink(missing_ok=True)


def _percentile_ranges(
    model: Any, nodes: list[str], feeds: list[dict[str, Any]], percentile: float
) -> dict[str, list[dict[str, Any]]]:
    """TensorQuantOverrides giving each input and output of `nodes` its range over the calibration feeds."""
    import numpy as np
    import onnx
    import onnxruntime

    wanted = set(nodes)
    initializers = {init.name for init in model.graph.initializer}
    tensors = sorted(
        {node.input[0] for node in model.graph.node if node.name in wanted and node.input[0] not in initializers}
        | {node.output[0] for node in model.graph.node if node.name in wanted}
    )
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {output.name for output in probe.graph.output}
    probe.graph.output.extend(onnx.ValueInfoProto(name=name) for name in tensors if name not in known)
    options = onnxruntime.SessionOptions()
    options.enable_cpu_mem_arena = False
    session = onnxruntime.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    random = np.random.default_rng(CALIBRATION_SEED)
    picked: dict[str, list[Any]] = {name: [] for name in tensors}
    for feed in feeds:
        for name, value in zip(tensors, session.run(tensors, feed), strict=True):
            flat = value.ravel()
            # A uniform sample of each sentence's values, so long sentences don't hold gigabytes.
            picked[name].append(flat[random.integers(0, flat.size, min(flat.size, PERCENTILE_SAMPLES))])
    overrides: dict[str, list[dict[str, Any]]] = {}
    for name, parts in picked.items():
        low, high = np.percentile(np.concatenate(parts), [100.0 - percentile, percentile])
        overrides[name] = [{"rmin": np.float32(min(low, 0.0)), "rmax": np.float32(max(high, 0.0))}]
    return overrides


def main(argv: list[str] | None = None) -> int:
    """Build the packaged voice's int8 copy into the user cache (scripts/setup.sh runs this).

    With MODEL CONFIG TARGET RECIPE_JSON: build that file (the child process `int8_model` starts).
    """
    parser = argparse.ArgumentParser(description="Build the int8 copy of the packaged Piper voice.")
    parser.add_argument("build", nargs="*", metavar="MODEL CONFIG TARGET RECIPE_JSON", help="(internal)")
    args = parser.parse_args(argv)
    if not args.build:
        from liveavatar.speech.piper import packaged_joe_paths

        logging.basicConfig(level=logging.INFO, format="%(message)s")
        print(int8_model(*packaged_joe_paths(), default_int8_dir()))
        return 0
    if len(args.build) != 4:
        parser.error("give MODEL CONFIG TARGET RECIPE_JSON, or nothing")
    model, config, target, recipe_json = args.build
    fields = json.loads(recipe_json)
    recipe = QuantRecipe(**{**fields, "op_types": tuple(fields["op_types"])})
    logging.basicConfig(level=logging.WARNING)
    build_int8_model(Path(model), Path(config), Path(target), recipe)
    return 0


if __name__ == "__main__":
    sys.exit(main())
