"""Two readings of a page checked against each other: when trafilatura's fallbacks run,
which reading is kept, and where JSON-LD says the article ends."""

from __future__ import annotations

import json

import pytest

from ingestor.analyze import extract
from ingestor.analyze.agreement import (
    agreement,
    closer_reading,
    cut_after_article_end,
    needs_fallback,
)
from ingestor.analyze.extract import choose_body, extract_page
from tests.conftest import LOREM_EN, distinct_story

A, B, C, D = LOREM_EN
TEASER = "Renters in the old town face a new levy; the council explains who must pay."
RELATED = [
    "Harbour authority publishes plans for the new quay walls after years of delay.",
    "Why the ring road is congested every morning, and what the city plans to do.",
    "Newsletter: get the week's most important city news every Friday in your inbox.",
]


def paragraphs(*lines: str) -> str:
    return "\n\n".join(lines)


def test_agreement_is_one_for_the_same_words_and_zero_for_unrelated_texts():
    article = paragraphs(A, B, C)
    assert agreement(article, article) == 1.0
    # Line breaks and paragraph joins do not matter, the words and their order do.
    assert agreement(article, " ".join([A, B, C])) == 1.0
    assert agreement(article, paragraphs(*distinct_story(7))) == 0.0
    assert agreement(article, "") == 0.0
    assert 0.5 < agreement(article, paragraphs(A, B)) < 1.0


def test_a_fast_reading_that_resiliparse_confirms_needs_no_fallback():
    # resiliparse keeps a portal's menus and footers: the article still dominates.
    second = paragraphs("Home World Sport", A, B, C, D, "Copyright 2024 Example News.")
    assert not needs_fallback(paragraphs(A, B, C, D), second)


def test_a_fast_reading_of_the_wrong_block_or_a_teaser_needs_the_fallback():
    second = paragraphs(A, B, C, D)
    assert needs_fallback(TEASER, second)
    assert needs_fallback(A, second)  # a quarter of the article
    assert needs_fallback("", second)
    # Nothing to check against: trafilatura's own comparison decides.
    assert needs_fallback(paragraphs(A, B), "")


def test_the_reading_closer_to_the_second_opinion_is_kept():
    second = paragraphs("Home World", A, B, C, D, *RELATED)
    teaser_only = TEASER
    article = paragraphs(A, B, C, D)
    assert closer_reading(teaser_only, article, second) == article
    # The fallback that brings the portal's teasers with it agrees less than the article.
    with_teasers = paragraphs(TEASER, *distinct_story(3, paragraphs=8))
    assert closer_reading(article, with_teasers, second) == article


def test_ties_keep_the_fast_reading_and_no_second_opinion_keeps_trafilaturas_choice():
    article = paragraphs(A, B)
    assert closer_reading(article, article, paragraphs(A, B)) == article
    assert closer_reading(article, "", paragraphs(A, B)) == article
    assert closer_reading("", article, paragraphs(A, B)) == article
    assert closer_reading(A, article, "") == article


def test_what_follows_the_last_paragraph_of_article_body_is_cut():
    body = paragraphs(A, B, C, D, *RELATED)
    article_body = "\n".join([A, B, C, D])
    assert cut_after_article_end(body, article_body) == paragraphs(A, B, C, D)


@pytest.mark.parametrize(
    ("article_body", "why"),
    [
        (A, "a teaser: shorter than most of the body"),
        (None, "no JSON-LD"),
        (paragraphs(*distinct_story(9, paragraphs=6)), "another article: nothing shared"),
    ],
)
def test_the_body_is_left_whole_when_article_body_cannot_mark_its_end(article_body, why):
    body = paragraphs(A, B, C, D, *RELATED)
    assert cut_after_article_end(body, article_body) == body, why


def test_a_body_that_ends_with_the_article_is_returned_as_it_is():
    body = paragraphs(A, B, C, D)
    assert cut_after_article_end(body, " ".join([A, B, C, D])) is body


def page_html(article: str, head: str = "", after: str = "") -> str:
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>Tram line extended</title>{head}</head><body>"
        "<nav><a href='/'>Home</a> <a href='/world'>World</a></nav>"
        f"<article><h1>Tram line extended</h1>{article}</article>{after}"
        "<footer>Copyright 2024 Example News.</footer></body></html>"
    )


def html_paragraphs(*lines: str) -> str:
    return "".join(f"<p>{line}</p>" for line in lines)


@pytest.fixture
def trafilatura_passes(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """The `fast` flag of each trafilatura pass extract_page makes."""
    passes: list[bool] = []
    real = extract._trafilatura

    def counted(*args: object, **kwargs: object) -> dict[str, object]:
        passes.append(bool(kwargs["fast"]) if "fast" in kwargs else bool(args[3]))
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(extract, "_trafilatura", counted)
    return passes


def test_a_page_both_extractors_agree_on_is_read_once(trafilatura_passes):
    page, _, _ = extract_page(page_html(html_paragraphs(A, B, C, D)), "https://n.example/a")
    assert trafilatura_passes == [True]
    assert page.text == paragraphs(A, B, C, D)


def staged_page() -> str:
    """A lead in a `div.article-body` under the headline, the article's sections in a
    plain grid after it: resiliparse takes the block named the article body and stops
    there, trafilatura reads on."""
    sections = "".join(f"<h2>Part {i}</h2><p>{p}</p>" for i, p in enumerate(SECTIONS))
    return (
        '<html lang="en"><head><title>Lease or buy a car?</title></head><body>'
        "<nav><a href='/'>Home</a></nav><div class='stage'><h1>Lease or buy a car?</h1>"
        f"<div class='article-body'><p>{A}</p></div></div>"
        f"<div class='content'><div class='row'><div class='col'>{sections}</div></div></div>"
        "<footer>Imprint</footer></body></html>"
    )


SECTIONS = distinct_story(5, paragraphs=6)


def test_a_page_they_disagree_on_is_read_again_with_the_fallbacks(trafilatura_passes):
    page, _, _ = extract_page(staged_page(), "https://n.example/b", with_metadata=False)
    assert trafilatura_passes == [True, False]
    # Both of trafilatura's readings hold the whole article: it is kept.
    assert page.text.startswith(A) and all(section in page.text for section in SECTIONS)


def test_fast_mode_never_runs_the_fallbacks(trafilatura_passes):
    extract_page(staged_page(), "https://n.example/b", fast=True, with_metadata=False)
    assert trafilatura_passes == [True]


def test_related_links_after_the_article_that_json_ld_ends_are_not_in_the_body():
    article_body = {"@type": "NewsArticle", "articleBody": "\n".join(LOREM_EN)}
    head = f'<script type="application/ld+json">{json.dumps(article_body)}</script>'
    html = page_html(
        html_paragraphs(*LOREM_EN) + "<h2>More on this topic</h2>" + html_paragraphs(*RELATED),
        head,
    )
    page, json_ld, _ = extract_page(html, "https://n.example/c")
    assert RELATED[0] in page.text  # trafilatura keeps them: they are inside <article>
    body = choose_body(page, json_ld, None)
    assert body.text == paragraphs(*LOREM_EN)
    # Without JSON-LD the page's reading is the body.
    assert choose_body(page, json_ld, None, use_json_ld=False).text == page.text
