"""The jobs the worker processes run (see pool.py for the pool): parse a fetched feed,
and analyze an article (decode, extract the body, detect the language, fingerprint) in one
round trip. Plain data in, plain data out: nothing here touches the network or a store."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from ingestor.core.analysis import ArticleAnalysis, Body, PageMetadata

if TYPE_CHECKING:
    from ingestor.core.entry import ParsedFeed
    from ingestor.core.retrieved import RetrievedFeed

T = TypeVar("T")


@dataclass(frozen=True)
class ArticleJob:
    url: str
    # The page as fetched: decoding it here keeps that CPU off the event loop's process.
    page: bytes | None
    title: str
    feed_content: str | None
    charset: str | None = None  # from the Content-Type header, if any
    feed_summary: str | None = None
    language_hints: tuple[str | None, ...] = ()
    use_json_ld: bool = True
    fast: bool = False
    extensive_date_search: bool = False
    engine: str = "trafilatura"
    # Fill trafilatura's text with the paragraphs resiliparse finds inside the body.
    second_opinion: bool = True
    # trafilatura's metadata pass (its date finding above all); without it the page's
    # head tags give the metadata. Wanted when the feed does not date the entry.
    page_metadata: bool = True
    detector: str = "langdetect"
    max_language_chars: int = 400
    num_perm: int = 128
    threshold: float = 0.5
    # Also fingerprint in the previous MinHash scheme (records of it are in the window).
    legacy_fingerprint: bool = False


def analyze_article(job: ArticleJob) -> ArticleAnalysis:
    """Everything CPU-heavy about one article, in one round trip to a worker. Its timings
    are CPU seconds of this worker (wall time would count the other processes' turns on a
    busy machine)."""
    # Imported here, not at the top: the main process names these jobs without running
    # them, and so never loads lxml, trafilatura, numpy or the language profiles (the
    # workers' fork server has them preloaded).
    from ingestor.analyze.extract import choose_body, extract_page
    from ingestor.analyze.fingerprint import fingerprint
    from ingestor.analyze.headmeta import title_tag
    from ingestor.analyze.language import detect_language
    from ingestor.core.pages import soft_404
    from ingestor.parse.decoding import decode_document

    started = time.process_time()
    html = decode_document(job.page, job.charset)[0] if job.page else ""
    # A soft 404 is known from its <title> alone: its page is not read at all.
    not_found = soft_404(title_tag(html), job.title) if html else None
    if html and not not_found:
        page, json_ld_text, meta = extract_page(
            html,
            job.url,
            job.fast,
            job.extensive_date_search,
            job.page_metadata,
            job.engine,
            job.second_opinion,
        )
    else:
        page, json_ld_text, meta = Body("", "none"), None, PageMetadata()
    body = choose_body(page, json_ld_text, job.feed_content, job.use_json_ld, job.feed_summary)
    extracted = time.process_time()
    title = job.title or meta.title or ""
    language = detect_language(
        title,
        body.text,
        (meta.html_lang, *job.language_hints),
        job.detector,
        job.max_language_chars,
    )
    detected = time.process_time()
    prints = fingerprint(body.text, job.num_perm, job.threshold, job.legacy_fingerprint)
    done = time.process_time()
    timings = {
        "extract": extracted - started,
        "language": detected - extracted,
        "fingerprint": done - detected,
    }
    return ArticleAnalysis(body, meta, language, prints, timings, page_error=not_found)


def parse_feed_job(doc: RetrievedFeed) -> tuple[ParsedFeed, float]:
    """The parsed feed and the CPU seconds its parse took."""
    from ingestor.parse.feeds import parse_retrieved

    started = time.process_time()
    parsed = parse_retrieved(doc)
    return parsed, time.process_time() - started
