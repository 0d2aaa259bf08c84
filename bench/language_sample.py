"""How many characters does language detection need? Accuracy and cost of
`detect_language` against the sample size, on labelled texts in many languages: the
readability dev set's pages that declare a language (their expected article text), the
bench corpus's stories, and (with Faker installed: `pip install -e '.[bench]'`) 2,800-character
texts drawn from Faker's word lists in 17 languages, 20 per language, seeded. Run from the
repository root:

    python bench/language_sample.py [--devset ../shared/devsets/readability-pages.jsonl.gz]
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.corpus import FAKER_LOCALES, stories
from ingestor.analyze.language import detect_language

SIZES = (150, 200, 300, 400, 500, 700, 1000, 2000, 1_000_000)


def generated(per_language: int = 20, chars: int = 2800) -> list[tuple[str, str, str]]:
    try:
        from faker import Faker
    except ImportError:
        print("(Faker is not installed: the 17 generated languages are left out)")
        return []
    texts = []
    for lang, locale in FAKER_LOCALES.items():
        fake = Faker(locale if locale != "ar" else "ar_AA")
        fake.seed_instance(16)
        for _ in range(per_language):
            texts.append((lang, fake.sentence(nb_words=8), fake.text(max_nb_chars=chars)))
    return texts


def labelled(devset: Path) -> list[tuple[str, str, str]]:
    """(language, title, text) with the language's primary subtag."""
    texts = [(s.lang, s.title, "\n".join(s.paragraphs)) for s in stories()]
    if devset.exists():
        with gzip.open(devset, "rt", encoding="utf-8") as lines:
            for line in lines:
                row = json.loads(line)
                text = row.get("expected_text") or ""
                # Placeholder Latin under an `en` label says nothing about detection.
                if row.get("lang") and text and not text.startswith("Lorem ipsum"):
                    lang = row["lang"].split("-")[0].lower()
                    texts.append((lang, row.get("title") or "", text))
    return texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    default = Path(__file__).resolve().parent.parent.parent / "shared/devsets"
    parser.add_argument("--devset", type=Path, default=default / "readability-pages.jsonl.gz")
    args = parser.parse_args()
    texts = labelled(args.devset) + generated()
    counts = Counter(lang for lang, _, _ in texts)
    print(f"{len(texts)} texts: {dict(counts.most_common())}")
    detect_language("Warm-up", texts[0][2])  # loads langdetect's profiles
    print("| max_chars | right | wrong (what it said) | ms per text |")
    print("|---|---|---|---|")
    for size in SIZES:
        wrong: list[str] = []
        started = time.process_time()
        for lang, title, text in texts:
            found = detect_language(title, text, max_chars=size).language
            if found != lang:
                wrong.append(f"{lang}->{found}")
        spent = (time.process_time() - started) / len(texts) * 1000
        label = "all" if size >= 1_000_000 else str(size)
        shown = ", ".join(sorted(wrong)) or "-"
        print(f"| {label} | {len(texts) - len(wrong)}/{len(texts)} | {shown} | {spent:.2f} |")


if __name__ == "__main__":
    main()
