"""Whether a fetched page is the article at all (pure): a page that answers 200 and says
"page not found" is a soft 404, and its record must not pass for the article."""

from __future__ import annotations

import re

# Error-page titles in the languages the product meets most; a title is matched, never the
# body (an article may quote an error message).
_NOT_FOUND = re.compile(
    r"(?i)(\b404\b|\bpage not found\b|\bnot found\b|\bpage (?:does not|doesn't) exist\b"
    r"|\bseite nicht gefunden\b|\bnicht gefunden\b|\bpage introuvable\b"
    r"|\bp[aá]gina no encontrada\b|\bpagina non trovata\b|\bpagina niet gevonden\b"
    r"|\bnie znaleziono\b|\bp[aá]gina n[aã]o encontrada\b|страница не найдена"
    r"|ページが見つかりません|页面不存在|找不到页面|الصفحة غير موجودة)"
)


def soft_404(page_title: str | None, entry_title: str | None) -> str | None:
    """Why a page that answered 200 is an error page, or None. The entry's own title
    decides against it: an article about an outage may well be titled "404"."""
    if not page_title or not _NOT_FOUND.search(page_title):
        return None
    if entry_title and _NOT_FOUND.search(entry_title):
        return None
    return f"soft 404: the page answered 200 but is titled {page_title[:120]!r}"
