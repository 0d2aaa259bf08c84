"""The body's second opinion (resiliparse filling trafilatura's gaps) and hidden elements."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ingestor.analyze.extract import extract_page
from ingestor.analyze.jobs import ArticleJob, analyze_article
from ingestor.analyze.second_opinion import fill_from_second_opinion
from tests.conftest import LOREM_EN, article_html

A, B, C, D = LOREM_EN
DEK = (
    "The northern districts have waited for a tram since the old line closed in 1962, and "
    "the new plan is the fourth the council has voted on."
)


def paragraphs(*lines: str) -> str:
    return "\n\n".join(lines)


def test_a_prose_paragraph_missing_inside_the_body_is_restored_in_place():
    filled = fill_from_second_opinion(paragraphs(A, C, D), paragraphs("Home World", A, DEK, C, D))
    assert filled.restored == 1
    assert filled.text == paragraphs(A, DEK, C, D)


def test_what_lies_after_the_body_is_never_added():
    teaser = "Elsewhere: the harbour authority has published its plans for the new quay walls."
    comment = (
        "I have lived here for thirty years and this is the best news the council has given us."
    )
    first = paragraphs(A, B)
    filled = fill_from_second_opinion(first, paragraphs(A, B, teaser, comment))
    assert filled == (filled.__class__(first, 0))


def test_short_lines_and_lines_without_a_sentence_end_are_not_restored():
    promo = "Send yourself a link to download the app."
    label = "Photo gallery: the tram through the years in fifteen pictures and more"
    first = paragraphs(A, C)
    filled = fill_from_second_opinion(first, paragraphs(A, promo, label, C))
    assert filled.restored == 0 and filled.text == first


def test_text_the_first_has_under_other_line_breaks_is_not_added_twice():
    # trafilatura sometimes keeps a source line break inside a paragraph: the same words
    # in other lines are the same paragraph.
    words = B.split()
    broken = paragraphs(" ".join(words[:9]), " ".join(words[9:20]), " ".join(words[20:]))
    first = paragraphs(A, broken, C)
    filled = fill_from_second_opinion(first, paragraphs(A, B, C))
    assert filled.restored == 0 and filled.text == first


def test_a_paragraph_the_page_repeats_back_to_back_is_kept_twice():
    filled = fill_from_second_opinion(paragraphs(A, B), paragraphs(A, B, B))
    assert filled.text == paragraphs(A, B, B) and filled.restored == 1
    # A repeat the first already has is not added a third time.
    assert fill_from_second_opinion(paragraphs(A, B, B), paragraphs(A, B, B)).restored == 0
    # Nor is a repeated short label.
    assert (
        fill_from_second_opinion(
            paragraphs(A, "Advertisement"), paragraphs(A, "Advertisement", "Advertisement")
        ).restored
        == 0
    )


def test_no_common_ground_leaves_the_first_alone():
    assert fill_from_second_opinion(A, "").text == A
    assert fill_from_second_opinion(A, paragraphs(DEK, D)).restored == 0
    assert fill_from_second_opinion("", A).text == ""


def test_the_page_says_which_extractors_made_its_body():
    repeated = article_html("Tram line", [A, B, B, C])
    body, _ld, _meta = extract_page(repeated, "http://127.0.0.1/a.html", with_metadata=False)
    assert body.method == "trafilatura+resiliparse"
    assert body.text == paragraphs(A, B, B, C)
    plain = article_html("Tram line", [A, B, C])
    body, _ld, _meta = extract_page(plain, "http://127.0.0.1/a.html", with_metadata=False)
    assert body.method == "trafilatura" and body.text == paragraphs(A, B, C)
    # Turned off, the page is trafilatura's alone.
    job = ArticleJob(
        url="http://127.0.0.1/a.html",
        page=repeated.encode(),
        title="Tram line",
        feed_content=None,
        page_metadata=False,
        second_opinion=False,
    )
    analysis = analyze_article(job)
    assert analysis.body.method == "trafilatura"
    assert analysis.body.text == paragraphs(A, B, C)


def test_what_the_page_hides_from_readers_is_not_in_the_body():
    hidden = [
        '<div aria-hidden="true"><p>Menu Home World Sport Culture Weather Podcasts Video '
        "Newsletters Games Crosswords Recipes</p></div>",
        "<p hidden>Subscribe now to read every story on the site for one euro a week.</p>",
        '<div style="display: none"><p>Sign in to your account to save this article for '
        "later and read it on any device.</p></div>",
        '<p style="visibility:hidden">Cookie settings: we use cookies to measure the '
        "audience of this site and to show you personalised advertising.</p>",
    ]
    page = article_html("Tram line", [A, hidden[0], B, hidden[1], C, hidden[2], D, hidden[3]])
    for with_metadata in (True, False):
        body, _ld, _meta = extract_page(
            page, "http://127.0.0.1/a.html", with_metadata=with_metadata
        )
        assert body.text == paragraphs(A, B, C, D), with_metadata


MORE = [
    "The transport authority will publish the timetable for the new line in the spring, "
    "after a consultation with the residents of the districts it serves.",
    "Tickets will cost the same as on the rest of the network, and the monthly pass will "
    "be valid on the new line from its first day of service.",
]


def test_a_hidden_element_that_holds_the_article_is_kept():
    article = "".join(f"<p>{p}</p>" for p in LOREM_EN)
    # A consent wall: the page is aria-hidden while its dialog is open.
    wall = (
        '<html lang="en"><head><title>Tram line</title></head><body>'
        f'<div id="page" aria-hidden="true"><article><h1>Tram line</h1>{article}</article></div>'
        '<div role="dialog"><p>We value your privacy. We and our partners store and access '
        "information on your device to show you personalised advertising.</p>"
        "<button>Accept all</button></div></body></html>"
    )
    body, _ld, _meta = extract_page(wall, "http://127.0.0.1/a.html", with_metadata=False)
    assert body.text.startswith(paragraphs(*LOREM_EN))
    # The rest of a long article collapsed until "read more" is clicked.
    rest = "".join(f"<p>{p}</p>" for p in [*MORE, *LOREM_EN[:3]])
    collapsed = (
        '<html lang="en"><head><title>Tram line</title></head><body><article>'
        f'<h1>Tram line</h1><p>{LOREM_EN[3]}</p><div style="display: none">{rest}</div>'
        "<button>Read more</button></article></body></html>"
    )
    body, _ld, _meta = extract_page(collapsed, "http://127.0.0.1/a.html", with_metadata=False)
    for paragraph in [*MORE, *LOREM_EN]:
        assert paragraph in body.text


_POOL = [*LOREM_EN, DEK, *MORE, "Advertisement", "Read more", "Home World Sport"]


@settings(max_examples=200, deadline=None)
@given(
    first=st.lists(st.sampled_from(_POOL), max_size=8),
    second=st.lists(st.sampled_from(_POOL), max_size=12),
)
def test_the_first_text_is_never_cut_or_reordered(first, second):
    filled = fill_from_second_opinion(paragraphs(*first), paragraphs(*second))
    lines = filled.text.split("\n\n") if filled.text else []
    # Every line of the first, in its order, with only lines of the second between them.
    remaining = iter(lines)
    assert all(any(line == wanted for line in remaining) for wanted in first)
    assert len(lines) == len(first) + filled.restored
    assert set(lines) <= set(first) | set(second)
