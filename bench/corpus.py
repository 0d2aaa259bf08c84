"""Real-world-like article texts and page templates for the quality and speed benchmarks.

Expected bodies are known exactly: each page is rendered from its paragraphs, so the
paragraphs are the hand-checked answer and everything else on the page is noise.
"""

from __future__ import annotations

import html
import json
import random
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import lxml.html

REPO = Path(__file__).resolve().parent.parent
SEEDS = REPO / "seeds"


# Faker locales whose lorem provider has the language's own words (others fall back to
# Latin), by the language they are.
FAKER_LOCALES = {
    "de": "de_DE",
    "fr": "fr_FR",
    "es": "es_ES",
    "it": "it_IT",
    "nl": "nl_NL",
    "pl": "pl_PL",
    "ru": "ru_RU",
    "uk": "uk_UA",
    "cs": "cs_CZ",
    "da": "da_DK",
    "el": "el_GR",
    "ar": "ar",
    "he": "he_IL",
    "fa": "fa_IR",
    "vi": "vi_VN",
    "ja": "ja_JP",
    "zh": "zh_CN",
}


@dataclass(frozen=True)
class Story:
    name: str
    lang: str
    title: str
    paragraphs: tuple[str, ...]


def _fold(text: str) -> str:
    return re.sub(r"\s+", " ", unicodedata.normalize("NFC", text)).strip()


def _seed_french() -> Story:
    lines = [_fold(x) for x in (SEEDS / "000_ade475924e1c9f94.txt").read_text("utf-8").splitlines()]
    lines = [x for x in lines if x]
    body = [x for x in lines[4:] if not x.startswith(("A lire:", "Partager", "SOURCE:"))]
    return Story("fr-irak-syrie", "fr", lines[1], tuple(body))


def _seed_page(name: str, lang: str, container: str) -> Story:
    root = lxml.html.fromstring((SEEDS / "articles" / f"{name}.html").read_bytes())
    title = _fold(root.findtext(".//h1"))
    paragraphs = tuple(_fold(p.text_content()) for p in root.xpath(f"{container}//p"))
    return Story(name, lang, title, paragraphs)


EXTRA_STORIES = [
    Story(
        "en-library",
        "en",
        "City library reopens after two-year renovation",
        (
            "The central library reopened its doors on Saturday after a renovation that took two "
            "years and cost the city eleven million euros, more than twice the original budget.",
            "Visitors queued along the river promenade from early morning to see the new reading "
            "rooms, which now occupy the former printing hall next door and offer four hundred "
            "seats, a recording studio and a workshop with 3D printers.",
            "The head librarian said the building had been designed for people who want to stay "
            "the whole day: opening hours have been extended until ten in the evening, and the "
            "café on the ground floor is run by a cooperative that trains young unemployed people.",
            "Not everyone is convinced. A group of residents complained that the children's "
            "section has moved to the third floor and that the lifts were already out of order on "
            "the opening day. The city promised to have them repaired within the week.",
        ),
    ),
    Story(
        "en-drought-farmers",
        "en",
        "Farmers count losses as dry summer cuts harvest",
        (
            "Grain farmers in the eastern plains expect their harvest to fall by a third this year "
            "after the driest summer since records began, the national farmers' union said.",
            "Wheat yields are down sharply on light soils, where crops ripened too early and grains "
            "stayed small. Maize, which is harvested later, could suffer even more if the rain does "
            "not return in the coming weeks.",
            "The union has asked the government to speed up the payment of subsidies and to allow "
            "farmers to graze animals on land that is normally set aside for biodiversity.",
            "Economists warn that lower harvests in several countries at once could push up the "
            "price of bread and animal feed next spring, although global stocks remain high.",
        ),
    ),
    Story(
        "en-chess",
        "en",
        "Teenager wins national chess title in final-round thriller",
        (
            "A sixteen-year-old student from the northern coast became the youngest national chess "
            "champion in half a century on Sunday, winning a tense final game that lasted more than "
            "six hours.",
            "She needed only a draw against the defending champion but chose a sharp opening and "
            "sacrificed a knight on move twenty-three, a decision commentators first called reckless.",
            "After her opponent missed a defensive resource in time trouble, she converted her extra "
            "pawn into a winning endgame and shook hands to loud applause from the packed hall.",
            "She will represent the country at the world junior championship in October and said she "
            "plans to finish her school exams before deciding whether to turn professional.",
        ),
    ),
    Story(
        "en-rail-bridge",
        "en",
        "Old railway bridge to become a park for cyclists",
        (
            "A disused railway bridge that has spanned the valley for more than a century will be "
            "turned into a linear park for walkers and cyclists, the regional council decided.",
            "The steel structure, closed to trains since 1994, had been threatened with demolition "
            "because of rust and falling rivets. Engineers now say it can be saved with a new deck "
            "and a protective coating.",
            "The park will connect two villages that are currently linked only by a busy road "
            "without a cycle lane. Local associations collected twelve thousand signatures in "
            "favour of the project.",
            "Works are due to start next spring and should last eighteen months, with a budget of "
            "six million euros shared between the region and a European fund.",
        ),
    ),
    Story(
        "en-vaccine-trial",
        "en",
        "Hospital launches trial of new vaccine against seasonal flu",
        (
            "The university hospital has started recruiting volunteers for a clinical trial of a "
            "new vaccine designed to protect against several strains of seasonal flu at once.",
            "The researchers hope the vaccine will remain effective for several years, instead of "
            "having to be updated every autumn as current vaccines are.",
            "About two thousand adults aged between eighteen and sixty-five will take part. Half "
            "of them will receive the new vaccine and half the standard one, without knowing which.",
            "First results are expected at the end of next year. The team stressed that volunteers "
            "will be followed closely and can leave the trial at any time.",
        ),
    ),
]


def stories() -> list[Story]:
    return [
        _seed_french(),
        _seed_page("en-harbour-wind-farm", "en", "//div[@class='article-body']"),
        _seed_page("de-bahn-streik", "de", "//div[@class='text']"),
        _seed_page("es-sequia-cataluna", "es", "//div[@class='article-body']"),
        _seed_page("ja-tohoku-ooyuki", "ja", "//div[@class='text']"),
        *EXTRA_STORIES,
    ]


# --- page templates: the same body in the kinds of pages news sites really serve ---

_MENU = [
    "Home",
    "World",
    "Politics",
    "Business",
    "Science",
    "Sport",
    "Culture",
    "Opinion",
    "Video",
    "Podcasts",
    "Newsletters",
    "Subscribe",
]
_RELATED = [
    "Parliament votes on the new budget",
    "Storm warning for the weekend",
    "Inflation slows for the third month",
    "Local team reaches the cup final",
    "Museum returns stolen paintings",
    "New metro line opens in the east",
]


def _p(paragraphs: tuple[str, ...] | list[str]) -> str:
    return "\n".join(f"<p>{html.escape(p)}</p>" for p in paragraphs)


def _menu() -> str:
    return (
        "<nav><ul>"
        + "".join(f"<li><a href='/{m.lower()}'>{m}</a></li>" for m in _MENU)
        + ("</ul></nav>")
    )


def _related(rng: random.Random) -> str:
    items = rng.sample(_RELATED, 4)
    return (
        "<aside class='related'><h3>Read more</h3><ul>"
        + "".join(f"<li><a href='/news/{i}'>{html.escape(t)}</a></li>" for i, t in enumerate(items))
        + "</ul></aside>"
    )


def _comments() -> str:
    return (
        "<section id='comments'><h2>Comments (3)</h2>"
        "<div class='comment'><b>reader42</b><p>I completely disagree with this, the "
        "numbers quoted here are misleading and everyone knows it.</p></div>"
        "<div class='comment'><b>anna_k</b><p>Thanks for the clear explanation, it was "
        "about time somebody wrote about it.</p></div>"
        "<div class='comment'><b>tom</b><p>Same thing happened in my town last year.</p>"
        "</div></section>"
    )


def render_page(story: Story, template: str, seed: int = 0) -> str:
    """One of: news, blog, portal (comments, inline related, ads), jsonld (body only in
    JSON-LD, as on pages rendered by JavaScript)."""
    rng = random.Random(f"{story.name}/{template}/{seed}")
    title = html.escape(story.title)
    paras = list(story.paragraphs)
    head = (
        f"<meta charset='utf-8'><title>{title} | Example Times</title>"
        "<meta property='og:site_name' content='Example Times'>"
    )
    cookie = (
        "<div class='cookie-banner'><p>We use cookies to personalise content and ads "
        "and to analyse our traffic.</p><button>Accept all</button></div>"
    )
    footer = (
        "<footer><ul><li><a href='/about'>About us</a></li><li><a href='/privacy'>"
        "Privacy policy</a></li><li><a href='/contact'>Contact</a></li></ul>"
        "<p>© 2024 Example Times. All rights reserved.</p></footer>"
    )
    if template == "news":
        body = (
            f"{cookie}<header>{_menu()}</header><main><article><h1>{title}</h1>"
            f"<p class='byline'>By Staff Reporter · 4 min read</p>"
            f"<figure><img src='/i.jpg'><figcaption>Photo: archive picture from a "
            f"different event.</figcaption></figure>{_p(paras)}"
            f"<div class='share'>Share this article: Facebook Twitter Email</div>"
            f"</article>{_related(rng)}</main>{footer}"
        )
    elif template == "blog":
        half = len(paras) // 2
        body = (
            f"<div id='top'>{_menu()}</div><div class='wrap'><div class='post'>"
            f"<h2 class='post-title'>{title}</h2><div class='entry'>{_p(paras[:half])}"
            f"<div class='newsletter'><p>Get our best stories in your inbox every morning."
            f"</p><input placeholder='Email'><button>Sign up</button></div>"
            f"{_p(paras[half:])}</div><div class='tags'>Tags: news, local</div></div>"
            f"<div class='sidebar'>{_related(rng)}<div class='ad'>Advertisement</div>"
            f"</div></div>{footer}"
        )
    elif template == "portal":
        first, rest = paras[:1], paras[1:]
        body = (
            f"{cookie}{_menu()}<div class='breadcrumbs'>Home › News › Region</div>"
            f"<article class='story'><h1>{title}</h1><div class='story-body'>{_p(first)}"
            f"<div class='inline-related'><strong>Read also:</strong> <a href='/x'>"
            f"{html.escape(rng.choice(_RELATED))}</a></div><div class='ad-slot'>"
            f"Advertisement</div>{_p(rest)}</div></article>{_comments()}"
            f"<div class='most-read'><h3>Most read</h3>{_related(rng)}</div>{footer}"
        )
    elif template == "jsonld":
        ld = {
            "@context": "https://schema.org",
            "@type": "NewsArticle",
            "headline": story.title,
            "articleBody": "\n".join(paras),
        }
        head += (
            "<script type='application/ld+json'>"
            + json.dumps(ld, ensure_ascii=False).replace("</", "<\\/")
            + "</script>"
        )
        body = (
            f"{_menu()}<main><h1>{title}</h1><div id='app' class='article-root'>"
            f"<p>Loading…</p></div>{_related(rng)}</main>{footer}"
        )
    else:
        raise ValueError(template)
    return f"<!DOCTYPE html><html lang='{story.lang}'><head>{head}</head><body>{body}</body></html>"


TEMPLATES = ("news", "blog", "portal", "jsonld")

_SUBJECTS = [
    "The council",
    "A local company",
    "The ministry",
    "Residents",
    "The university",
    "Farmers",
    "The regional bank",
    "Hospital staff",
    "The port authority",
    "Teachers",
    "The football club",
    "Volunteers",
    "The museum",
    "Police officers",
    "Engineers",
    "The airline",
    "Shop owners",
    "The orchestra",
    "Researchers",
    "The railway operator",
    "The fire brigade",
    "Parents",
    "The water company",
]
_VERBS = [
    "announced",
    "criticised",
    "welcomed",
    "postponed",
    "approved",
    "rejected",
    "presented",
    "questioned",
    "defended",
    "celebrated",
    "investigated",
    "funded",
    "delayed",
    "proposed",
    "cancelled",
    "reviewed",
]
_OBJECTS = [
    "a new bridge",
    "the budget for next year",
    "longer opening hours",
    "a study on air quality",
    "the merger of two schools",
    "a wind farm project",
    "higher parking fees",
    "the renovation of the station",
    "a summer festival",
    "new rules for rental flats",
    "a shortage of nurses",
    "the closure of a factory",
    "a plan to plant trees",
    "cheaper public transport",
    "a hospital extension",
    "a cycle lane on the ring road",
    "the sale of the old barracks",
]
_TAILS = [
    "after months of debate",
    "despite strong opposition",
    "on Monday morning",
    "in a statement on its website",
    "during a packed public meeting",
    "according to local media",
    "before the summer holidays",
    "for the third time",
    "with the support of the mayor",
    "to the surprise of many observers",
]


def synthetic_paragraphs(seed: int, paragraphs: int = 4, sentences: int = 5) -> list[str]:
    """News-like English paragraphs; two seeds share almost no word 3-shingles
    (estimated Jaccard below 0.2), so their articles are never near duplicates."""
    rng = random.Random(seed)
    return [
        " ".join(
            f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} "
            f"{rng.choice(_TAILS)}, {rng.randint(2, 990)} people said."
            for _ in range(sentences)
        )
        for _ in range(paragraphs)
    ]


def synthetic_story(seed: int, base: Story) -> Story:
    """A distinct English article: one real paragraph from `base` for texture, then
    synthetic_paragraphs()."""
    real = random.Random(seed).choice(base.paragraphs)
    paragraphs = (real, *synthetic_paragraphs(seed))
    return Story(f"{base.name}-{seed}", "en", f"{base.title} ({seed})", paragraphs)


def padded_page(story: Story, target_bytes: int, seed: int) -> str:
    """A page of about target_bytes: the portal template (menu, inline related link, ad
    slot, comments, most-read list) plus what makes real pages heavy: one mega-menu, ad
    containers, and mostly inline scripts, JSON state and styles."""
    page = render_page(story, "portal", seed)
    rng = random.Random(seed)
    menu = (
        "<ul class='mega-menu'>"
        + "".join(
            f"<li><a href='/s/{rng.randint(0, 99999)}'>{rng.choice(_RELATED)}</a></li>"
            for _ in range(40)
        )
        + "</ul>"
    )
    filler: list[str] = [menu]
    size = len(page) + len(menu)
    while size < target_bytes:
        block = rng.choice(
            [
                "<script>window.__STATE__="
                + json.dumps({"k": [rng.random() for _ in range(60)]})
                + ";</script>",
                "<style>"
                + "".join(
                    f".c{rng.randint(0, 9999)}{{margin:{rng.randint(0, 9)}px}}" for _ in range(40)
                )
                + "</style>",
                "<script>(function(){var s=document.createElement('script');s.src='https://ads."
                "example/tag.js?slot=" + str(rng.randint(0, 99999)) + "';document.head."
                "appendChild(s);})();</script>" * 8,
                f"<div class='ad-container' data-slot='{rng.randint(0, 9999)}'><div class="
                "'ad-label'>Advertisement</div></div>",
            ]
        )
        filler.append(block)
        size += len(block)
    return page.replace("</body>", "".join(filler) + "</body>")
