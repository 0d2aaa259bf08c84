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
    """Every outline with an http(s) xmlUrl (nested outline titles become tags), and one
    line for each outline left out: a feed URL that is not http(s), or an outline that
    is neither a feed nor a folder of feeds."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    parser = lxml.etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False
    )
    try:
        root = lxml.etree.fromstring(data, parser)
    except lxml.etree.XMLSyntaxError as exc:
        raise ConfigError([f"{path}: not valid OPML: {exc}"]) from None
    feeds: list[dict[str, Any]] = []
    skipped: list[str] = []
    seen: set[str] = set()

    def walk(element: Any, tags: list[str]) -> None:
        for outline in element.iterchildren("outline"):
            url = (outline.get("xmlUrl") or outline.get("xmlurl") or "").strip()
            title = (outline.get("title") or outline.get("text") or "").strip()
            where = f"{path}: line {outline.sourceline}: outline {clean_line(title, 80)!r}"
            if url:
                if urlsplit(url).scheme.lower() not in ("http", "https"):
                    skipped.append(f"{where}: {clean_line(url, 200)} is not http(s); skipped")
                elif url not in seen:
                    seen.add(url)
                    feed: dict[str, Any] = {"url": url}
                    if title:
                        feed["name"] = title
                    if tags:
                        feed["tags"] = list(tags)
                    feeds.append(feed)
            elif len(outline):
                walk(outline, [*tags, title] if title else tags)
            else:
                skipped.append(f"{where}: no xmlUrl (not a feed); skipped")

    body = root.find("body")
    walk(body if body is not None else root, [])
    return feeds, skipped


def feeds_yaml(feeds: list[dict[str, Any]]) -> str:
    return yaml.safe_dump(feeds, allow_unicode=True, sort_keys=False, default_flow_style=False)
