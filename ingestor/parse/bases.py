"""Which base a feed's relative links are resolved against.

An entry's relative link means the site: a feed that moved (301) to another host, or that
lives on a feeds host of its own, still links `/news/a.html` on the site its channel
`<link>` names (Miniflux resolves entry links against the channel's site link too). An
`xml:base`, where the document gives one, comes first. Everything else (guids, enclosures,
the channel link itself, archive links) keeps the document's own URL as its base, so that
entry keys stay what they were.

feedparser resolves every URL field while it parses, against `xml:base` or the document's
content location. It is given a marker base instead of the document's URL; a value that
comes back under the marker was relative in the document, and is resolved again here
against the base it belongs to.
"""

from __future__ import annotations

from urllib.parse import urljoin, urlsplit

_MARKER_HOST = "relative.invalid"
_SEGMENT = "__feed_base__"
# Deep enough that any "../" a feed writes is seen (more collapse at the root, as RFC 3986
# says they do).
_DEPTH = 8


class LinkBases:
    """The marker base for feedparser, and the way back from it."""

    def __init__(self, document_url: str) -> None:
        self.document_url = document_url
        scheme = urlsplit(document_url).scheme.lower() or "http"
        self.origin = f"{scheme}://{_MARKER_HOST}"
        self.marker = self.origin + "/" + f"{_SEGMENT}/" * _DEPTH
        self.site: str | None = None

    def set_site(self, site_link: str | None) -> None:
        """The channel's link (already resolved): the base of entry links when it is an
        absolute http(s) URL."""
        if site_link and site_link.lower().startswith(("http://", "https://")):
            self.site = site_link

    def document(self, value: object) -> object:
        """A URL field resolved against the document's URL (or its xml:base)."""
        return self._rebase(value, self.document_url)

    def entry(self, value: object) -> object:
        """An entry's link resolved against the site (or its xml:base)."""
        return self._rebase(value, self.site or self.document_url)

    def _rebase(self, value: object, base: str) -> object:
        if not isinstance(value, str) or not value.startswith(self.origin + "/"):
            return value
        return urljoin(base, self._relative_reference(value))

    def _relative_reference(self, value: str) -> str:
        """The reference as the document wrote it, from its resolution against the marker."""
        parts = urlsplit(value)
        segments = parts.path.split("/")[1:]
        depth = 0
        while depth < min(_DEPTH, len(segments) - 1) and segments[depth] == _SEGMENT:
            depth += 1
        rest = "/".join(segments[depth:])
        reference = "/" + rest if depth == 0 else "../" * (_DEPTH - depth) + rest
        if parts.query:
            reference += "?" + parts.query
        if parts.fragment:
            reference += "#" + parts.fragment
        return reference
