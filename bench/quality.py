"""Quality figures: body extraction (token precision/recall/F1) and near-duplicate
detection (recall/precision at the shipped threshold, cost per article).

    python bench/quality.py            # prints two tables, then the dev set's
    python bench/quality.py --no-devset

The dev set of real pages (`../shared/devsets/readability-pages.jsonl.gz`, or --devset)
is scored by bench/devset.py's report: the workers' function beside trafilatura's
default, CPU per page and failure classes.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

from ingestor.core.state import ArticleCommit, ArticleLookup, DedupQuery, NearCandidate

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import devset
from bench.corpus import TEMPLATES, Story, render_page, stories
from ingestor.analyze.extract import choose_body, extract_page
from ingestor.analyze.fingerprint import fingerprint, scheme_id
from ingestor.config.model import DedupConfig
from ingestor.core.analysis import Fingerprint
from ingestor.core.dedup import judge_duplicate, similarity
from ingestor.core.state import CommitItem
from ingestor.store.sqlite import SQLiteStateStore

_WORD = re.compile(r"\w+")
_CJK = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")


def tokens(text: str) -> Counter[str]:
    words: list[str] = []
    for word in _WORD.findall(text.casefold()):
        # CJK has no spaces: count characters there.
        words.extend(list(word) if _CJK.search(word) else [word])
    return Counter(words)


def prf(extracted: str, expected: str) -> tuple[float, float, float]:
    got, want = tokens(extracted), tokens(expected)
    common = sum((got & want).values())
    precision = common / max(sum(got.values()), 1)
    recall = common / max(sum(want.values()), 1)
    f1 = 2 * precision * recall / max(precision + recall, 1e-9)
    return precision, recall, f1


def extraction_table(corpus: list[Story]) -> list[str]:
    rows = [
        "| template | pages | trafilatura P / R / F1 | shipped (with JSON-LD) P / R / F1 |",
        "|---|---|---|---|",
    ]
    totals: dict[str, list[tuple[float, float, float]]] = {"raw": [], "shipped": []}
    for template in TEMPLATES:
        raw_scores, shipped_scores = [], []
        for story in corpus:
            page = render_page(story, template)
            expected = "\n".join(story.paragraphs)
            body, json_ld, _meta = extract_page(page, f"https://example.org/{story.name}")
            raw_scores.append(prf(body.text, expected))
            shipped_scores.append(prf(choose_body(body, json_ld, None).text, expected))
        totals["raw"] += raw_scores
        totals["shipped"] += shipped_scores
        rows.append(f"| {template} | {len(corpus)} | {_fmt(raw_scores)} | {_fmt(shipped_scores)} |")
    rows.append(
        f"| all | {len(totals['raw'])} | {_fmt(totals['raw'])} | {_fmt(totals['shipped'])} |"
    )
    return rows


def _fmt(scores: list[tuple[float, float, float]]) -> str:
    return " / ".join(f"{statistics.mean(s[i] for s in scores):.3f}" for i in range(3))


# --- near duplicates ---

BOILERPLATE = (
    "Follow us on social media and subscribe to our newsletter for the latest news. "
    "Copyright Example Times, all rights reserved."
)


def _edit_sentence(paragraph: str) -> str:
    words = paragraph.split()
    if len(words) > 12:
        words[5], words[6] = words[6], words[5]
        words.insert(9, "reportedly")
    return " ".join(words)


def true_copies(story: Story, rng: random.Random) -> dict[str, str]:
    p = list(story.paragraphs)
    return {
        "wire copy, edited sentence + extra paragraph": "\n".join(
            [
                *p[:1],
                _edit_sentence(p[1]),
                *p[2:],
                "The agency will publish further details later today.",
            ]
        ),
        "shortened (last paragraph cut)": "\n".join(p[:-1]) if len(p) > 3 else "\n".join(p),
        "with the copying site's footer": "\n".join([*p, BOILERPLATE]),
        "two paragraphs reworded": "\n".join(
            [_edit_sentence(x) if i in (0, 2) else x for i, x in enumerate(p)]
        ),
    }


def distinct_pairs(corpus: list[Story], rng: random.Random) -> list[tuple[str, str, str]]:
    pairs = []
    for i, a in enumerate(corpus):
        for b in corpus[i + 1 :]:
            if a.lang == b.lang:
                pairs.append(
                    (
                        "different stories, same site boilerplate",
                        "\n".join([*a.paragraphs, BOILERPLATE]),
                        "\n".join([*b.paragraphs, BOILERPLATE]),
                    )
                )
        quote = rng.choice(a.paragraphs)
        short = (
            f"In a short reaction, a spokesperson quoted the report: \u201c{quote}\u201d "
            "The party said it would ask questions in parliament next week."
        )
        pairs.append(("short article quoting a long one", "\n".join(a.paragraphs), short))
    return pairs


async def store_fingerprint(
    store: SQLiteStateStore, record_id: str, fp: Fingerprint, scheme: str
) -> None:
    """Record a finished article with this fingerprint, as the pipeline commits one:
    prepared (location reserved, body and bands claimed), then committed."""
    url, key = f"url:{record_id}", f"key:{record_id}"
    query = DedupQuery(fp.content_hash, scheme, fp.band_keys, 0.0, fp.signature)
    await store.prepare_article(ArticleLookup(record_id, url, "x", 1.0, query))
    item = CommitItem(
        record_id, url, fp.content_hash, "f", key, scheme, fp.signature, fp.band_keys, 1.0
    )
    await store.commit_article(ArticleCommit(0, "f", key, 1.0, record=item))


async def look_up(
    store: SQLiteStateStore, probe_id: str, fp: Fingerprint, scheme: str
) -> tuple[str | None, list[NearCandidate]]:
    """What the pipeline's look-up finds for this body (nothing of it is registered: no
    signature in the query; its hash is claimed under `probe_id`)."""
    query = DedupQuery(fp.content_hash, scheme, fp.band_keys, 0.0)
    prep = await store.prepare_article(ArticleLookup(probe_id, f"url:{probe_id}", "x", 1.0, query))
    return prep.exact, prep.candidates


async def dedup_table(corpus: list[Story]) -> list[str]:
    dedup = DedupConfig()
    scheme = scheme_id(dedup.num_perm, dedup.threshold)
    rng = random.Random(5)
    kinds: dict[str, list[bool]] = {}
    scores: dict[str, list[float]] = {"copy": [], "distinct": []}

    async def is_flagged(directory: Path, original: str, candidate: str, n: int) -> bool:
        """The pipeline's own path: store the original, then look the candidate up (a
        fresh state per pair, so that pairs cannot match each other)."""
        store = SQLiteStateStore(directory / f"pair{n}.db")
        await store.open()
        first, second = fingerprint(original), fingerprint(candidate)
        if first.signature is not None and second.signature is not None:
            group = "copy" if n <= len(corpus) * 4 else "distinct"
            scores[group].append(similarity(first.signature, second.signature))
        await store_fingerprint(store, f"a{n}", first, scheme)
        exact, candidates = await look_up(store, f"b{n}", second, scheme)
        await store.close()
        return judge_duplicate(exact, second.signature, candidates, dedup.threshold).is_duplicate

    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        n = 0
        for story in corpus:
            for kind, copy in true_copies(story, rng).items():
                n += 1
                kinds.setdefault(f"copy: {kind}", []).append(
                    await is_flagged(directory, "\n".join(story.paragraphs), copy, n)
                )
        for kind, a, b in distinct_pairs(corpus, rng):
            n += 1
            kinds.setdefault(f"distinct: {kind}", []).append(await is_flagged(directory, a, b, n))
    rows = ["| pair kind | pairs | flagged as duplicate |", "|---|---|---|"]
    for kind, flags in kinds.items():
        rows.append(f"| {kind} | {len(flags)} | {sum(flags)} |")
    tp = sum(sum(f) for k, f in kinds.items() if k.startswith("copy"))
    fn = sum(len(f) - sum(f) for k, f in kinds.items() if k.startswith("copy"))
    fp = sum(sum(f) for k, f in kinds.items() if k.startswith("distinct"))
    rows.append("")
    rows.append(
        f"near-duplicate recall {tp / max(tp + fn, 1):.3f} ({tp}/{tp + fn}), "
        f"precision {tp / max(tp + fp, 1):.3f} ({tp}/{tp + fp}) at threshold "
        f"{dedup.threshold}, {dedup.num_perm} permutations, scheme {scheme}"
    )
    rows.append(
        f"estimated Jaccard: true copies min {min(scores['copy']):.2f} "
        f"(median {statistics.median(scores['copy']):.2f}); distinct pairs max "
        f"{max(scores['distinct']):.2f} (median {statistics.median(scores['distinct']):.2f})"
    )
    return rows


async def dedup_cost(corpus: list[Story], stored: int = 20_000) -> list[str]:
    """Fingerprint time per article, and lookup time with `stored` fingerprints in state."""
    dedup = DedupConfig()
    scheme = scheme_id(dedup.num_perm, dedup.threshold)
    texts = ["\n".join(s.paragraphs) for s in corpus]
    started = time.perf_counter()
    rounds = 20
    for _ in range(rounds):
        for text in texts:
            fingerprint(text)
    per_fingerprint = (time.perf_counter() - started) / (rounds * len(texts))
    rng = random.Random(9)
    vocabulary = sorted({w for t in texts for w in t.split()})
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStateStore(Path(tmp) / "cost.db")
        await store.open()
        for i in range(stored):
            doc = " ".join(rng.choices(vocabulary, k=300))
            fp = fingerprint(doc)
            await store_fingerprint(store, f"r{i}", fp, scheme)
        queries = [fingerprint(t) for t in texts] * 20
        started = time.perf_counter()
        for i, fp in enumerate(queries):
            # Each query its own body hash: a repeat must not stop at the exact match.
            unique = replace(fp, content_hash=f"{fp.content_hash}:{i}")
            await look_up(store, f"q{i}", unique, scheme)
        per_lookup = (time.perf_counter() - started) / len(queries)
        await store.close()
    return [
        f"fingerprint (MinHash, {dedup.num_perm} perms, word 3-shingles): "
        f"{per_fingerprint * 1000:.2f} ms per article",
        f"lookup (exact hash + LSH bands, indexed) with {stored} stored fingerprints: "
        f"{per_lookup * 1000:.2f} ms per article",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devset", type=Path, default=devset.DEFAULT_DEVSET)
    parser.add_argument("--no-devset", action="store_true")
    args = parser.parse_args()
    corpus = stories()
    print("## Body extraction, token precision / recall / F1 (mean over pages)\n")
    print("\n".join(extraction_table(corpus)))
    print("\n## Near-duplicate detection\n")
    print("\n".join(asyncio.run(dedup_table(corpus))))
    print()
    print("\n".join(asyncio.run(dedup_cost(corpus))))
    if args.no_devset:
        return
    print("\n## Body extraction on real pages (bench/devset.py)\n")
    if not args.devset.exists():
        print(f"(no dev set at {args.devset}: pass --devset)")
        return
    source, pages = devset.load_devset(args.devset)
    devset.report(pages, source)


if __name__ == "__main__":
    main()
