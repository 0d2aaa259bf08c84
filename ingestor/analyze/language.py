"""Language detection: langdetect made deterministic (or py3langid), weighed with hints.

decide_language() is the pure rule; detect_language() runs a detector and applies it.
With the langdetect detector, CLD2 (compiled, about 0.03 ms for 400 characters, against
langdetect's 1.4) gives a first opinion on samples of SHORT_TEXT_CHARS or more; when it
calls itself reliable and finds one language in most of the text, that answer stands, and
langdetect is asked only otherwise (mixed text, short text, anything CLD2 is unsure of).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from functools import cache
from typing import Any

from ingestor.core.analysis import LanguageResult

UNDETERMINED = "und"
# Below this many characters of text, detectors guess; hints from the page and the feed
# weigh more there.
SHORT_TEXT_CHARS = 200
# Measured on news prose in five languages (bench/corpus.py, 400 samples per length):
# langdetect is right 67% of the time at 8 letters, 92% at 20, 97% at 30 and 100% from 40
# on, while its own probability stays at 0.8-1.0 even when it is wrong. So a short text
# still gets the detector's best guess ("und" only for text without a letter of any
# script: an "und" for a short sentence is a sure miss, a guess is mostly right), with a
# confidence capped by its length: up to 0.5 at MIN_LETTERS, rising to 1.0 at
# RELIABLE_LETTERS.
MIN_LETTERS = 20
RELIABLE_LETTERS = 40
_MIN_HINT_BONUS = 0.1
_MAX_HINT_BONUS = 0.7
_HANGUL = re.compile(r"[\uac00-\ud7af\u1100-\u11ff\u3130-\u318f]")
_KANA = re.compile(r"[\u3040-\u30ff\u31f0-\u31ff]")
_HAN = re.compile(r"[\u4e00-\u9fff\u3400-\u4dbf]")
_CJK = frozenset({"zh", "ja", "ko"})


def normalize_code(code: str | None) -> str | None:
    """'fr-FR' -> 'fr', 'zh-cn' -> 'zh', anything that is not two letters -> None."""
    if not code:
        return None
    base = code.strip().lower().replace("_", "-").split("-", 1)[0]
    return base if len(base) == 2 and base.isalpha() else None


def decide_language(
    candidates: Sequence[tuple[str, float]],
    text_chars: int,
    hints: Sequence[str | None],
    letters: int | None = None,
) -> LanguageResult:
    """Combine detector probabilities with hints (page `<html lang>`, feed language).

    A hint adds a bonus to its language's probability, larger for short text; without
    enough letters to judge, the first hint wins with low confidence, else "und".
    """
    hint_codes = [c for c in (normalize_code(h) for h in hints) if c]
    if text_chars == 0 or not candidates:
        if hint_codes:
            return LanguageResult(hint_codes[0], 0.5)
        return LanguageResult(UNDETERMINED, 0.0)
    probabilities: dict[str, float] = {}
    for code, probability in candidates:
        normalized = normalize_code(code)
        if normalized:
            probabilities[normalized] = probabilities.get(normalized, 0.0) + probability
    # The hint's weight falls linearly from _MAX to _MIN as the text nears SHORT_TEXT_CHARS.
    shortness = max(0.0, 1.0 - text_chars / SHORT_TEXT_CHARS)
    bonus = _MIN_HINT_BONUS + (_MAX_HINT_BONUS - _MIN_HINT_BONUS) * shortness
    scores = dict(probabilities)
    for code in dict.fromkeys(hint_codes):
        scores[code] = scores.get(code, 0.0) + bonus
    if not scores:
        return LanguageResult(UNDETERMINED, 0.0)
    best = max(scores, key=lambda c: (scores[c], probabilities.get(c, 0.0)))
    confidence = probabilities.get(best, 0.0)
    if best in hint_codes and confidence < bonus:
        confidence = max(confidence, bonus)
    if letters is not None:
        confidence = min(confidence, length_cap(letters))
    return LanguageResult(best, round(min(max(confidence, 0.0), 1.0), 4))


def length_cap(letters: int) -> float:
    """The most confidence `letters` letters can carry: 0.5 at MIN_LETTERS, rising
    linearly to 1.0 at RELIABLE_LETTERS, falling linearly to 0 below MIN_LETTERS."""
    if letters >= RELIABLE_LETTERS:
        return 1.0
    if letters >= MIN_LETTERS:
        return 0.5 + 0.5 * (letters - MIN_LETTERS) / (RELIABLE_LETTERS - MIN_LETTERS)
    return 0.5 * max(letters, 0) / MIN_LETTERS


def count_letters(text: str) -> int:
    """Letters of every script, combining marks included: a Devanagari vowel sign or
    virama (category Mc/Mn) is part of its word, not punctuation."""
    return sum(1 for char in text if char.isalpha() or unicodedata.category(char)[0] == "M")


@cache
def _langdetect_factory() -> Any:
    from langdetect import detector_factory

    detector_factory.init_factory()
    # Every Detector re-seeds its RNG from the factory's seed on each detection, so one
    # fixed seed makes every result independent of what the process saw before.
    detector_factory._factory.set_seed(0)
    return detector_factory._factory


@cache
def _langid_identifier() -> Any:
    from py3langid.langid import _load_identifier

    return _load_identifier(norm_probs=True)


def _langdetect_candidates(text: str) -> list[tuple[str, float]]:
    from langdetect.lang_detect_exception import LangDetectException

    from ingestor.analyze.langdetect_fast import VectorDetector

    detector = VectorDetector(_langdetect_factory())
    detector.append(text)
    try:
        return [(lang.lang, lang.prob) for lang in detector.get_probabilities()]
    except LangDetectException:
        return []


def _langid_candidates(text: str) -> list[tuple[str, float]]:
    ranked = _langid_identifier().rank(text)
    return [(code, float(p)) for code, p in ranked[:5]]


def cjk_language(text: str) -> str | None:
    """The CJK language the script itself proves: Hangul is Korean, kana is Japanese, Han
    characters alone are Chinese. None for text without CJK characters."""
    if _HANGUL.search(text):
        return "ko"
    if _KANA.search(text):
        return "ja"
    if _HAN.search(text):
        return "zh"
    return None


def _script_corrected(candidates: list[tuple[str, float]], text: str) -> list[tuple[str, float]]:
    # langdetect reads short Chinese as Korean: the script settles what n-grams cannot.
    if not candidates or normalize_code(candidates[0][0]) not in _CJK:
        return candidates
    proven = cjk_language(text)
    if proven is None or normalize_code(candidates[0][0]) == proven:
        return candidates
    return [(proven, candidates[0][1]), *candidates[1:]]


# A title longer than this is read apart from the text and weighs its share of their
# letters: langdetect's n-grams let a little of a distinctive script outvote a page of
# English, so a 1,000-character title in one sample would decide alone.
LONG_TITLE = 150


def detect_language(
    title: str,
    text: str,
    hints: Sequence[str | None] = (),
    detector: str = "langdetect",
    max_chars: int = 400,
) -> LanguageResult:
    if len(title.strip()) > LONG_TITLE and count_letters(text[:max_chars]):
        return _title_apart(title, text, hints, detector, max_chars)
    sample = f"{title}\n{text}".strip()[:max_chars]
    letters = count_letters(sample)
    proven = cjk_language(sample)
    if proven is not None and letters < MIN_LETTERS:
        # A few CJK characters say more than a few Latin letters: the script decides.
        return decide_language([(proven, 1.0)], len(sample), hints, MIN_LETTERS)
    if letters == 0:
        return decide_language([], 0, hints)
    candidates = _candidates(sample, hints, detector)
    return decide_language(candidates, len(sample), hints, letters)


def _candidates(sample: str, hints: Sequence[str | None], detector: str) -> list[tuple[str, float]]:
    if detector == "py3langid":
        candidates = _langid_candidates(sample)
    elif (first := _first_opinion(sample)) is not None:
        candidates = first
    else:
        candidates = _langdetect_candidates(sample) or _langid_candidates(sample)
        candidates = _second_opinion(candidates, sample, hints)
    return _script_corrected(candidates, sample)


# CLD2's answer stands when it says it is reliable and this share of the text (in
# percent) is in its top language: on 417 labelled texts of 400 characters in 19
# languages, every such answer was right and agreed with langdetect's (bench/
# language_sample.py); mixed-language text goes on to langdetect.
_FIRST_OPINION_SHARE = 80
# CLD2's old codes for the languages that have new ones.
_CLD2_CODES = {"iw": "he", "jw": "jv", "in": "id", "ji": "yi"}


def _first_opinion(sample: str) -> list[tuple[str, float]] | None:
    if len(sample) < SHORT_TEXT_CHARS:
        return None  # short text: langdetect and the hints, as tuned for it
    import pycld2

    try:
        reliable, _bytes, found = pycld2.detect(sample)
    except (pycld2.error, UnicodeError):
        return None  # text CLD2 cannot read (control characters, lone surrogates)
    _name, code, share, _score = found[0]
    code = _CLD2_CODES.get(code, code)
    if not reliable or share < _FIRST_OPINION_SHARE or normalize_code(code) is None:
        return None
    return [(code, share / 100)]


def _title_apart(
    title: str, text: str, hints: Sequence[str | None], detector: str, max_chars: int
) -> LanguageResult:
    """A long title and the text, each read alone, weighed by their share of letters."""
    title_letters, text_letters = count_letters(title), count_letters(text)
    weight = title_letters / (title_letters + text_letters)
    merged: dict[str, float] = {}
    for part, share in (
        (title.strip()[:max_chars], weight),
        (text.strip()[:max_chars], 1 - weight),
    ):
        for code, probability in _candidates(part, hints, detector):
            merged[code] = merged.get(code, 0.0) + share * probability
    ranked = sorted(merged.items(), key=lambda item: -item[1])
    letters = count_letters(text[:max_chars]) + count_letters(title[:max_chars])
    return decide_language(ranked, min(len(title) + len(text), max_chars), hints, letters)


# langdetect has no model for some languages, and their nearest neighbour absorbs them with
# full confidence: Icelandic and Nynorsk read as "no", Malay as "id", Bosnian as "hr",
# Azerbaijani as "tr". When langdetect answers one of these neighbours, or a hint names a
# language it lacks, py3langid (0.15 ms) is asked too, and wins when it names a language
# langdetect lacks: with a probability of 0.5 when a hint names it, 0.9 otherwise.
_NEIGHBOURS = frozenset({"no", "da", "sv", "id", "hr", "sl", "mk", "bg", "tr"})
_HINTED_SWITCH = 0.5
_UNHINTED_SWITCH = 0.9


def _second_opinion(
    candidates: list[tuple[str, float]], sample: str, hints: Sequence[str | None]
) -> list[tuple[str, float]]:
    lacking = _langdetect_lacks()
    hinted = {normalize_code(h) for h in hints} & lacking
    top = normalize_code(candidates[0][0]) if candidates else None
    if not hinted and top not in _NEIGHBOURS:
        return candidates
    alternative = _langid_candidates(sample)
    if not alternative:
        return candidates
    code, probability = normalize_code(alternative[0][0]), alternative[0][1]
    if code in lacking and probability >= (_HINTED_SWITCH if code in hinted else _UNHINTED_SWITCH):
        return alternative
    return candidates


@cache
def _langdetect_lacks() -> frozenset[str]:
    """The languages py3langid knows and langdetect does not."""
    known = {normalize_code(code) for code in _langdetect_factory().get_lang_list()}
    return frozenset(
        code
        for code in (normalize_code(c) for c in _langid_identifier().nb_classes)
        if code and code not in known
    )
