"""What extraction leaves at a body's edges: prompts, related links, source lines and
glued photo credits go; prose that merely starts like them stays."""

from __future__ import annotations

import pytest

from ingestor.analyze.edges import trim_edges
from ingestor.analyze.extract import extract_page
from tests.conftest import article_html

BODY = [
    "The council approved the budget on Monday after a debate that lasted six hours.",
    "Read more about how the plan was financed by three banks and the city council.",
    "Source: the ministry said the figures were provisional and would be revised.",
]


@pytest.mark.parametrize(
    "noise",
    [
        "Share this article",
        "Partager Cet Article",
        "Artikel teilen",
        "Compartir en Twitter",
        "Read more",
        "Read more:",
        "Lesen Sie auch",
        "Leer más »",
        "A lire: Irak : la Résistance islamique tire un drone",
        "Lesen Sie auch: Streik bei der Bahn geht weiter",
        "Sign up for our daily newsletter",
        "Abonnez-vous à notre newsletter",
        "Advertisement",
        "Anzeige",
    ],
)
def test_prompt_lines_go_wherever_they_stand(noise):
    text = "\n\n".join([BODY[0], noise, *BODY[1:]])
    assert trim_edges(text) == "\n\n".join(BODY)


def test_a_last_source_line_and_glued_credits_go_and_the_title_is_not_repeated():
    text = "\n\n".join(
        [
            "Bases come under fire",
            "A soldier stands near a combat vehicle on 22 June 2021.© AFP",
            "Lawmakers talk during a rally in Washington. (AFP photo)",
            "The strikes follow weeks of attacks. Photo: Jane Doe/Reuters",
            *BODY,
            "SOURCE: FRENCH PRESS TV",
        ]
    )
    assert trim_edges(text, "Bases come under fire") == "\n\n".join(
        [
            "A soldier stands near a combat vehicle on 22 June 2021.",
            "Lawmakers talk during a rally in Washington.",
            "The strikes follow weeks of attacks.",
            *BODY,
        ]
    )


def test_prose_that_starts_like_a_prompt_stays():
    prose = [
        "Share prices rose by four percent after the announcement, traders said on Friday.",
        "Source code for the app was published on Tuesday under an open licence.",
        "Partager les coûts entre les communes reste la principale difficulté du projet.",
        "The photographer, who asked not to be named, said the image was taken in 2019.",
    ]
    assert trim_edges("\n\n".join(prose)) == "\n\n".join(prose)


def test_the_extracted_page_loses_its_share_and_read_more_lines():
    paragraphs = [
        "The tram line to the harbour will open in May, two years later than planned.",
        "Read more",
        "Engineers found cracks in the bridge that carries the tracks over the river, "
        "and the city had to order new steel beams from a mill in the north.",
        "Share this article",
        "The first trams will run every ten minutes, and every five at rush hour.",
    ]
    page, _json_ld, _meta = extract_page(
        article_html("Tram line opens in May", paragraphs), "http://127.0.0.1/a.html"
    )
    text = page.text
    assert "Read more" not in text and "Share this article" not in text
    for kept in (paragraphs[0], paragraphs[2], paragraphs[4]):
        assert kept in text
