"""What a site's home page says of its feeds: the `<link rel="alternate">` elements that
name an RSS, Atom or JSON feed (comment feeds left out), in the page's order."""

from __future__ import annotations

from html.parser import HTMLParser

from ingestor.parse.entries import safe_link

FEED_TYPES = {
    "application/rss+xml": "rss",
    "application/atom+xml": "atom",
    "application/feed+json": "json",
    "application/json": "json",
    "application/rdf+xml": "rss",
}
# Where feeds usually are when the page names none, in the order they are tried.
USUAL_FEED_PATHS = ("/feed", "/rss.xml", "/atom.xml", "/index.xml", "/feed.json")
_MAX_PAGE_CHARS = 2_000_000


class _LinkCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[dict[str, str]] = []
        self.done = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "link":
            self.links.append({k.lower(): v or "" for k, v in attrs})
        elif tag == "body":
            self.done = True  # feed links belong in the head


def alternate_feeds(html: bytes, base: str) -> list[tuple[str, str, str]]:
    """(absolute URL, kind, why) for each feed link of the page; `why` says whether it is
    used ("named by the home page") or not ("comment feed")."""
    collector = _LinkCollector()
    text = html[:_MAX_PAGE_CHARS].decode("utf-8", errors="replace")
    for start in range(0, len(text), 65536):
        collector.feed(text[start : start + 65536])
        if collector.done:
            break
    found: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    for link in collector.links:
        rels = link.get("rel", "").lower().split()
        kind = FEED_TYPES.get(link.get("type", "").lower().split(";")[0].strip())
        url = safe_link(base, link.get("href"))
        if "alternate" not in rels or kind is None or url is None or url in seen:
            continue
        seen.add(url)
        if _is_comment_feed(url, link.get("title", "")):
            found.append((url, kind, "not used: a comment feed"))
        else:
            found.append((url, kind, "used: named by the home page"))
    return found


def _is_comment_feed(url: str, title: str) -> bool:
    lowered = f"{url} {title}".lower()
    return "comment" in lowered or "kommentar" in lowered or "commentaire" in lowered
