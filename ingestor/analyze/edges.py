"""What extraction leaves at a body's edges that readers never want (pure functions).

trafilatura keeps lines a page puts around the article: "Share this article", "Read more",
newsletter prompts, "SOURCE: ..." lines, the title repeated in the body, and photo credits
glued to the end of a paragraph ("... in Washington. © AFP"). Only whole short lines that
are nothing but such a prompt are dropped (a sentence that starts with "Read more" stays),
and only credit marks at a paragraph's very end after its last sentence.
"""

from __future__ import annotations

import re

# Longer than this, a line is prose, whatever it starts with.
_MAX_PROMPT_CHARS = 80

# Whole-line prompts, in the languages the project sees most (a trailing colon, arrow,
# ellipsis or count is allowed: "Partager (12)", "Read more →").
_PROMPTS = (
    # share
    r"share( this( article| story| post)?)?( on (facebook|twitter|x|linkedin|whatsapp))?",
    r"partager( cet article| sur (facebook|twitter|x))?",
    r"(artikel )?teilen",
    r"compartir( (este|en) (artículo|facebook|twitter))?",
    r"condividi( (questo )?articolo)?",
    r"compartilhe?( (este|esta) (artigo|matéria))?",
    r"delen",
    # read more (also as the start of a related link, below)
    *(
        _READ_MORE := (
            r"read (more|also|next|the full (story|article))",
            r"see also",
            r"continue reading",
            r"(à )?lire (aussi|également|la suite)",
            r"(à|a) lire",
            r"(lesen sie|lies) (auch|mehr|weiter)",
            r"weiterlesen",
            r"mehr zum thema",
            r"(leer|lea) (más|también)",
            r"leggi (anche|di più)",
            r"leia (mais|também)",
            r"lees (meer|ook)",
        )
    ),
    # newsletter / subscription
    r"(sign up|subscribe)( (to|for) (our|the) [\w' ]{0,30}newsletter)?",
    r"(abonnez-vous|inscrivez-vous)( à (notre|la) newsletter)?",
    r"newsletter( abonnieren)?",
    r"(suscríbete|suscribirse)( a (nuestro|nuestra) (boletín|newsletter))?",
    r"iscriviti( alla newsletter)?",
    # the page's furniture
    r"advertisement",
    r"publicité",
    r"anzeige",
    r"publicidad",
    r"pubblicità",
    r"(related|related articles|related stories|most read|top stories)",
)
_PROMPT = re.compile(
    r"^(?:" + "|".join(_PROMPTS) + r")\s*(?:[:»›→>.…]+|\(\d+\))?\s*$", re.IGNORECASE
)
# A related link: "A lire: Irak : la Résistance islamique tire un drone".
_RELATED_LINK = re.compile(r"^(?:" + "|".join(_READ_MORE) + r")\s*:\s*\S", re.IGNORECASE)
# The last line "SOURCE: FRENCH PRESS TV", "Quelle: dpa", "Fuente: EFE" (not a sentence).
_SOURCE_LINE = re.compile(
    r"^(?:source|sources|quelle|quellen|fuente|fonte|bron)\s*:\s*[^.!?]{1,60}$",
    re.IGNORECASE,
)
# A credit glued after the paragraph's last sentence: "... le 22 juin 2021.© AFP",
# "... on Monday. (AFP Photo)", "... weekend. Photo: Jane Doe/Reuters".
_GLUED_CREDIT = re.compile(
    r"(?<=[.!?»\"”])\s*(?:©\s*[\w .&/'-]{1,40}"
    r"|\((?:[\w .&/'-]{1,30} )?(?:photo|foto|image|bild)(?: [\w .&/'-]{1,30})?\)"
    r"|(?:photo|foto|image|bild|crédit photo|credit)\s*:\s*[\w .&/'-]{1,40})$",
    re.IGNORECASE,
)


def trim_edges(text: str, title: str | None = None) -> str:
    """The body without prompt lines, related links, a last source line, glued photo
    credits and repeats of the title (paragraphs separated by blank lines, as clean_text
    leaves them)."""
    if not text:
        return text
    folded_title = _fold(title) if title else None
    kept: list[str] = []
    paragraphs = text.split("\n\n")
    if paragraphs and _SOURCE_LINE.match(paragraphs[-1]):
        paragraphs.pop()
    for paragraph in paragraphs:
        if len(paragraph) <= _MAX_PROMPT_CHARS and (
            _PROMPT.match(paragraph) or _RELATED_LINK.match(paragraph)
        ):
            continue
        if folded_title and _fold(paragraph) == folded_title:
            continue
        paragraph = _GLUED_CREDIT.sub("", paragraph).rstrip()
        if paragraph:
            kept.append(paragraph)
    return "\n\n".join(kept)


def _fold(text: str) -> str:
    return " ".join(text.casefold().split()).strip(" .:")
