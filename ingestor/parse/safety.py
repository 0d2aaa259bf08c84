"""What a feed document must pass before a parser sees it: no entity declarations, at
most MAX_ENTRIES entries, a charset that tells the truth; and why an HTML page came back
where a feed was expected."""

from __future__ import annotations

import codecs
import re

from ingestor.core.cleaning import clean_line
from ingestor.errors import ParseError
from ingestor.parse.decoding import codec_name, declared_charset, detect_encoding
from ingestor.parse.text import html_to_text

_ROOT_START = re.compile(rb"<[A-Za-z_]")


_XML_ENCODING = re.compile(rb"""(?<=<\?xml)([^>]*?)encoding\s*=\s*["'][A-Za-z0-9._:-]+["']""")


_ENTITY_DECL = re.compile(rb"<!ENTITY", re.IGNORECASE)


# A feed with more entries than this has only its first MAX_ENTRIES read (feedparser needs
# about 0.2 ms per tiny item and 2 ms per real one: 100,000 items took 22 s).
MAX_ENTRIES = 5000


_ITEM_ENDS = (b"</item>", b"</entry>")


_ROOT_CLOSERS = (
    (b"<rdf:RDF", b"</rdf:RDF>"),
    (b"<rss", b"</channel></rss>"),
    (b"<feed", b"</feed>"),
)


_LATIN_CODECS = frozenset({"ascii", "latin-1", "iso8859-1", "iso8859-15", "cp1252"})


_HTML_START = re.compile(
    rb"^\s*(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html|head|body)\b", re.I | re.S
)


_HTML_TITLE = re.compile(rb"<title[^>]*>(.*?)</title>", re.I | re.S)


_FEED_LINK = re.compile(rb"<link\b[^>]*type=[\"']application/(?:rss|atom)\+xml[\"'][^>]*>", re.I)


_HREF = re.compile(rb"href=[\"']([^\"']+)[\"']", re.I)


def html_instead_of_feed(body: bytes, media: str) -> str | None:
    """Why an HTML page came back where a feed was expected, or None if it is not HTML:
    a bot check, a login or consent page, or the site's home page (named with the feed it
    links to, when it does)."""
    head = body[:65536]
    if media not in ("text/html", "application/xhtml+xml") and not _HTML_START.match(head):
        return None
    title = _HTML_TITLE.search(head)
    title_text = (
        clean_line(html_to_text(title.group(1).decode("utf-8", "replace")), 80) if title else ""
    )
    named = f" (page title {title_text!r})" if title_text else ""
    link = _FEED_LINK.search(head)
    href = _HREF.search(link.group(0)) if link else None
    if href:
        feed_url = clean_line(href.group(1).decode("utf-8", "replace"), 300)
        return f"an HTML page{named}, not a feed; the page names its feed: {feed_url}"
    return (
        f"an HTML page{named}, not a feed: a bot check, a login or a consent page? "
        "(a per-feed user_agent or headers may help)"
    )


def normalize_feed_charset(body: bytes, charset: str | None) -> tuple[bytes, str]:
    """Bytes and a Content-Type for feedparser whose charset tells the truth.

    Wrong declarations happen in both directions: UTF-8 bytes declared as latin-1 (the
    header or the XML declaration lies) and latin-1 bytes declared (or defaulted) as UTF-8.
    A strict decode settles which; the document is then handed on as UTF-8.
    """
    declared = codec_name(charset) or declared_charset(body)
    if declared is not None and declared != "utf-8" and declared not in _LATIN_CODECS:
        return body, f"application/xml; charset={declared}"  # UTF-16, Shift_JIS...: trusted
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        if declared in _LATIN_CODECS:
            return body, f"application/xml; charset={declared}"  # an honest latin-1 feed
        # Declared (or defaulted to) UTF-8 but it is not: detect what it really is.
        text = body.decode(detect_encoding(body), "replace")
    # Valid UTF-8 wins over any single-byte declaration: such bytes are almost never latin-1.
    utf8 = _XML_ENCODING.sub(rb'\1encoding="utf-8"', text.encode("utf-8"), count=1)
    return utf8, "application/xml; charset=utf-8"


def limit_entries(body: bytes) -> tuple[bytes, int]:
    """Cut a document after its MAX_ENTRIES-th entry, closing the root properly."""
    total = max(body.count(end) for end in _ITEM_ENDS)
    if total <= MAX_ENTRIES:
        return body, total
    end_tag = max(_ITEM_ENDS, key=body.count)
    position = -1
    for _ in range(MAX_ENTRIES):
        position = body.find(end_tag, position + 1)
    cut = body[: position + len(end_tag)]
    closer = next((c for opener, c in _ROOT_CLOSERS if opener in body[:4096]), b"")
    return cut + closer, total


def reject_entity_declarations(body: bytes, url: str) -> None:
    """Refuse any document that declares an entity before its root element.

    feedparser's fallback parser expands internal entities (a 140 KB quadratic-blowup feed
    took 49 s and 2.9 GB); no real feed declares entities, so refusing them costs nothing.
    """
    head = _ascii_view(body)
    root = _ROOT_START.search(head)
    prolog = head[: root.start()] if root else head
    if _ENTITY_DECL.search(prolog):
        raise ParseError(url, "refused: the document declares XML entities (DOCTYPE)")


def _ascii_view(body: bytes) -> bytes:
    # UTF-16/32 documents hide "<!ENTITY" from a byte search: look at them transcoded.
    for bom, codec in (
        (codecs.BOM_UTF32_LE, "utf-32"),
        (codecs.BOM_UTF32_BE, "utf-32"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
    ):
        if body.startswith(bom):
            return body.decode(codec, "replace").encode("utf-8", "replace")
    if len(body) > 1 and (body[0] == 0 or body[1] == 0):
        codec = "utf-16-be" if body[0] == 0 else "utf-16-le"
        return body.decode(codec, "replace").encode("utf-8", "replace")
    return body
