"""Load and validate the YAML configuration into typed, frozen dataclasses.

Every problem found is reported as one line naming the file, the key path and what is
wrong; all problems are collected before raising, so a user fixes them in one go.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from ingestor import __version__
from ingestor.errors import ConfigError

DEFAULT_USER_AGENT = f"ingestor/{__version__} (+https://github.com/feed-ingestor/ingestor)"
DEFAULT_TRACKING_PARAMS = (
    "utm_*",
    "fbclid",
    "gclid",
    "dclid",
    "msclkid",
    "mc_cid",
    "mc_eid",
    "_ga",
    "yclid",
    "igshid",
    "ref_src",
)


@dataclass(frozen=True)
class OutputConfig:
    dir: Path
    pretty: bool = False


@dataclass(frozen=True)
class StateConfig:
    path: Path
    seen_entry_max_age: float = 365 * 86400.0


@dataclass(frozen=True)
class HTTPConfig:
    allowed_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    user_agent: str = DEFAULT_USER_AGENT
    proxy: str | None = None
    max_connections: int = 100
    per_host_connections: int = 2
    per_host_delay: float = 0.0
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    total_timeout: float = 60.0
    max_feed_bytes: int = 10 * 1024 * 1024
    max_article_bytes: int = 5 * 1024 * 1024
    max_redirects: int = 5
    retries: int = 2
    retry_base_delay: float = 0.5
    respect_robots_txt: bool = True


@dataclass(frozen=True)
class ScheduleConfig:
    interval: float = 900.0
    min_interval: float = 300.0
    max_interval: float = 86400.0
    jitter: float = 0.1
    max_error_backoff: float = 86400.0
    adaptive: bool = True
    tick: float = 1.0


@dataclass(frozen=True)
class ExtractionConfig:
    workers: int = 0
    timeout: float = 30.0
    use_json_ld: bool = True
    min_text_length: int = 0
    fast: bool = False
    extensive_date_search: bool = False


@dataclass(frozen=True)
class LanguageConfig:
    detector: str = "langdetect"
    # langdetect's cost grows with the text (2.4 ms at 1,000 characters, 4.1 ms at 2,000);
    # a thousand characters of news prose leave no doubt about its language.
    max_chars: int = 1000


@dataclass(frozen=True)
class DedupConfig:
    tracking_params: tuple[str, ...] = DEFAULT_TRACKING_PARAMS
    near_duplicates: str = "mark"
    threshold: float = 0.5
    num_perm: int = 128
    window: float = 30 * 86400.0
    updates: bool = False
    update_threshold: float = 0.8


@dataclass(frozen=True)
class MetricsConfig:
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 9108


@dataclass(frozen=True)
class PipelineConfig:
    max_concurrent_feeds: int = 32
    article_concurrency: int = 16
    queue_size: int = 64  # at most this many frontier items claimed in one round
    shutdown_grace: float = 10.0
    max_article_attempts: int = 5
    article_retry_delay: float = 60.0  # the first retry's wait; each next one is 4x longer
    once_max_wait: float = 120.0


@dataclass(frozen=True)
class BasicAuth:
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class RequestOptions:
    """A feed's own request settings. Headers and credentials go only to the feed's own
    host (its feed and its article pages there); the rest to all of its requests."""

    # repr=False: values such as Authorization or Cookie headers are secrets.
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    user_agent: str | None = None
    proxy: str | None = field(default=None, repr=False)  # may carry credentials
    timeout: float | None = None
    auth: BasicAuth | None = field(default=None, repr=False)


@dataclass(frozen=True)
class FeedConfig:
    url: str
    name: str | None = None
    interval: float | None = None
    fetch_articles: bool = True
    respect_robots_txt: bool | None = None
    tags: tuple[str, ...] = ()
    enabled: bool = True
    min_text_length: int | None = None
    request: RequestOptions = field(default_factory=RequestOptions)

    @property
    def feed_id(self) -> str:
        """The feed's identity in state: its configured URL, even after a 301."""
        return self.url


@dataclass(frozen=True)
class Config:
    source: str
    output: OutputConfig
    state: StateConfig
    http: HTTPConfig = field(default_factory=HTTPConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    extraction: ExtractionConfig = field(default_factory=ExtractionConfig)
    language: LanguageConfig = field(default_factory=LanguageConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    feeds: tuple[FeedConfig, ...] = ()


# --- value parsers: each returns the parsed value or raises ValueError with a reason ---

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kb|kib|mb|mib|gb|gib)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    None: 1,
    "b": 1,
    "kb": 1000,
    "kib": 1024,
    "mb": 1000**2,
    "mib": 1024**2,
    "gb": 1000**3,
    "gib": 1024**3,
}


def parse_duration(value: Any) -> float:
    """'15m', '1h30m', '500ms', '2d' or a number of seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 30s, 15m, 2h, 1d")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        pos, seconds = 0, 0.0
        for match in _DURATION_PART.finditer(text):
            if match.start() != pos:
                break
            seconds += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
            pos = match.end()
        if not text or pos != len(text):
            raise ValueError(f"{value!r} is not a duration (use e.g. 30s, 15m, 2h, 1d)")
    else:
        raise ValueError("expected a duration like 30s, 15m, 2h, 1d")
    if seconds < 0:
        raise ValueError("must not be negative")
    return seconds


def parse_size(value: Any) -> int:
    """'10MiB', '500kB' or a number of bytes."""
    if isinstance(value, bool):
        raise ValueError("expected a size like 10MiB")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (match := _SIZE.match(value)):
        unit = match.group(2).lower() if match.group(2) else None
        size = int(float(match.group(1)) * _SIZE_UNITS[unit])
    else:
        raise ValueError(f"{value!r} is not a size (use e.g. 5MiB, 500kB)")
    if size <= 0:
        raise ValueError("must be positive")
    return size


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def _int(minimum: int, maximum: int | None = None) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected a whole number, got {value!r}")
        if value < minimum or (maximum is not None and value > maximum):
            upper = f" and {maximum}" if maximum is not None else ""
            raise ValueError(
                f"must be at least {minimum}{upper}"
                if not upper
                else f"must be between {minimum}{upper}"
            )
        return value

    return parse


def _float(minimum: float, maximum: float) -> Callable[[Any], float]:
    def parse(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected a number, got {value!r}")
        if not minimum <= value <= maximum:
            raise ValueError(f"must be between {minimum} and {maximum}")
        return float(value)

    return parse


def _str(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a non-empty string, got {value!r}")
    return value


def _optional_str(value: Any) -> str | None:
    return None if value is None else _str(value)


def _choice(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {value!r}")
        return str(value)

    return parse


def _str_list(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError("expected a list of strings")
    return tuple(value)


def _networks(value: Any) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    if not isinstance(value, list):
        raise ValueError('expected a list of CIDRs, e.g. ["127.0.0.0/8"]')
    networks = []
    for item in value:
        try:
            networks.append(ipaddress.ip_network(str(item), strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not a CIDR network (e.g. 10.0.0.0/8)") from None
    return tuple(networks)


def _http_url(value: Any) -> str:
    from urllib.parse import urlsplit

    text = _str(value).strip()
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{text!r} is not an http(s) URL")
    return text


_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# Set by the fetcher itself: a per-feed value would break conditional GET or decoding.
_RESERVED_HEADERS = frozenset(
    {"host", "content-length", "if-none-match", "if-modified-since", "accept-encoding"}
)


def _headers(value: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict):
        raise ValueError("expected a mapping of header names to values")
    headers = []
    for name, text in value.items():
        if not isinstance(name, str) or not _HEADER_NAME.match(name):
            raise ValueError(f"{name!r} is not a valid header name")
        if name.lower() in _RESERVED_HEADERS:
            raise ValueError(f"{name} is set by ingestor itself and cannot be overridden")
        # The value is never echoed: it may be a token.
        if not isinstance(text, str) or "\r" in text or "\n" in text:
            raise ValueError(f"the value of {name} must be a one-line string")
        headers.append((name, text))
    return tuple(headers)


def _secret(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("expected a non-empty string (the value is not shown: it is secret)")
    return value


def _auth(value: Any) -> BasicAuth:
    if not isinstance(value, dict) or set(value) != {"username", "password"}:
        raise ValueError("expected username: and password: (HTTP basic authentication)")
    username = value["username"]
    if not isinstance(username, str) or not username or ":" in username:
        raise ValueError("username must be a non-empty string without ':'")
    try:
        return BasicAuth(username, _secret(value["password"]))
    except ValueError as exc:
        raise ValueError(f"password: {exc}") from None


def _proxy(value: Any) -> str | None:
    from urllib.parse import urlsplit

    if value is None:
        return None
    if not isinstance(value, str) or urlsplit(value).scheme not in ("http", "https"):
        raise ValueError("expected an http:// or https:// proxy URL")
    return value


def _positive_duration(value: Any) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError("must be positive")
    return seconds


def _path(value: Any) -> Path:
    return Path(_str(value)).expanduser()


_Spec = dict[str, Callable[[Any], Any]]

_SECTIONS: dict[str, tuple[type, _Spec]] = {
    "output": (OutputConfig, {"dir": _path, "pretty": _bool}),
    "state": (StateConfig, {"path": _path, "seen_entry_max_age": parse_duration}),
    "http": (
        HTTPConfig,
        {
            "allowed_networks": _networks,
            "user_agent": _str,
            "proxy": _proxy,
            "max_connections": _int(1, 10000),
            "per_host_connections": _int(1, 100),
            "per_host_delay": parse_duration,
            "connect_timeout": parse_duration,
            "read_timeout": parse_duration,
            "total_timeout": parse_duration,
            "max_feed_bytes": parse_size,
            "max_article_bytes": parse_size,
            "max_redirects": _int(0, 20),
            "retries": _int(0, 10),
            "retry_base_delay": parse_duration,
            "respect_robots_txt": _bool,
        },
    ),
    "schedule": (
        ScheduleConfig,
        {
            "interval": parse_duration,
            "min_interval": parse_duration,
            "max_interval": parse_duration,
            "jitter": _float(0.0, 0.5),
            "max_error_backoff": parse_duration,
            "adaptive": _bool,
            "tick": parse_duration,
        },
    ),
    "extraction": (
        ExtractionConfig,
        {
            "workers": _int(0, 256),
            "timeout": parse_duration,
            "use_json_ld": _bool,
            "min_text_length": _int(0),
            "fast": _bool,
            "extensive_date_search": _bool,
        },
    ),
    "language": (
        LanguageConfig,
        {"detector": _choice("langdetect", "py3langid"), "max_chars": _int(50, 1_000_000)},
    ),
    "dedup": (
        DedupConfig,
        {
            "tracking_params": _str_list,
            "near_duplicates": _choice("mark", "drop"),
            "threshold": _float(0.05, 1.0),
            "num_perm": _int(16, 1024),
            "window": parse_duration,
            "updates": _bool,
            "update_threshold": _float(0.0, 1.0),
        },
    ),
    "metrics": (
        MetricsConfig,
        {"enabled": _bool, "host": _str, "port": _int(0, 65535)},
    ),
    "pipeline": (
        PipelineConfig,
        {
            "max_concurrent_feeds": _int(1, 10000),
            "article_concurrency": _int(1, 10000),
            "queue_size": _int(1, 1_000_000),
            "shutdown_grace": parse_duration,
            "max_article_attempts": _int(1, 100),
            "article_retry_delay": parse_duration,
            "once_max_wait": parse_duration,
        },
    ),
}

_FEED_SPEC: _Spec = {
    "url": _http_url,
    "name": _optional_str,
    "interval": parse_duration,
    "fetch_articles": _bool,
    "respect_robots_txt": _bool,
    "tags": _str_list,
    "enabled": _bool,
    "min_text_length": _int(0),
}
# Per-feed request options: written at the feed's top level, kept in FeedConfig.request.
_REQUEST_SPEC: _Spec = {
    "headers": _headers,
    "user_agent": _str,
    "proxy": _proxy,
    "timeout": _positive_duration,
    "auth": _auth,
}

_REQUIRED = {"output": ("dir",), "state": ("path",)}

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
            return ""

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
    spec: _Spec,
    raw: Any,
    path: str,
    problems: list[str],
    source: str,
    base: Mapping[str, Any] | None = None,
    required: tuple[str, ...] = (),
) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        problems.append(f"{source}: {path}: expected a mapping of keys, got {type(raw).__name__}")
        return None
    values: dict[str, Any] = dict(base or {})
    ok = True
    for key, value in raw.items():
        key_path = _join(path, str(key))
        parser = spec.get(str(key))
        if parser is None:
            known = ", ".join(sorted(spec))
            problems.append(f"{source}: {key_path}: unknown key (known keys: {known})")
            ok = False
            continue
        try:
            values[str(key)] = parser(value)
        except ValueError as exc:
            problems.append(f"{source}: {key_path}: {exc}")
            ok = False
    for key in required:
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
    sections: dict[str, Any] = {}
    for key in data:
        if key not in _SECTIONS and key != "feeds":
            known = ", ".join([*sorted(_SECTIONS), "feeds"])
            problems.append(f"{source}: {key}: unknown key (known keys: {known})")
    for name, (cls, spec) in _SECTIONS.items():
        required = _REQUIRED.get(name, ())
        if name in _REQUIRED and name not in data:
            problems.append(f"{source}: {name}: required section is missing")
            continue
        sections[name] = _build(
            cls, spec, data.get(name), name, problems, source, required=required
        )
    feeds = _parse_feeds(data.get("feeds"), problems, source)
    schedule = sections.get("schedule")
    if schedule is not None and schedule.min_interval > schedule.max_interval:
        problems.append(f"{source}: schedule.min_interval: must not exceed schedule.max_interval")
    http = sections.get("http")
    if http is not None and http.total_timeout <= 0:
        problems.append(f"{source}: http.total_timeout: must be positive")
    if problems:
        raise ConfigError(problems)
    base = base_dir or Path.cwd()
    output = sections["output"]
    state = sections["state"]
    output = OutputConfig(dir=_resolve(output.dir, base), pretty=output.pretty)
    state = StateConfig(
        path=_resolve(state.path, base), seen_entry_max_age=state.seen_entry_max_age
    )
    return Config(
        source=source,
        output=output,
        state=state,
        http=sections["http"],
        schedule=sections["schedule"],
        extraction=sections["extraction"],
        language=sections["language"],
        dedup=sections["dedup"],
        metrics=sections["metrics"],
        pipeline=sections["pipeline"],
        feeds=tuple(feeds),
    )


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
        request = None
        if isinstance(item, dict):
            options = {k: v for k, v in item.items() if k in _REQUEST_SPEC}
            item = {k: v for k, v in item.items() if k not in _REQUEST_SPEC}
            request = _build(RequestOptions, _REQUEST_SPEC, options, path, problems, source)
        spec = {**_FEED_SPEC, **_REQUEST_SPEC}
        feed = _build(FeedConfig, spec, item, path, problems, source, required=("url",))
        if feed is None or request is None:
            continue
        feed = replace(feed, request=request)
        if feed.url in seen:
            problems.append(
                f"{source}: {path}.url: duplicate of feeds[{seen[feed.url]}].url ({feed.url})"
            )
            continue
        seen[feed.url] = index
        feeds.append(feed)
    return feeds


def load_config(path: str | Path) -> Config:
    """Read, expand and validate a YAML config file; raises ConfigError with every problem."""
    file = Path(path)
    source = str(file)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{source}: cannot read: {exc.strerror or exc}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError([f"{source}: {where}invalid YAML: {problem}"]) from None
    return parse_config(data, source, base_dir=file.resolve().parent)
