"""Body extraction on a dev set of real pages: the workers' own function against
trafilatura's default, with CPU per page and failure classes.

    python bench/devset.py [--devset ../shared/devsets/readability-pages.jsonl.gz]

The dev set (one JSON object per line after a header line: `id`, `url`, `html`,
`expected_text`) is mozilla/readability's test pages with Readability.js's output as the
expected body: a guide, not the truth. The metric is the one of the shared scorer
(`../shared/tools/score_extraction.py`): \\w+ tokens (NFC, case kept), multisets of
4-token shingles, TP/FP/FN per page normalised to sum 1, precision and recall averaged
over pages, F1 from the two averages.

Each page also gets a class from the shape of its error: fine (F1 >= 0.9), boilerplate
kept (precision under 0.8, recall not), body cut (recall under 0.8, precision not),
wrong block (both under 0.8) or empty. READ says what the worst pages show when read.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import statistics
import sys
import time
import unicodedata
from collections import Counter
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ingestor.analyze.jobs import ArticleJob, analyze_article

DEFAULT_DEVSET = (
    Path(__file__).resolve().parent.parent.parent / "shared/devsets/readability-pages.jsonl.gz"
)
_WORD = re.compile(r"\w+")

# The worst pages, read by hand (2026-11-29): what the extraction got wrong there.
# nytimes-5 scores 0 since issue 17's choice (0.37 before): both bodies are teasers of
# the section page, the first block then and another now.
READ = {
    "bug-1255978": "boilerplate kept: video-player labels and a 50-slide gallery",
    "yahoo-3": "boilerplate kept: video playlist and other stories",
    "yahoo-2": "boilerplate kept: a hidden (aria-hidden) navigation",
    "hidden-nodes": "boilerplate kept: elements hidden by the page",
    "visibility-hidden": "boilerplate kept: elements hidden by the page",
    "nytimes-5": "wrong block: a section page of teasers, not an article",
    "social-buttons": "body cut: a paragraph repeated with a share line between the copies "
    "(synthetic): not back to back, so not restored",
    "title-and-h1-discrepancy": "body cut: repeated identical paragraphs (synthetic)",
    "hukumusume": "wrong block: breadcrumbs and the page's furniture around a short story",
    "ehow-1": "body cut: step headings and image captions left out, a materials list kept",
}


def shingles(text: str | None, size: int = 4) -> Counter[tuple[str, ...]]:
    words = _WORD.findall(unicodedata.normalize("NFC", text or ""))
    if len(words) < size:
        return Counter([tuple(words)]) if words else Counter()
    return Counter(tuple(words[i : i + size]) for i in range(len(words) - size + 1))


def page_counts(expected: str, got: str | None) -> tuple[float, float, float]:
    want, have = shingles(expected), shingles(got)
    true_positive = sum((want & have).values())
    false_positive = sum(have.values()) - true_positive
    false_negative = sum(want.values()) - true_positive
    total = true_positive + false_positive + false_negative
    if not total:
        return 0.0, 0.0, 0.0
    return true_positive / total, false_positive / total, false_negative / total


def precision_recall(counts: tuple[float, float, float]) -> tuple[float | None, float | None]:
    tp, fp, fn = counts
    return (tp / (tp + fp) if tp + fp else None), (tp / (tp + fn) if tp + fn else None)


def aggregate(counts: list[tuple[float, float, float]]) -> tuple[float, float, float]:
    pairs = [precision_recall(c) for c in counts]
    precision = statistics.mean(p for p, _ in pairs if p is not None)
    recall = statistics.mean(r for _, r in pairs if r is not None)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return f1, precision, recall


def failure_class(counts: tuple[float, float, float], got: str | None) -> str:
    if not (got or "").strip():
        return "empty"
    precision, recall = (x or 0.0 for x in precision_recall(counts))
    if precision + recall and 2 * precision * recall / (precision + recall) >= 0.9:
        return "fine"
    if precision < 0.8 <= recall:
        return "boilerplate kept"
    if recall < 0.8 <= precision:
        return "body cut"
    return "wrong block"


def workers_body(
    html: str, url: str, engine: str = "trafilatura", second_opinion: bool = True
) -> tuple[str, float]:
    """What the workers make of a page whose feed dates the entry (the common case), and
    the CPU of its extraction stage alone (the job also detects the language and takes
    fingerprints, which trafilatura does not)."""
    job = ArticleJob(
        url=url,
        page=html.encode("utf-8"),
        title="",
        feed_content=None,
        charset="utf-8",
        page_metadata=False,
        engine=engine,
        second_opinion=second_opinion,
    )
    analysis = analyze_article(job)
    return analysis.body.text, analysis.timings["extract"]


def resiliparse_body(html: str, url: str) -> tuple[str, float]:
    return workers_body(html, url, "resiliparse")


def without_second_opinion(html: str, url: str) -> tuple[str, float]:
    return workers_body(html, url, second_opinion=False)


def balanced_body(html: str, url: str) -> str:
    """What the workers did before issue 17's choice: trafilatura's default (balanced)
    mode, which re-runs itself and compares with readability-lxml, on the whole page."""
    from trafilatura import bare_extraction

    from ingestor.analyze.extract import _body_without_head
    from ingestor.analyze.headmeta import scan_head

    document = bare_extraction(
        html, url=url, include_comments=False, with_metadata=False, include_tables=True
    )
    return _body_without_head(document.text if document else "", html, scan_head(html))


def farm_pages(count: int = 60) -> list[dict[str, str]]:
    """Pages of the speed benchmark's farm (news-portal pages in 12 languages), their
    bodies known exactly."""
    from dataclasses import replace

    from bench.farm import FarmContent, FarmSpec

    content = FarmContent(replace(FarmSpec(), feeds=max(count // 15 + 1, 1)), 1)
    return [
        {
            "id": path,
            "url": f"http://farm.example{path}",
            "html": page.decode(),
            "expected_text": content.bodies[path],
        }
        for path, page in list(content.pages.items())[:count]
    ]


def trafilatura_default(html: str, url: str) -> str | None:
    from trafilatura import extract

    return extract(html, url=url, include_comments=False)


def score(
    pages: list[dict[str, str]],
    extractor: Callable[[str, str], str | tuple[str, float] | None],
) -> tuple[tuple[float, float, float], float, dict[str, tuple[float, float, float, str]]]:
    extractor(pages[0]["html"], pages[0]["url"])  # imports and caches out of the timing
    per_page: dict[str, tuple[float, float, float, str]] = {}
    counts = []
    cpu = 0.0
    for page in pages:
        started = time.process_time()
        answer = extractor(page["html"], page["url"])
        spent = time.process_time() - started
        got, spent = answer if isinstance(answer, tuple) else (answer, spent)
        cpu += spent
        page_count = page_counts(page["expected_text"], got)
        counts.append(page_count)
        precision, recall = (x or 0.0 for x in precision_recall(page_count))
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_page[page["id"]] = (f1, precision, recall, failure_class(page_count, got))
    return aggregate(counts), cpu / len(pages), per_page


def print_table(
    results: dict[
        str, tuple[tuple[float, float, float], float, dict[str, tuple[float, float, float, str]]]
    ],
) -> None:
    print("| extractor | F1 | precision | recall | CPU per page | classes |")
    print("|---|---|---|---|---|---|")
    for name, ((f1, precision, recall), cpu, per_page) in results.items():
        classes = Counter(row[3] for row in per_page.values())
        shown = ", ".join(f"{kind} {n}" for kind, n in classes.most_common())
        print(
            f"| {name} | {f1:.3f} | {precision:.3f} | {recall:.3f} | {cpu * 1000:.1f} ms "
            f"| {shown} |"
        )


def load_devset(path: Path) -> tuple[str, list[dict[str, str]]]:
    """The dev set's source and its pages."""
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        header = json.loads(handle.readline())
        return str(header.get("source", path.name)), [json.loads(line) for line in handle]


def synthetic(page: dict[str, str]) -> bool:
    """A test page built around lorem ipsum (repeated paragraphs, metadata cases), not a
    real site's article."""
    return "lorem ipsum" in page["expected_text"].casefold()


def report(pages: list[dict[str, str]], source: str, worst: int = 12) -> None:
    print(f"Dev set: {len(pages)} pages ({source})\n")
    extractors = {
        "trafilatura default: extract(include_comments=False)": trafilatura_default,
        "extraction.engine resiliparse": resiliparse_body,
        "before issue 17's choice: balanced mode, nothing pruned, no second opinion": (
            balanced_body
        ),
        "the workers, extraction.second_opinion false": without_second_opinion,
        "the workers' analyze_article (page metadata from the head)": workers_body,
    }
    results = {name: score(pages, extractor) for name, extractor in extractors.items()}
    print_table(results)
    real = [page for page in pages if not synthetic(page)]
    print(
        f"\nThe same, on the {len(real)} pages from real sites (lorem-ipsum test pages left out):\n"
    )
    print_table({name: score(real, extractor) for name, extractor in extractors.items()})
    print("\nThe speed benchmark's farm: 60 news-portal pages, bodies known exactly:\n")
    print_table({name: score(farm_pages(), extractor) for name, extractor in extractors.items()})
    ours = list(results.values())[-1][2]
    print(f"\nWorst {worst} pages of the workers' function:\n")
    print("| page | F1 | P | R | class | read |")
    print("|---|---|---|---|---|---|")
    for page_id, (f1, precision, recall, kind) in sorted(ours.items(), key=lambda x: x[1][0])[
        :worst
    ]:
        print(
            f"| {page_id} | {f1:.2f} | {precision:.2f} | {recall:.2f} | {kind} | "
            f"{READ.get(page_id, '')} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devset", type=Path, default=DEFAULT_DEVSET)
    parser.add_argument("--worst", type=int, default=12)
    args = parser.parse_args()
    source, pages = load_devset(args.devset)
    report(pages, source, args.worst)


if __name__ == "__main__":
    main()
