"""IPA phonemes -> visemes, and each viseme's mouth shape as weights over MOUTH_BASES.

The viseme set is the classic 15 (Oculus/MPEG-4 style). The phoneme table covers the IPA that espeak-ng
(and so Piper) prints for all its languages; anything else is resolved by stripping diacritics, by the
first symbol, by the Unicode name of the base letter (same place of articulation) and finally by a neutral
mid-open shape. `docs/lipsync.md` holds the generated table (`markdown_table()`).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

import numpy as np
import numpy.typing as npt

from liveavatar.render.face import MOUTH_BASES

__all__ = [
    "FALLBACK_VISEME",
    "PHONEME_VISEMES",
    "SILENCE",
    "VISEMES",
    "VISEME_NAMES",
    "EntryKind",
    "Viseme",
    "entry_kind",
    "markdown_table",
    "split_phonemes",
    "table_viseme",
    "viseme_for",
    "viseme_weights",
    "visemes_for",
]


@dataclass(frozen=True)
class Viseme:
    """One mouth shape: target weights over MOUTH_BASES and how strongly it resists its neighbours."""

    name: str
    weights: tuple[float, ...]
    """Target weight per MOUTH_BASES entry (same order), each 0..1."""
    dominance: float
    """Relative pull in coarticulation: lips-made sounds high, tongue-made sounds low."""
    example: str


def _shape(
    jaw_open: float = 0.0,
    lips_wide: float = 0.0,
    lips_round: float = 0.0,
    lips_closed: float = 0.0,
    lower_lip_tuck: float = 0.0,
) -> tuple[float, ...]:
    named = {
        "jaw_open": jaw_open,
        "lips_wide": lips_wide,
        "lips_round": lips_round,
        "lips_closed": lips_closed,
        "lower_lip_tuck": lower_lip_tuck,
    }
    return tuple(named[base] for base in MOUTH_BASES)


_VISEME_LIST: tuple[Viseme, ...] = (
    Viseme("sil", _shape(), 1.0, "silence, pauses"),
    Viseme("PP", _shape(lips_closed=1.0), 1.6, "p, b, m (lips pressed shut)"),
    Viseme("FF", _shape(jaw_open=0.1, lower_lip_tuck=1.0), 1.3, "f, v (lower lip under upper teeth)"),
    Viseme("TH", _shape(jaw_open=0.2, lips_wide=0.15), 0.8, "th in thin, this"),
    Viseme("DD", _shape(jaw_open=0.25, lips_wide=0.15), 0.6, "t, d, flaps"),
    Viseme("kk", _shape(jaw_open=0.3, lips_wide=0.1), 0.5, "k, g, x, h, glottal and pharyngeal"),
    Viseme("CH", _shape(jaw_open=0.15, lips_round=0.55), 1.0, "sh, ch, j in judge (lips pushed out)"),
    Viseme("SS", _shape(jaw_open=0.08, lips_wide=0.45), 0.8, "s, z, ts (teeth together, lips spread)"),
    Viseme("nn", _shape(jaw_open=0.18, lips_wide=0.1), 0.6, "n, ng, l"),
    Viseme("RR", _shape(jaw_open=0.2, lips_round=0.4), 0.8, "r, er"),
    Viseme("aa", _shape(jaw_open=0.7, lips_wide=0.2), 1.0, "a in father, cup"),
    Viseme("E", _shape(jaw_open=0.45, lips_wide=0.35), 1.0, "e in bed, schwa (neutral mid-open)"),
    Viseme("ih", _shape(jaw_open=0.22, lips_wide=0.6), 1.0, "i in see, sit; y in yes"),
    Viseme("oh", _shape(jaw_open=0.45, lips_round=0.6), 1.1, "o in go, law; French eu"),
    Viseme("ou", _shape(jaw_open=0.2, lips_round=0.9), 1.2, "u in food, w; French u, German ü"),
)

VISEMES: Mapping[str, Viseme] = MappingProxyType({v.name: v for v in _VISEME_LIST})
"""The viseme set, in a fixed order."""
VISEME_NAMES: tuple[str, ...] = tuple(VISEMES)
SILENCE = "sil"
"""The rest shape: every weight 0 (the renderer's closed, relaxed mouth)."""
FALLBACK_VISEME = "E"
"""Neutral mid-open shape for symbols nothing else resolves."""


def _group(viseme: str, symbols: str) -> dict[str, str]:
    return dict.fromkeys(symbols.split(), viseme)


# Base symbols only: stress, length, tone, tie bars and diacritics are stripped before lookup.
# Grouped by viseme; within a group roughly by place, then manner.
PHONEME_VISEMES: Mapping[str, str] = MappingProxyType(
    {
        # Open vowels: a, ɑ, æ, ɐ, ʌ (jaw well open, lips neutral).
        **_group("aa", "a ɑ æ ɐ ʌ ᴀ"),
        # Mid unrounded vowels and schwas.
        **_group("E", "e ɛ ε ə ɘ ɜ ɤ"),
        # Close unrounded vowels (lips spread) and the palatal approximants.
        **_group("ih", "i ɪ ɨ ᵻ ɯ ɩ ɿ ʅ j ʝ ɰ"),
        # Mid and open rounded vowels.
        **_group("oh", "o ɔ ɒ ø œ ɵ ɞ ɶ ɷ"),
        # Close rounded vowels and labial-velar/labial-palatal approximants.
        **_group("ou", "u ʊ y ʏ ʉ ᵿ ʮ ʯ w ʍ ɥ"),
        # Rhotics made with the tongue tip or body (slight lip rounding in most languages).
        **_group("RR", "r ɹ ɻ ɚ ɝ ɼ"),
        # Bilabial stops, nasals, trills, implosives, fricatives/approximants and the bilabial click.
        **_group("PP", "p b m ɓ ʙ β ɸ φ ʘ kp ɡb gb ŋm"),
        # Labiodentals.
        **_group("FF", "f v ɱ ʋ ⱱ"),
        # Dentals and the dental click.
        **_group("TH", "θ ð ǀ tθ dð"),
        # Alveolar/retroflex stops and flaps, lateral fricatives, the other clicks.
        **_group("DD", "t d ʈ ɖ ɗ ᶑ ɾ ɽ ɺ ɬ ɮ tɬ dɮ ǃ ǂ ǁ"),
        # Nasals other than m, and laterals.
        **_group("nn", "n ɲ ŋ ɳ ɴ l ɫ ɭ ʎ ʟ"),
        # Alveolar sibilants and their affricates; alveolo-palatals and ç are also made with spread lips.
        **_group("SS", "s z ts dz ʦ ʣ ɕ ʑ tɕ dʑ ʨ ʥ ç cç ɟʝ"),
        # Post-alveolar and retroflex sibilants and affricates (lips pushed forward), Swedish sj.
        **_group("CH", "ʃ ʒ tʃ dʒ ʧ ʤ ʂ ʐ tʂ dʐ ʈʂ ɖʐ ɧ"),
        # Palatal, velar, uvular, pharyngeal and glottal consonants: the mouth follows the vowels.
        **_group("kk", "c ɟ ʄ k g ɡ ɠ kx x ɣ q ɢ ʛ qχ χ ʁ ʀ ħ ʕ ʜ ʢ ʡ h ɦ ʔ"),
    }
)
"""Explicit phoneme -> viseme table over base IPA symbols (and homorganic affricates)."""

_STRESS = frozenset("ˈˌ'")
_TIES = frozenset("\u0361\u035c\u203f")  # ͡ ͜ ‿
_PAUSE = frozenset("_,.!?;:…—–|‖^$¡¿«»“”()[]{}\n")
_SILENT = frozenset('-"#↓↑↗↘*%=+~/\\')
_LANG_SWITCH = re.compile(r"\([a-zA-Z][a-zA-Z0-9-]*\)")
# Homorganic stop + fricative pairs espeak-ng writes without a tie bar; other pairs need one (k͡p).
_AFFRICATES = frozenset(_group("", "tʃ dʒ ts dz tɕ dʑ tʂ dʐ ʈʂ ɖʐ tθ dð tɬ dɮ cç ɟʝ kx qχ"))

EntryKind = Literal["phone", "pause", "boundary", "stress", "mark"]
"""What a timed entry is: a sound, a pause, a word boundary, a stress mark or another bare mark."""


def _is_letter(ch: str) -> bool:
    """A sound symbol: IPA letters, and any other symbol that is no mark, space or pause (SAMPA's @)."""
    if ch in _STRESS or ch in _TIES or ch in _PAUSE or ch in _SILENT or ch.isspace():
        return False
    cat = unicodedata.category(ch)
    return cat in ("Ll", "Lu", "Lo", "Lt") or (cat[0] in "PS" and cat != "Sk")


def _is_modifier(ch: str) -> bool:
    """Marks that attach to the preceding symbol: length, diacritics, tones, secondary articulations."""
    if ch in _STRESS or ch in _TIES:
        return False
    cat = unicodedata.category(ch)
    return cat in ("Mn", "Me", "Lm", "Sk", "Nd", "No")


def split_phonemes(ipa: str) -> list[str]:
    """Split an IPA string (espeak-ng `--ipa`, Piper) into phonemes: base symbol(s) plus their marks."""
    text = _LANG_SWITCH.sub(" ", unicodedata.normalize("NFC", ipa))
    units: list[str] = []
    current = ""
    stress = ""
    join_next = False
    for ch in text:
        if _is_letter(ch):
            if current and (join_next or (current[-1] + ch in _AFFRICATES and _is_letter(current[-1]))):
                current += ch
            else:
                if current:
                    units.append(current)
                current = stress + ch
                stress = ""
            join_next = False
        elif ch in _STRESS:
            stress += ch
        elif ch in _TIES:
            join_next = bool(current)
            if current:
                current += ch
        elif _is_modifier(ch):
            if current:
                current += ch
        else:
            # Spaces, pauses, syllable breaks and other symbols end the current phoneme.
            if current:
                units.append(current)
            current = ""
            join_next = False
    if current:
        units.append(current)
    return units


def _base(unit: str) -> str:
    """The unit with stress, length, tone, ties and all other non-letter marks removed (NFC kept)."""
    return "".join(ch for ch in unicodedata.normalize("NFC", unit) if _is_letter(ch))


def _strip_accents(text: str) -> str:
    decomposed = unicodedata.normalize("NFD", text)
    return unicodedata.normalize("NFC", "".join(ch for ch in decomposed if _is_letter(ch)))


def _table(unit: str) -> str | None:
    """Explicit-table viseme for one phoneme unit, or None."""
    for candidate in (_base(unit), _strip_accents(unit)):
        if not candidate:
            continue
        lowered = candidate.lower()
        for key in (candidate, lowered):
            hit = PHONEME_VISEMES.get(key)
            if hit is not None:
                return hit
    return None


def _by_name(ch: str) -> str | None:
    """Resolve an unlisted letter through the letter it is a variant of (same place of articulation)."""
    name = unicodedata.name(ch.lower(), "")
    if not name:
        return None
    candidates = [
        re.sub(r" WITH .*", "", name),
        name.replace("LETTER SMALL CAPITAL", "SMALL LETTER").replace("SMALL CAPITAL LETTER", "SMALL LETTER"),
    ]
    candidates.append(re.sub(r" WITH .*", "", candidates[1]))
    candidates.append(re.sub(r"\b(TURNED|REVERSED|INVERTED|CLOSED|BARRED|SIDEWAYS) ", "", candidates[2]))
    for candidate in candidates:
        if candidate == name:
            continue
        try:
            base = unicodedata.lookup(candidate)
        except KeyError:
            continue
        hit = PHONEME_VISEMES.get(base)
        if hit is not None:
            return hit
    return None


def _unit_viseme(unit: str) -> str:
    hit = _table(unit)
    if hit is not None:
        return hit
    letters = _strip_accents(unit)
    for ch in letters:  # the first symbol the table or its Unicode name resolves
        hit = PHONEME_VISEMES.get(ch) or PHONEME_VISEMES.get(ch.lower()) or _by_name(ch)
        if hit is not None:
            return hit
    return FALLBACK_VISEME


def visemes_for(phoneme: str) -> tuple[str, ...]:
    """Visemes of one phoneme string in order: two or three for diphthongs, () for bare marks/pauses."""
    try:
        out: list[str] = []
        for unit in split_phonemes(phoneme):
            viseme = _unit_viseme(unit)
            if not out or out[-1] != viseme:
                out.append(viseme)
        return tuple(out)
    except Exception:  # noqa: BLE001 - a lookup must never break the render loop
        return (FALLBACK_VISEME,)


def viseme_for(phoneme: str) -> str:
    """The main viseme of a phoneme; `sil` for pauses and bare marks; never raises."""
    found = visemes_for(phoneme)
    return found[0] if found else SILENCE


def table_viseme(phoneme: str) -> str | None:
    """The explicit table's viseme for a single phoneme (marks stripped), or None if it is not listed."""
    units = split_phonemes(phoneme)
    if not units:
        return None
    return _table(units[0])


def entry_kind(phoneme: str) -> EntryKind:
    """Classify one timed entry of a TTS phoneme stream (Piper emits marks and punctuation as entries)."""
    text = _LANG_SWITCH.sub("", unicodedata.normalize("NFC", phoneme))
    if any(_is_letter(ch) for ch in text):
        return "phone"
    if text and text.isspace():
        return "boundary"
    if any(ch in _PAUSE for ch in text):
        return "pause"
    if any(ch in _STRESS for ch in text):
        return "stress"
    return "mark"


def viseme_weights(name: str) -> npt.NDArray[np.float32]:
    """Target weights over MOUTH_BASES of a viseme (unknown names give the fallback shape)."""
    viseme = VISEMES.get(name, VISEMES[FALLBACK_VISEME])
    return np.asarray(viseme.weights, dtype=np.float32)


def markdown_table() -> str:
    """The viseme set and the phoneme table as Markdown (pasted into docs/lipsync.md)."""
    header = "| viseme | " + " | ".join(MOUTH_BASES) + " | dominance | IPA | example |"
    rule = "|" + "---|" * (len(MOUTH_BASES) + 4)
    lines = [header, rule]
    for viseme in _VISEME_LIST:
        symbols = " ".join(k for k, v in PHONEME_VISEMES.items() if v == viseme.name) or "(pauses)"
        weights = " | ".join(f"{w:.2f}" for w in viseme.weights)
        lines.append(f"| {viseme.name} | {weights} | {viseme.dominance:.1f} | {symbols} | {viseme.example} |")
    return "\n".join(lines) + "\n"
