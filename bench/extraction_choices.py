"""Per-page extraction choices on both dev sets: every candidate body computed once, then
each candidate, the oracle (the best candidate per page) and candidate choosers scored the
way the shared scorers score.

    python bench/extraction_choices.py [--cache /tmp/choices.pkl]

Candidates:
- `bal` is trafilatura's plain `extract(include_comments=False)`.
- `prec` is the same call with `favor_precision`.
- `rec` is the workers' extraction without the second opinion (since issue 31: trafilatura's
  balanced reading with its fallbacks, hidden elements pruned; before it, recall mode).
- `prod` is the workers' body as records get it (the fast reading checked against
  resiliparse's, filled from it, cut at JSON-LD's article end, then the JSON-LD choice).
- `res` is resiliparse's reading.
- `jsonld` is the page's schema.org `articleBody`.

Sets:
- `../shared/devsets/trafilatura-eval.jsonl.xz` (949 pages) is scored by its snippets:
  precision, recall and F1 from the totals.
- `../shared/devsets/readability-pages.jsonl.gz` is scored by 4-token shingles, averaged
  per page. Its real-site pages are reported apart from the lorem-ipsum test pages.

Computing the candidates takes about two minutes; the cache keeps them for the next run.
"""

from __future__ import annotations

import argparse
import gzip
import json
import lzma
import pickle
import re
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent / "shared" / "tools"))

from score_extraction import aggregate, page_counts  # noqa: E402  (the shared scorer)

from ingestor.analyze.extract import (  # noqa: E402
    _resiliparse_text,
    choose_body,
    extract_page,
)
from ingestor.analyze.second_opinion import fill_from_second_opinion  # noqa: E402
from ingestor.core.cleaning import clean_text  # noqa: E402

SNIPPETS = ROOT.parent / "shared" / "devsets" / "trafilatura-eval.jsonl.xz"
READABILITY = ROOT.parent / "shared" / "devsets" / "readability-pages.jsonl.gz"
CANDIDATES = ("bal", "prec", "rec", "prod", "res", "jsonld")
_SPACE = re.compile(r"\s+")
_WORD = re.compile(r"\w+")
Chooser = Callable[[dict[str, str]], str]


def candidates(html: str, url: str) -> dict[str, str]:
    import trafilatura

    found = {
        "bal": trafilatura.extract(html, url=url, include_comments=False) or "",
        "prec": trafilatura.extract(html, url=url, include_comments=False, favor_precision=True)
        or "",
    }
    page, json_ld, _meta = extract_page(html, url, second_opinion=False)
    found["rec"] = choose_body(page, json_ld, None).text
    page, json_ld, _meta = extract_page(html, url)
    found["prod"] = choose_body(page, json_ld, None).text
    found["res"] = clean_text(_resiliparse_text(html))
    found["jsonld"] = json_ld or ""
    return found


def load(cache: Path) -> dict[str, list[dict[str, Any]]]:
    if cache.exists():
        return pickle.loads(cache.read_bytes())
    with lzma.open(SNIPPETS, "rt", encoding="utf-8") as handle:
        snippet_docs = [json.loads(line) for line in handle if line.strip()]
    with gzip.open(READABILITY, "rt", encoding="utf-8") as handle:
        handle.readline()
        readability_docs = [json.loads(line) for line in handle]
    sets: dict[str, list[dict[str, Any]]] = {"snippets": [], "readability": []}
    for doc in (d for d in snippet_docs if "html" in d):
        doc["c"] = candidates(doc.pop("html"), doc["url"])
        sets["snippets"].append(doc)
    for doc in readability_docs:
        doc["c"] = candidates(doc.pop("html"), doc["url"])
        sets["readability"].append(doc)
    cache.write_bytes(pickle.dumps(sets))
    return sets


def _norm(text: str) -> str:
    return _SPACE.sub(" ", text or "").strip()


def snippet_counts(doc: dict[str, Any], text: str) -> tuple[int, int, int]:
    found = _norm(text)
    tp = sum(1 for s in doc["with"] if _norm(s) in found) if found else 0
    fp = sum(1 for s in doc["without"] if _norm(s) in found) if found else 0
    return tp, fp, len(doc["with"]) - tp


def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return (2 * p * r / (p + r) if p + r else 0.0), p, r


def score_snippets(docs: list[dict[str, Any]], choose: Chooser) -> tuple[float, float, float]:
    totals = [0, 0, 0]
    for doc in docs:
        totals = [a + b for a, b in zip(totals, snippet_counts(doc, choose(doc["c"])), strict=True)]
    return _prf(*totals)


def score_readability(docs: list[dict[str, Any]], choose: Chooser) -> tuple[float, float, float]:
    return aggregate([page_counts(d["expected_text"], choose(d["c"])) for d in docs])


def oracle(keys: tuple[str, ...]) -> tuple[Callable[..., tuple[float, float, float]], ...]:
    """The best of `keys` per page, for each set's metric."""

    def snippets(docs: list[dict[str, Any]]) -> tuple[float, float, float]:
        totals = [0, 0, 0]
        for doc in docs:
            best = max((snippet_counts(doc, doc["c"][k]) for k in keys), key=lambda c: c[0] - c[1])
            totals = [a + b for a, b in zip(totals, best, strict=True)]
        return _prf(*totals)

    def readability(docs: list[dict[str, Any]]) -> tuple[float, float, float]:
        counts = [page_counts(d["expected_text"], "") for d in docs]
        for index, doc in enumerate(docs):
            options = [page_counts(doc["expected_text"], doc["c"][k]) for k in keys]
            counts[index] = max(options, key=lambda c: c[0])
        return aggregate(counts)

    return snippets, readability


def _shingles(text: str) -> Counter[tuple[str, ...]]:
    words = _WORD.findall(text)
    return Counter(tuple(words[i : i + 3]) for i in range(max(len(words) - 2, 0)))


def _overlap(a: Counter[tuple[str, ...]], b: Counter[tuple[str, ...]]) -> float:
    shared = sum((a & b).values())
    if not shared:
        return 0.0
    p, r = shared / sum(a.values()), shared / sum(b.values())
    return 2 * p * r / (p + r)


def medoid(keys: tuple[str, ...]) -> Chooser:
    """The candidate that agrees most with the others (agreement between independent
    extractors marks the body)."""

    def choose(found: dict[str, str]) -> str:
        prints = {k: _shingles(found[k]) for k in keys}
        scored = [
            (sum(_overlap(prints[k], prints[o]) for o in keys if o != k), k)
            for k in keys
            if prints[k]
        ]
        return found[max(scored)[1]] if scored else found["prod"]

    return choose


def balanced_filled(found: dict[str, str]) -> str:
    """trafilatura's balanced mode, filled from resiliparse's reading (the second opinion)."""
    text = clean_text(found["bal"])
    if not text:
        return found["prod"]
    filled = fill_from_second_opinion(text, found["res"])
    return filled.text if filled.restored else text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=Path("/tmp/ingestor-choices.pkl"))
    args = parser.parse_args()
    sets = load(args.cache)
    snippets = sets["snippets"]
    real = [d for d in sets["readability"] if "lorem ipsum" not in d["expected_text"].casefold()]
    rows: list[tuple[str, tuple[float, float, float], tuple[float, float, float]]] = []
    for key in CANDIDATES:
        rows.append(
            (
                key,
                score_snippets(snippets, lambda c, k=key: c[k]),
                score_readability(real, lambda c, k=key: c[k]),
            )
        )
    for keys in (("bal", "prod"), ("prod", "res"), ("bal", "prec", "prod", "res")):
        on_snippets, on_readability = oracle(keys)
        rows.append((f"oracle {'+'.join(keys)}", on_snippets(snippets), on_readability(real)))
    choosers: dict[str, Chooser] = {
        "medoid bal+prec+prod+res": medoid(("bal", "prec", "prod", "res")),
        "medoid bal+prod+res": medoid(("bal", "prod", "res")),
        "balanced, filled": balanced_filled,
    }
    for name, choose in choosers.items():
        rows.append((name, score_snippets(snippets, choose), score_readability(real, choose)))
    print(
        f"| candidate | snippets ({len(snippets)}) F1 P R | Readability real ({len(real)}) F1 P R |"
    )
    print("|---|---|---|")
    for name, (f1, p, r), (rf1, rp, rr) in rows:
        print(f"| {name} | {f1:.4f} {p:.3f} {r:.3f} | {rf1:.4f} {rp:.3f} {rr:.3f} |")


if __name__ == "__main__":
    main()
