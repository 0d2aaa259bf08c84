"""Load and validate the YAML configuration into the frozen dataclasses of model.py.

Every problem found is reported as one line naming the file, the key path and what is
wrong; all problems are collected before raising, so a user fixes them in one go.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from ingestor.config import values
from ingestor.config.model import (
    Config,
    FeedConfig,
    RequestOptions,
    WebhookConfig,
    parsers,
    required,
    sections,
)
from ingestor.errors import ConfigError

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(value: Any, path: str, problems: list[str], source: str) -> Any:
    """Expand ${VAR} and ${VAR:-default} in every string of the YAML tree."""
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            problems.append(f"{source}: {path}: environment variable ${{{name}}} is not set")
            # Left as written: the value's own checks have nothing more to say about it
            # (an empty password would be reported a second time).
            return match.group(0)

        return _ENV_REF.sub(replace, value)
    if isinstance(value, dict):
        return {k: expand_env(v, _join(path, str(k)), problems, source) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, f"{path}[{i}]", problems, source) for i, v in enumerate(value)]
    return value


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _build(
    cls: type,
    raw: Any,
    path: str,
    problems: list[str],
    source: str,
    extra: Mapping[str, Any] | None = None,
) -> Any:
    """A section (or feed) dataclass from its YAML mapping, as its fields declare; keys in
    `extra` are known keys that belong elsewhere (a feed's request options)."""
    spec = parsers(cls)
    needed = required(cls)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        problems.append(f"{source}: {path}: expected a mapping of keys, got {type(raw).__name__}")
        return None
    values: dict[str, Any] = {}
    ok = True
    for key, value in raw.items():
        key_path = _join(path, str(key))
        if extra is not None and key in extra:
            continue
        parser = spec.get(str(key))
        if parser is None:
            known = ", ".join(sorted({*spec, *(extra or {})}))
            problems.append(f"{source}: {key_path}: unknown key (known keys: {known})")
            ok = False
            continue
        try:
            values[str(key)] = parser(value)
        except ValueError as exc:
            problems.append(f"{source}: {key_path}: {exc}")
            ok = False
    for key in needed:
        if key not in raw:
            problems.append(f"{source}: {_join(path, key)}: required key is missing")
            ok = False
    return cls(**values) if ok else None


def parse_config(data: Any, source: str, base_dir: Path | None = None) -> Config:
    """Validate a parsed YAML document. Relative paths resolve against base_dir."""
    problems: list[str] = []
    if not isinstance(data, dict):
        raise ConfigError([f"{source}: the top level must be a mapping (output:, state:, feeds:)"])
    data = expand_env(data, "", problems, source)
    built: dict[str, Any] = {}
    known_sections = sections()
    for key in data:
        if key not in known_sections and key not in ("feeds", "sinks"):
            known = ", ".join([*sorted(known_sections), "feeds", "sinks"])
            problems.append(f"{source}: {key}: unknown key (known keys: {known})")
    for name, cls in known_sections.items():
        if (required(cls) or name == "state") and name not in data:
            problems.append(f"{source}: {name}: required section is missing")
            continue
        built[name] = _build(cls, data.get(name), name, problems, source)
    feeds = _parse_feeds(data.get("feeds"), problems, source)
    output = built.get("output")
    sinks = parse_sinks(data.get("sinks"), output is None or output.journal, problems, source)
    schedule = built.get("schedule")
    if (
        schedule is not None
        and schedule.max_interval is not None
        and schedule.min_interval > schedule.max_interval
    ):
        problems.append(f"{source}: schedule.min_interval: must not exceed schedule.max_interval")
    state = built.get("state")
    if state is not None and (state.path is None) == (state.url is None):
        problems.append(
            f"{source}: state: give exactly one of state.path (SQLite, one machine) and "
            f"state.url (PostgreSQL, several instances)"
            + ("; both are set" if state.path is not None else "")
        )
    if problems:
        raise ConfigError(problems)
    base = base_dir or Path.cwd()
    built["output"] = replace(built["output"], dir=_resolve(built["output"].dir, base))
    if state.path is not None:
        built["state"] = replace(state, path=_resolve(state.path, base))
    return Config(source=source, feeds=tuple(feeds), sinks=tuple(sinks), **built)


def _resolve(path: Path, base: Path) -> Path:
    return path if path.is_absolute() else (base / path)


def _parse_feeds(raw: Any, problems: list[str], source: str) -> list[FeedConfig]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        problems.append(f"{source}: feeds: expected a list of feeds")
        return []
    feeds: list[FeedConfig] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(raw):
        path = f"feeds[{index}]"
        if isinstance(item, str):
            item = {"url": item}
        item, is_site = _site_entry(item, path, problems, source)
        if item is None:
            continue
        request = None
        options = parsers(RequestOptions)
        if isinstance(item, dict):
            mine = {k: v for k, v in item.items() if k in options}
            request = _build(RequestOptions, mine, path, problems, source)
        feed = _build(FeedConfig, item, path, problems, source, extra=options)
        if feed is None or request is None:
            continue
        feed = replace(feed, request=request, site=is_site)
        if feed.url in seen:
            problems.append(
                f"{source}: {path}.url: duplicate of feeds[{seen[feed.url]}].url ({feed.url})"
            )
            continue
        seen[feed.url] = index
        feeds.append(feed)
    return feeds


def parse_sinks(raw: Any, journal: bool, problems: list[str], source: str) -> list[WebhookConfig]:
    """`sinks:`, a list of `{webhook: {...}}`; they deliver the journal, so it must be on."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        problems.append(f"{source}: sinks: expected a list of sinks ({{webhook: {{url: ...}}}})")
        return []
    sinks: list[WebhookConfig] = []
    for index, item in enumerate(raw):
        path = f"sinks[{index}]"
        if not isinstance(item, dict) or set(item) != {"webhook"}:
            problems.append(f"{source}: {path}: expected `webhook:` (the only kind of sink)")
            continue
        options = item["webhook"]
        if isinstance(options, dict) and "from" in options:
            options = {("start" if k == "from" else k): v for k, v in options.items()}
        mine: list[str] = []
        sink = _build(WebhookConfig, options, f"{path}.webhook", mine, source)
        problems.extend(p.replace(".webhook.start:", ".webhook.from:") for p in mine)
        if sink is None:
            continue
        if any(s.sink_name == sink.sink_name for s in sinks):
            problems.append(
                f"{source}: {path}.webhook.name: {sink.sink_name!r} is the name of another "
                f"sink: give each its own name"
            )
            continue
        sinks.append(sink)
    if sinks and not journal:
        problems.append(
            f"{source}: sinks: webhook sinks deliver the change journal: set output.journal "
            f"to true (or remove the sinks)"
        )
    return sinks


def _site_entry(item: Any, path: str, problems: list[str], source: str) -> tuple[Any, bool]:
    """A `site:` entry as a feed entry whose url is the site's address."""
    if not isinstance(item, dict) or "site" not in item:
        return item, False
    if "url" in item:
        problems.append(f"{source}: {path}: give url (a feed or sitemap) or site, not both")
        return None, False
    try:
        site = values.http_url(item["site"])
    except ValueError as exc:
        problems.append(f"{source}: {path}.site: {exc}")
        return None, False
    rest = {k: value for k, value in item.items() if k != "site"}
    return {"url": site, **rest}, True


# libyaml's safe loader when PyYAML was built with it: a 10,000-feed file loads in a
# tenth of the time (the same documents, marks and errors as the pure-Python one).
_BASE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _DuplicateKey(Exception):
    def __init__(self, key: object, first: int, again: int) -> None:
        super().__init__(key)
        self.key, self.first, self.again = key, first, again


class _SafeLoader(_BASE_LOADER):  # type: ignore[misc, valid-type]
    """The safe loader, refusing a key given twice in one mapping (YAML says keys are
    unique; PyYAML would keep the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[object, int] = {}
        for key_node, _value in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                key = key_node.value
                line = key_node.start_mark.line + 1
                if key in seen and key != "<<":
                    raise _DuplicateKey(key, seen[key], line)
                seen.setdefault(key, line)
        return super().construct_mapping(node, deep=deep)


_SAFE_LOADER = _SafeLoader


def load_config(path: str | Path) -> Config:
    """Read, expand and validate a YAML config file; raises ConfigError with every problem."""
    file = Path(path)
    source = str(file)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{source}: cannot read: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError as exc:
        line = file.read_bytes()[: exc.start].count(b"\n") + 1
        raise ConfigError(
            [
                f"{source}: line {line}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x}); "
                "save the file as UTF-8"
            ]
        ) from None
    try:
        data = yaml.load(text, Loader=_SAFE_LOADER)
    except _DuplicateKey as exc:
        raise ConfigError(
            [
                f"{source}: line {exc.again}: key {exc.key!r} given twice (first on line "
                f"{exc.first}); say it once"
            ]
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError([f"{source}: {where}invalid YAML: {problem}"]) from None
    return parse_config(data, source, base_dir=file.resolve().parent)
