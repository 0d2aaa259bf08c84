"""Paragraphs a second extractor finds inside the body that the first left out (pure).

trafilatura (the first opinion) sometimes leaves a paragraph of the article out: one it
could not place among its candidate blocks, a dek between the headline and the text, or
the second of two identical paragraphs, which it drops as an artifact of its own
candidate merging even when the page shows both. resiliparse (the second opinion, about
a seventh of trafilatura's CPU) reads every block of the page's main content, but keeps
the portal's teaser grids, comments and footers (bench/devset.py: precision 0.50 on the
farm's portal pages), so its text is never taken whole.

The two are aligned by 4-word shingles. A paragraph of the second text that is mostly
made of the first's shingles is *covered* and marks where the first text is. From the
first covered paragraph on, a paragraph the first lacks is restored after the last mark
when
- the page repeats it back to back (the copy trafilatura dropped; a prose paragraph, not
  a repeated one-word label), or
- it lies before the last covered paragraph (inside the body: portals put teasers,
  comments and footers after it), is prose (at least `MIN_PROSE_WORDS` words and ends a
  sentence; promotional one-liners are shorter) and mostly new words.
Nothing is removed from the first text, and nothing before its start or after its end is
added except a back-to-back repeat.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from itertools import repeat

_WORD = re.compile(r"\w+")
_SHINGLE = 4
# Share of a paragraph's shingles found in the first text for it to be "covered" (the
# two extractors break lines differently, so shingles across a break can be missing),
# and share that must be new for a paragraph to be restored.
COVERED_SHARE = 0.8
NEW_SHARE = 0.8
MIN_PROSE_WORDS = 16
_SENTENCE_END = tuple(".!?…\"”»)'")


@dataclass(frozen=True)
class Filled:
    text: str
    restored: int  # paragraphs added from the second opinion


def fill_from_second_opinion(first: str, second: str) -> Filled:
    """`first` with the paragraphs of `second` that belong inside it (see the module)."""
    first_lines = [line for line in first.split("\n") if line.strip()]
    second_lines = [line.strip() for line in second.split("\n") if line.strip()]
    if not first_lines or not second_lines:
        return Filled(first, 0)
    shingle_counts, line_of_shingle = _index(first_lines)
    words = [_words(line) for line in second_lines]
    shingles = [_shingles(w) for w in words]
    covered = [
        bool(s) and sum(map(shingle_counts.__contains__, s)) >= COVERED_SHARE * len(s)
        for s in shingles
    ]
    if not any(covered):
        return Filled(first, 0)
    first_covered = covered.index(True)
    last_covered = len(covered) - 1 - covered[::-1].index(True)

    after_line: dict[int, list[str]] = {}
    restored = 0
    anchor = -1
    times_seen: Counter[tuple[str, ...]] = Counter()
    present: set[int] = set()  # second-opinion paragraphs the result holds
    for i in range(first_covered, len(second_lines)):
        if covered[i]:
            anchor = max(max(map(line_of_shingle.get, shingles[i], repeat(-1))), anchor)
            times_seen[words[i]] += 1
            # A covered paragraph seen more often than the first text has it is a repeat.
            if i == first_covered or times_seen[words[i]] <= shingle_counts[shingles[i][0]]:
                present.add(i)
                continue
        back_to_back = (
            i - 1 in present and words[i] == words[i - 1] and len(words[i]) >= MIN_PROSE_WORDS
        )
        inside = i < last_covered and not covered[i]
        if back_to_back or (
            inside and _is_new_prose(second_lines[i], words[i], shingles[i], shingle_counts)
        ):
            after_line.setdefault(anchor, []).append(second_lines[i])
            present.add(i)
            restored += 1
    if not restored:
        return Filled(first, 0)
    merged: list[str] = [*after_line.get(-1, [])]
    for index, line in enumerate(first_lines):
        merged.append(line)
        merged.extend(after_line.get(index, []))
    return Filled("\n\n".join(merged), restored)


def _is_new_prose(
    line: str,
    words: tuple[str, ...],
    shingles: list[tuple[str, ...]],
    known: Counter[tuple[str, ...]],
) -> bool:
    return (
        len(words) >= MIN_PROSE_WORDS
        and line.endswith(_SENTENCE_END)
        and len(shingles) - sum(map(known.__contains__, shingles)) >= NEW_SHARE * len(shingles)
    )


def _index(lines: list[str]) -> tuple[Counter[tuple[str, ...]], dict[tuple[str, ...], int]]:
    """The first text's shingles over its whole word stream (so a sentence the extractor
    broke across lines still matches), and the line each one ends on."""
    stream: list[str] = []
    owner: list[int] = []
    for index, line in enumerate(lines):
        line_words = _words(line)
        stream.extend(line_words)
        owner.extend([index] * len(line_words))
    shingles = _shingles(tuple(stream))
    # A stream shorter than a shingle is one shingle, ending on the last line.
    ends = owner[_SHINGLE - 1 :] or owner[-1:]
    return Counter(shingles), dict(zip(shingles, ends, strict=True))


def _words(line: str) -> tuple[str, ...]:
    return tuple(_WORD.findall(line.lower()))


def _shingles(words: tuple[str, ...]) -> list[tuple[str, ...]]:
    if len(words) < _SHINGLE:
        return [words] if words else []
    # The shifted copies are shorter by one each: zip stops at the last whole shingle.
    return list(zip(*(words[i:] for i in range(_SHINGLE)), strict=False))
