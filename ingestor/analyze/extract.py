"""Article page HTML to a clean body and its metadata (CPU-bound: runs in worker processes).

The page's own text is trafilatura's balanced reading, with the elements the page hides
from readers pruned, checked against resiliparse's reading of the same page (the second
opinion, analyze/agreement.py):
1. trafilatura reads the page without its fallback extractors (`fast`);
2. when that reading agrees with resiliparse's (shingle F1 >= 0.7, nine pages in ten),
   it stands; otherwise trafilatura reads the page again with its fallbacks
   (readability-lxml, jusText), and the reading closer to resiliparse's is kept;
3. the paragraphs resiliparse finds inside the body that trafilatura left out are
   restored (analyze/second_opinion.py; `extraction_method` says
   `trafilatura+resiliparse` when any were).
The body is then the best of four sources, recorded as `extraction_method`: that page
text, cut after the article's end when the page's schema.org JSON-LD `articleBody` is the
whole article; that `articleBody` when it is clearly longer; the feed's own full content
when the page yields less text than the feed; and, when there is no page text at all (not
fetched, or its fetch failed), the feed's description or summary.

Why this order (bench/extraction_choices.py, bench/RESULTS.md "Issue 31"): on 949
annotated pages of trafilatura's own evaluation and on mozilla/readability's 90 real-site
pages, recall mode (the previous choice) lost precision to related-content blocks at the
article's end, and trafilatura's length heuristic for taking its fallbacks chose wrongly
as often as rightly. Choosing by agreement gains on both sets. Running the fallbacks only
on the pages that disagree costs the same F1 as running them everywhere; the whole still
costs about 1.17 times one plain `trafilatura.extract` (1.06 without the second opinion).
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from ingestor.analyze.agreement import closer_reading, cut_after_article_end, needs_fallback
from ingestor.analyze.edges import trim_edges
from ingestor.analyze.headmeta import first_heading, html_lang, parse_date, scan_head
from ingestor.analyze.second_opinion import fill_from_second_opinion
from ingestor.core.analysis import Body, PageMetadata
from ingestor.core.cleaning import clean_line, clean_text
from ingestor.parse.text import html_to_text

_JSON_LD = re.compile(
    r"<script[^>]*type\s*=\s*[\"']?application/ld\+json[\"']?[^>]*>(.*?)</script>",
    re.IGNORECASE | re.DOTALL,
)
_ARTICLE_TYPES = frozenset(
    {
        "article",
        "newsarticle",
        "blogposting",
        "reportagenewsarticle",
        "analysisnewsarticle",
        "opinionnewsarticle",
        "reviewnewsarticle",
        "backgroundnewsarticle",
        "socialmediaposting",
        "techarticle",
        "scholarlyarticle",
        "report",
        "liveblogposting",
    }
)
# JSON-LD must beat trafilatura by this factor to be "clearly better": articleBody is
# sometimes a teaser, and trafilatura keeps paragraph breaks that JSON-LD often loses.
JSON_LD_ADVANTAGE = 1.3
FEED_CONTENT_ADVANTAGE = 1.1
# What the page hides from its readers, as Readability.js judges it (isProbablyVisible):
# the hidden attribute, aria-hidden (except Wikipedia-style fallback images) and an inline
# display:none or visibility:hidden. trafilatura prunes these before it reads the page,
# except a hidden element that holds the article: a consent wall hides the whole page
# behind aria-hidden while its dialog is open, and some sites collapse the rest of a long
# article with display:none until "read more" is clicked.
HIDDEN_XPATH = (
    "//*[(@hidden"
    " or (@aria-hidden='true' and not(contains(@class, 'fallback-image')))"
    " or contains(translate(@style, ' ', ''), 'display:none')"
    " or contains(translate(@style, ' ', ''), 'visibility:hidden'))"
    " and not(self::body or self::main or self::article or .//main or .//article)"
    " and count(.//p) < 5]"
)


def extract_page(
    html: str,
    url: str,
    fast: bool = False,
    extensive_date_search: bool = False,
    with_metadata: bool = True,
    engine: str = "trafilatura",
    second_opinion: bool = True,
) -> tuple[Body, str | None, PageMetadata]:
    """The page's body text (comments excluded) and how it was read, its JSON-LD
    articleBody, and its metadata.

    `fast` never runs trafilatura's fallback extractors (readability-lxml, jusText), even
    on a page where its reading and resiliparse's disagree (module docstring). htmldate's
    extensive search scans the whole page text for date patterns and costs as much as the
    extraction itself; the feed's timestamp wins over the page's date anyway, so it is off
    unless asked for (meta tags, JSON-LD and the URL are still read).
    Without `with_metadata` (the feed dates the entry), the metadata comes from a scan of
    the page's head tags instead of trafilatura's metadata pass, a third of its cost.
    `second_opinion` checks and fills trafilatura's text with resiliparse's (module
    docstring); without it, trafilatura reads the page once, with its own fallbacks.
    """
    if engine == "resiliparse":
        meta = scan_head(html)
        text = _body_without_head(_resiliparse_text(html), html, meta)
        return _page_body(text, "resiliparse"), json_ld_article_body(html), meta
    data = _trafilatura(html, url, with_metadata, fast or second_opinion, extensive_date_search)
    json_ld_body = json_ld_article_body(html)
    text, method = clean_text(data.get("text")), "trafilatura"
    if second_opinion:
        text, method = _checked_by_second_opinion(text, html, url, fast)
    if not with_metadata:
        meta = scan_head(html)
        return _page_body(_body_without_head(text, html, meta), method), json_ld_body, meta
    title = clean_line(data.get("title"), 1000) or None
    meta = PageMetadata(
        title=title,
        authors=_split_authors(data.get("author")),
        date=precise_date(parse_date(data.get("date")), html),
        site_name=clean_line(data.get("sitename"), 300) or None,
        image=clean_line(data.get("image"), 2000) or None,
        tags=tuple(
            dict.fromkeys(
                clean_line(t, 200)
                for t in [*(data.get("categories") or []), *(data.get("tags") or [])]
                if clean_line(t)
            )
        ),
        canonical_url=clean_line(data.get("url"), 4000) or None,
        html_lang=html_lang(html),
    )
    # trim_edges drops the title wherever the body repeats it, first paragraph included.
    return _page_body(trim_edges(text, title), method), json_ld_body, meta


def _checked_by_second_opinion(text: str, html: str, url: str, fast: bool) -> tuple[str, str]:
    """trafilatura's fast reading, read again with its fallbacks when resiliparse
    disagrees, then filled from resiliparse's; and the extraction method."""
    second = clean_text(_resiliparse_text(html))
    if not fast and needs_fallback(text, second):
        full = _trafilatura(html, url, with_metadata=False, fast=False)
        text = closer_reading(text, clean_text(full.get("text")), second)
    filled = fill_from_second_opinion(text, second) if text else None
    if filled and filled.restored:
        return filled.text, "trafilatura+resiliparse"
    return text, "trafilatura"


def _trafilatura(
    html: str, url: str, with_metadata: bool, fast: bool, extensive_date_search: bool = False
) -> dict[str, Any]:
    """trafilatura's balanced reading of the page, comments excluded, hidden elements
    pruned; `fast` skips its fallback comparison (readability-lxml, jusText)."""
    from trafilatura import bare_extraction

    document = bare_extraction(
        html,
        url=url,
        include_comments=False,
        with_metadata=with_metadata,
        include_tables=True,
        fast=fast,
        prune_xpath=[HIDDEN_XPATH],
        date_extraction_params={
            "extensive_search": extensive_date_search,
            "original_date": True,
            "url": url,
        },
    )
    return {} if document is None else _as_dict(document)


def precise_date(found: datetime | None, html: str) -> datetime | None:
    """trafilatura's date is a day (htmldate's YYYY-MM-DD): the page's own published time
    (article:published_time and the like, with its time and offset) wins when it falls on
    that day, or when trafilatura found none."""
    head = scan_head(html).date
    if head is None or found is None:
        return head or found
    # A day in the page's own zone may be the day before or after in UTC.
    if _midnight(found) and abs((head - found).total_seconds()) < 2 * 86400:
        return head
    return found


def _midnight(moment: datetime) -> bool:
    return (moment.hour, moment.minute, moment.second, moment.microsecond) == (0, 0, 0, 0)


def _as_dict(document: Any) -> dict[str, Any]:
    return document.as_dict() if hasattr(document, "as_dict") else dict(document)


def _page_body(text: str, method: str) -> Body:
    return Body(text, method) if text else Body("", "none")


def _resiliparse_text(html: str) -> str:
    """resiliparse's main-content text (no comments, forms, alt texts or link targets)."""
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.html import HTMLTree

    return extract_plain_text(
        HTMLTree.parse(html),
        main_content=True,
        preserve_formatting=True,
        list_bullets=False,
        alt_texts=False,
        links=False,
        form_fields=False,
        noscript=False,
        comments=False,
    )


def _body_without_head(text: str | None, html: str, meta: PageMetadata) -> str:
    """The extracted text cleaned, without the headline it often starts with (the title,
    then the page's <h1>) and without what sits at its edges."""
    body = clean_text(text)
    for title in (meta.title, first_heading(html)):
        body = _drop_leading_title(body, title)
    return trim_edges(body, meta.title)


def choose_body(
    page: Body,
    json_ld_text: str | None,
    feed_content: str | None,
    use_json_ld: bool = True,
    feed_summary: str | None = None,
) -> Body:
    """Pick the body source; see the module docstring for the rule."""
    body = page if page.text else Body("", "none")
    if use_json_ld and json_ld_text and body.text:
        body = Body(cut_after_article_end(body.text, json_ld_text), body.method)
    if (
        use_json_ld
        and json_ld_text
        and (
            len(json_ld_text) > JSON_LD_ADVANTAGE * len(body.text)
            # trafilatura itself falls back to articleBody on thin pages, flattening its
            # paragraphs: the same words from JSON-LD keep them.
            or json_ld_text.split() == body.text.split()
        )
    ):
        body = Body(json_ld_text, "json_ld")
    if feed_content and len(feed_content) > FEED_CONTENT_ADVANTAGE * len(body.text):
        body = Body(feed_content, "feed_content")
    if not body.text and feed_summary:
        body = Body(feed_summary, "feed_summary")
    return body


def json_ld_article_body(html: str) -> str | None:
    """The longest schema.org Article `articleBody` in the page's JSON-LD, as plain text."""
    best: str | None = None
    for block in _JSON_LD.findall(html[:3_000_000]):
        try:
            data = json.loads(block.strip())
        except ValueError:
            continue
        for node in _walk_json(data, depth=0):
            kind = node.get("@type")
            kinds = kind if isinstance(kind, list) else [kind]
            if not any(isinstance(k, str) and k.lower() in _ARTICLE_TYPES for k in kinds):
                continue
            body = node.get("articleBody")
            if isinstance(body, str):
                text = html_to_text(body)
                if text and (best is None or len(text) > len(best)):
                    best = text
    return best


def _walk_json(data: Any, depth: int) -> list[dict[str, Any]]:
    if depth > 6:
        return []
    if isinstance(data, list):
        return [n for item in data[:100] for n in _walk_json(item, depth + 1)]
    if isinstance(data, dict):
        nodes = [data]
        graph = data.get("@graph")
        if graph is not None:
            nodes.extend(_walk_json(graph, depth + 1))
        return nodes
    return []


def _drop_leading_title(text: str, title: str | None) -> str:
    if not title or not text:
        return text
    first, _, rest = text.partition("\n\n")
    return rest if first.strip() == title.strip() else text


def _split_authors(value: Any) -> tuple[str, ...]:
    if not isinstance(value, str):
        return ()
    return tuple(dict.fromkeys(a for a in (clean_line(p, 200) for p in value.split(";")) if a))
