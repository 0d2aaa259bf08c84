"""Short texts: how often is `detect_language` right on a sentence, against the rule it
replaced ("und" under 20 letters, counted without combining marks)? Two sets, both seeded:

- the test suite's hand-written sentences (tests/language_sentences.py: Hindi, Russian,
  Czech, Catalan and more, 20-100 characters, as people write them);
- sentences drawn from Faker's word lists in 24 languages (real words, random order), 60
  per language at 3 to 14 words (needs `pip install -e '.[bench]'`).

News headlines with their lead paragraph (bench/corpus.py's stories) are scored too, so a
gain on short text is not paid for on news. Run from the repository root:

    python bench/language_short.py
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.corpus import stories
from ingestor.analyze.language import detect_language
from tests.language_sentences import SENTENCES

FAKER_SHORT = {
    "ar": "ar_AA",
    "az": "az_AZ",
    "bn": "bn_BD",
    "cs": "cs_CZ",
    "da": "da_DK",
    "de": "de_DE",
    "el": "el_GR",
    "en": "en_US",
    "es": "es_ES",
    "fa": "fa_IR",
    "fr": "fr_FR",
    "he": "he_IL",
    "it": "it_IT",
    "ja": "ja_JP",
    "mk": "mk_MK",
    "nl": "nl_NL",
    "pl": "pl_PL",
    "ru": "ru_RU",
    "th": "th_TH",
    "tl": "tl_PH",
    "uk": "uk_UA",
    "vi": "vi_VN",
    "zh": "zh_CN",
}
_OLD_LETTER = re.compile(r"[^\W\d_]", re.UNICODE)


def faker_sentences(per_language: int = 60) -> list[tuple[str, str]]:
    try:
        from faker import Faker
    except ImportError:
        print("(Faker is not installed: only the hand-written sentences are scored)")
        return []
    texts = []
    for lang, locale in FAKER_SHORT.items():
        fake = Faker(locale)
        fake.seed_instance(25)
        for n in range(per_language):
            texts.append((lang, fake.sentence(nb_words=3 + n % 12)))
    return texts


def previous_rule(title: str, text: str) -> str:
    """The answer before issue 25: "und" under 20 letters (marks not counted)."""
    sample = f"{title}\n{text}".strip()[:400]
    if len(_OLD_LETTER.findall(sample)) < 20 and not re.search(r"[\u3040-\u9fff]", sample):
        return "und"
    return detect_language(title, text).language


def current_rule(title: str, text: str) -> str:
    return detect_language(title, text).language


def score(
    name: str, rows: list[tuple[str, str, str]], rule: Callable[[str, str], str]
) -> tuple[float, Counter[str]]:
    right = 0
    wrong: Counter[str] = Counter()
    for lang, title, text in rows:
        answer = rule(title, text)
        if answer == lang:
            right += 1
        else:
            wrong[f"{lang}->{answer}"] += 1
    share = right / len(rows) if rows else 0.0
    print(f"  {name:10} {right}/{len(rows)} = {share:.1%}; most missed: {wrong.most_common(6)}")
    return share, wrong


def main() -> None:
    hand = [(lang, "", s) for lang, sentences in SENTENCES.items() for s in sentences]
    generated = [(lang, "", s) for lang, s in faker_sentences()]
    news = [(s.lang, s.title, s.paragraphs[0]) for s in stories()]
    for label, rows in (
        ("hand-written sentences", hand),
        ("Faker sentences (24 languages)", generated),
        ("under 100 characters (both sets)", [r for r in hand + generated if len(r[2]) < 100]),
        ("news: headline + lead", news),
    ):
        if not rows:
            continue
        print(f"{label}: {len(rows)} texts")
        score("before", rows, previous_rule)
        score("now", rows, current_rule)


if __name__ == "__main__":
    main()
