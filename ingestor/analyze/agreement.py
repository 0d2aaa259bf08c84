"""How far two readings of one page agree, and what that says about them (pure).

Two extractors that work differently (trafilatura scores blocks of the cleaned tree,
resiliparse walks the DOM with its own boilerplate rules) rarely make the same mistake,
so their agreement marks the article. It is measured as the F1 of their sets of word
3-shingles (words as `\\w+`, case kept), which is 1.0 for the same words in the same order.

- `needs_fallback`: trafilatura's fast reading that agrees with resiliparse's is kept as
  it is; only one that disagrees is worth trafilatura's slower fallback comparison
  (readability-lxml and jusText): a second, full pass on the pages it runs on.
- `closer_reading`: of trafilatura's fast and full readings, the one closer to
  resiliparse's. trafilatura's own choice between them is a length heuristic; on the two
  dev sets the choice by agreement is right more often (bench/extraction_choices.py).
- `cut_after_article_end`: a page's schema.org `articleBody` that is about as long as the
  extracted body is the article itself, so what the body holds after the last paragraph
  it shares with `articleBody` (related links, promotions, newsletter boxes) lies past
  the article's end.
"""

from __future__ import annotations

import re

_WORD = re.compile(r"\w+")
_SHINGLE = 3
# Below this agreement with resiliparse, trafilatura's fast reading gets its fallback
# comparison: on the two dev sets 11% of pages, with the same F1 as on every page (from
# 0.6 down F1 falls: pages that needed the fallback no longer get it).
FALLBACK_BELOW = 0.7
# articleBody shorter than this share of the body is a teaser or a summary, not the
# article: it says nothing about where the article ends.
ARTICLE_BODY_SHARE = 0.7
# A paragraph is in articleBody when this share of its shingles is.
SHARED_PARAGRAPH = 0.5


def shingles(text: str) -> set[tuple[str, ...]]:
    words = _WORD.findall(text)
    if len(words) < _SHINGLE:
        return {tuple(words)} if words else set()
    # Sets, not multisets: as good a measure here, at half the CPU.
    return set(zip(*(words[i:] for i in range(_SHINGLE)), strict=False))


def agreement(first: str, second: str) -> float:
    """The F1 of the two texts' shingle sets: 0.0 (nothing shared) to 1.0."""
    a, b = shingles(first), shingles(second)
    shared = len(a & b)
    if not shared:
        return 0.0
    precision, recall = shared / len(a), shared / len(b)
    return 2 * precision * recall / (precision + recall)


def needs_fallback(fast_reading: str, second_opinion: str) -> bool:
    """Whether trafilatura's fast reading disagrees enough with the second opinion to be
    checked against its fallback extractors. No second opinion: nothing vouches for it."""
    if not second_opinion.strip():
        return True
    return agreement(fast_reading, second_opinion) < FALLBACK_BELOW


def closer_reading(fast_reading: str, full_reading: str, second_opinion: str) -> str:
    """The reading that agrees more with the second opinion; the fast one on a tie.
    Without a second opinion, trafilatura's own choice (the full reading) stands."""
    if not full_reading or full_reading == fast_reading:
        return fast_reading
    if not fast_reading or not second_opinion.strip():
        return full_reading
    fast_score = agreement(fast_reading, second_opinion)
    return full_reading if agreement(full_reading, second_opinion) > fast_score else fast_reading


def cut_after_article_end(body: str, article_body: str | None) -> str:
    """`body` without the paragraphs after the last one it shares with `article_body`,
    when `article_body` is the whole article (see the module docstring)."""
    if not article_body or not body or len(article_body) < ARTICLE_BODY_SHARE * len(body):
        return body
    known = shingles(article_body)
    lines = body.split("\n")
    last_shared = -1
    for index, line in enumerate(lines):
        own = shingles(line)
        if own and len(own & known) >= SHARED_PARAGRAPH * len(own):
            last_shared = index
    if last_shared < 0 or not "".join(lines[last_shared + 1 :]).strip():
        return body
    return "\n".join(lines[: last_shared + 1])
