"""Text cleaning every field goes through: controls and bidi overrides out, one form of
whitespace (pure functions)."""

from __future__ import annotations

import re
import unicodedata

# C0/C1 controls and Unicode bidi overrides/isolates are removed from every text field:
# they corrupt terminals and logs and can disguise text (CVE-2021-42574 style).
_CONTROL = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff]"
)


_LINE_BREAKS = re.compile("\r\n?|[\x0b\x0c\x85\u2028\u2029]")


_SINGLE_LINE_SPACE = re.compile(r"[\s\u00a0]+")
_SPACE_RUN = re.compile("[ \t\u00a0]+")


MAX_TITLE_CHARS = 1000


def clean_line(text: str | None, limit: int | None = None) -> str:
    """One line of text: controls removed, whitespace (CR/LF too) folded to single spaces."""
    if not text:
        return ""
    text = _SINGLE_LINE_SPACE.sub(" ", _CONTROL.sub("", unicodedata.normalize("NFC", text)))
    text = text.strip()
    if limit is not None and len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text


def clean_text(text: str | None) -> str:
    """Body text: controls removed, paragraphs separated by exactly one blank line."""
    if not text:
        return ""
    text = _LINE_BREAKS.sub("\n", unicodedata.normalize("NFC", text))
    # Runs of spaces never hold a line break: folded over the whole text at once.
    text = _SPACE_RUN.sub(" ", _CONTROL.sub("", text))
    return "\n\n".join(line for block in text.split("\n") if (line := block.strip()))
