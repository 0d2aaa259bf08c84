"""OPML import: a feed list from another reader, as YAML `feeds:` entries."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import lxml.etree
import yaml

from ingestor.core.cleaning import clean_line
from ingestor.errors import ConfigError


def read_opml(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Every outline with an http(s) xmlUrl (nested outline titles become tags), a `site:`
    entry for each with only an http(s) htmlUrl, and one line for each outline left out:
    a feed URL that is not http(s), or an outline that is neither a feed, a site nor a
    folder of them."""
    root = _parse(path)
    feeds: list[dict[str, Any]] = []
    skipped: list[str] = []
    seen: set[str] = set()

    def walk(element: Any, tags: list[str]) -> None:
        for outline in element.iterchildren("outline"):
            title = (outline.get("title") or outline.get("text") or "").strip()
            entry, why = _entry(outline)
            if entry is None and why is None:
                walk(outline, [*tags, title] if title else tags)
            elif entry is None:
                where = f"{path}: line {outline.sourceline}: outline {clean_line(title, 80)!r}"
                skipped.append(f"{where}: {why}; skipped")
            elif (address := next(iter(entry.values()))) not in seen:
                seen.add(address)
                feeds.append(
                    {
                        **entry,
                        **({"name": title} if title else {}),
                        **({"tags": list(tags)} if tags else {}),
                    }
                )

    body = root.find("body")
    walk(body if body is not None else root, [])
    return feeds, skipped


def _parse(path: Path) -> Any:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    parser = lxml.etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False
    )
    try:
        return lxml.etree.fromstring(data, parser)
    except lxml.etree.XMLSyntaxError as exc:
        raise ConfigError([f"{path}: not valid OPML: {exc}"]) from None


def _entry(outline: Any) -> tuple[dict[str, str] | None, str | None]:
    """A feed entry for the outline, or why it is left out; (None, None) for a folder."""
    url = (outline.get("xmlUrl") or outline.get("xmlurl") or "").strip()
    if url:
        if not _is_http(url):
            return None, f"{clean_line(url, 200)} is not http(s)"
        return {"url": url}, None
    if len(outline):
        return None, None
    site = (outline.get("htmlUrl") or outline.get("htmlurl") or "").strip()
    if _is_http(site):
        # A website without a feed URL: its feeds and sitemaps are discovered.
        return {"site": site}, None
    return None, "no xmlUrl or htmlUrl (not a feed)"


def _is_http(url: str) -> bool:
    return urlsplit(url.strip()).scheme.lower() in ("http", "https")


def feeds_yaml(feeds: list[dict[str, Any]]) -> str:
    return yaml.safe_dump(feeds, allow_unicode=True, sort_keys=False, default_flow_style=False)
