"""Bytes to text for HTML pages: header charset, then BOM / XML declaration / meta, then
detection. Feeds are not decoded here: feedparser reads the same signals from bytes."""

from __future__ import annotations

import codecs
import re

import charset_normalizer

_BOMS = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_XML_DECL = re.compile(rb"""^\s*<\?xml[^>]{0,200}encoding\s*=\s*["']([A-Za-z0-9._:-]{1,40})""")
_META_CHARSET = re.compile(
    rb"""<meta[^>]{0,200}?charset\s*=\s*["']?\s*([A-Za-z0-9._:-]{1,40})""", re.IGNORECASE
)
_SNIFF_BYTES = 4096
_NEAR_TIE = 10.0  # percent of "chaos" (mess) in charset-normalizer's terms


def codec_name(name: str | None) -> str | None:
    """The canonical codec name for a charset label, or None when Python has no such codec."""
    if not name:
        return None
    try:
        return codecs.lookup(name.strip().strip("\"'")).name
    except LookupError:
        return None


def declared_charset(body: bytes) -> str | None:
    """The charset a document declares about itself (BOM, XML declaration, meta)."""
    for bom, name in _BOMS:
        if body.startswith(bom):
            return name
    head = body[:_SNIFF_BYTES]
    for pattern in (_XML_DECL, _META_CHARSET):
        match = pattern.search(head)
        if match and (codec := codec_name(match.group(1).decode("ascii", "ignore"))):
            return codec
    return None


def decode_document(body: bytes, header_charset: str | None = None) -> tuple[str, str]:
    """Decode a page; returns (text, charset used). Never raises.

    A charset that fails to decode the bytes strictly is skipped, so a wrong declaration in
    either direction (UTF-8 declared as latin-1 or the reverse) falls through to detection.
    """
    candidates = [codec_name(header_charset), declared_charset(body)]
    for name in candidates:
        if name is None:
            continue
        if name in ("latin-1", "iso8859-1", "cp1252") and _looks_utf8(body):
            # The single most common wrong declaration: UTF-8 served as latin-1.
            return body.decode("utf-8", "replace"), "utf-8"
        try:
            return body.decode(name), name
        except (UnicodeDecodeError, LookupError):
            continue
    encoding = detect_encoding(body)
    return body.decode(encoding, "replace"), encoding


def detect_encoding(body: bytes) -> str:
    """charset-normalizer's guess, except that windows-1252 wins near-ties: it is what
    browsers assume for Western pages, and short texts leave the detector guessing among
    the Latin code pages."""
    matches = list(charset_normalizer.from_bytes(body[:200_000]))
    if not matches:
        return "utf-8"
    best = matches[0]
    for match in matches:
        if match.encoding == "cp1252" and match.percent_chaos <= best.percent_chaos + _NEAR_TIE:
            return "cp1252"
    return best.encoding or "utf-8"


def _looks_utf8(body: bytes) -> bool:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return any(b >= 0x80 for b in body[:200_000])
