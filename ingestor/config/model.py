"""The configuration, declared once: each setting is a dataclass field whose metadata says
how its YAML value is parsed. The loader, the reload check and the example-file test all
read these declarations; nothing else lists the settings."""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from ingestor import __version__
from ingestor.config import values as v

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
LanguageDetector = Literal["langdetect", "py3langid"]
ExtractionEngine = Literal["trafilatura", "resiliparse"]
NearDuplicateMode = Literal["mark", "drop"]
# An entry whose page could not be used (404, not HTML, a refused address, a soft 404, a
# page given up on): a record from the feed's own text that says why, or none.
PageFailureMode = Literal["record", "skip"]
_REQUIRED = dataclasses.MISSING


def setting(default: Any, parse: Callable[[Any], Any], *, shown: bool = True) -> Any:
    """A configurable field: its default (or _REQUIRED) and the parser of its YAML value;
    `shown=False` keeps a secret out of repr (and so out of logs)."""
    if default is _REQUIRED:
        return field(metadata={"parse": parse, "required": True}, repr=shown)
    return field(default=default, metadata={"parse": parse}, repr=shown)


@cache  # asked once per feed: a 10,000-feed file asked 20,000 times
def parsers(cls: type) -> dict[str, Callable[[Any], Any]]:
    """YAML key -> parser, for every setting of a section dataclass."""
    return {f.name: f.metadata["parse"] for f in dataclasses.fields(cls) if "parse" in f.metadata}


@cache
def required(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get("required"))


@dataclass(frozen=True)
class OutputConfig:
    dir: Path = setting(_REQUIRED, v.path)
    pretty: bool = setting(False, v.boolean)
    journal: bool = setting(True, v.boolean)
    journal_segment_size: int = setting(64 * 1024 * 1024, v.parse_size)
    journal_segment_age: float = setting(86400.0, v.positive_duration)
    retention: float | None = setting(None, v.optional_duration)


@dataclass(frozen=True)
class StateConfig:
    """Exactly one of `path` (SQLite, one machine) and `url` (PostgreSQL, a fleet)."""

    path: Path | None = setting(None, v.path)
    url: str | None = setting(None, v.postgres_url, shown=False)
    lease_ttl: float = setting(60.0, v.positive_duration)
    instance_id: str | None = setting(None, v.optional_str)
    seen_entry_max_age: float = setting(365 * 86400.0, v.parse_duration)
    # A SQLite state that migrate-state moved into PostgreSQL is refused (its journal
    # would get the same seqs twice); true uses it again, to go back after a migration.
    allow_moved: bool = setting(False, v.boolean)

    @property
    def where(self) -> str:
        """The state's location for logs and status, with no password in it."""
        if self.url is not None:
            return v.redact_url(self.url)
        return str(self.path)


@dataclass(frozen=True)
class HTTPConfig:
    allowed_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = setting(
        (), v.networks
    )
    user_agent: str = setting(DEFAULT_USER_AGENT, v.text)
    proxy: str | None = setting(None, v.proxy)
    max_connections: int = setting(100, v.whole(1, 10000))
    per_host_connections: int = setting(2, v.whole(1, 100))
    per_host_delay: float = setting(0.0, v.parse_duration)
    connect_timeout: float = setting(10.0, v.parse_duration)
    read_timeout: float = setting(30.0, v.parse_duration)
    total_timeout: float = setting(60.0, v.positive_duration)
    # An article page's whole request: a trickling page is cut off sooner than a feed.
    article_timeout: float = setting(30.0, v.positive_duration)
    max_feed_bytes: int = setting(10 * 1024 * 1024, v.parse_size)
    max_article_bytes: int = setting(5 * 1024 * 1024, v.parse_size)
    max_redirects: int = setting(5, v.whole(0, 20))
    retries: int = setting(2, v.whole(0, 10))
    retry_base_delay: float = setting(0.5, v.parse_duration)
    respect_robots_txt: bool = setting(True, v.boolean)


@dataclass(frozen=True)
class ScheduleConfig:
    interval: float = setting(900.0, v.parse_duration)
    min_interval: float = setting(300.0, v.parse_duration)
    # None: adaptive polling stretches a feed's interval at most ADAPTIVE_STRETCH times.
    max_interval: float | None = setting(None, v.optional_duration)
    jitter: float = setting(0.1, v.number(0.0, 0.5))
    max_error_backoff: float = setting(86400.0, v.parse_duration)
    adaptive: bool = setting(True, v.boolean)
    tick: float = setting(1.0, v.parse_duration)


@dataclass(frozen=True)
class ExtractionConfig:
    workers: int = setting(0, v.whole(0, 256))
    timeout: float = setting(30.0, v.parse_duration)
    use_json_ld: bool = setting(True, v.boolean)
    min_text_length: int = setting(0, v.whole(0))
    fast: bool = setting(False, v.boolean)
    extensive_date_search: bool = setting(False, v.boolean)
    # resiliparse: about a sixth of trafilatura's CPU per page, for volume over quality
    # (bench/devset.py; on news portals it keeps teaser grids and comments).
    engine: ExtractionEngine = setting("trafilatura", v.choice_of(ExtractionEngine))
    # With trafilatura, check its reading against resiliparse's (its fallbacks run only
    # where they disagree) and restore the paragraphs resiliparse finds inside the body
    # that trafilatura left out (analyze/extract.py, analyze/second_opinion.py).
    second_opinion: bool = setting(True, v.boolean)
    page_failures: PageFailureMode = setting("record", v.choice_of(PageFailureMode))


@dataclass(frozen=True)
class LanguageConfig:
    detector: LanguageDetector = setting("langdetect", v.choice_of(LanguageDetector))
    # On 417 labelled texts in 19 languages (bench/language_sample.py) the first mistakes
    # appear at 150 characters (nl read as af); from 200 up every answer is right: 400
    # keeps a margin. Where CLD2 answers, 400 characters cost 0.14 ms; where langdetect
    # must, its cost grows with the text (1.6 ms at 400, 5.7 at 2,800).
    max_chars: int = setting(400, v.whole(50, 1_000_000))


@dataclass(frozen=True)
class DedupConfig:
    tracking_params: tuple[str, ...] = setting(DEFAULT_TRACKING_PARAMS, v.str_list)
    near_duplicates: NearDuplicateMode = setting("mark", v.choice_of(NearDuplicateMode))
    threshold: float = setting(0.5, v.number(0.05, 1.0))
    num_perm: int = setting(128, v.whole(16, 1024))
    window: float = setting(30 * 86400.0, v.parse_duration)
    updates: bool = setting(False, v.boolean)
    update_threshold: float = setting(0.8, v.number(0.0, 1.0))


@dataclass(frozen=True)
class MetricsConfig:
    enabled: bool = setting(False, v.boolean)
    host: str = setting("127.0.0.1", v.text)
    port: int = setting(9108, v.whole(0, 65535))


@dataclass(frozen=True)
class PipelineConfig:
    max_concurrent_feeds: int = setting(32, v.whole(1, 10000))
    article_concurrency: int = setting(16, v.whole(1, 10000))
    queue_size: int = setting(64, v.whole(1, 1_000_000))  # items claimed in one round
    shutdown_grace: float = setting(10.0, v.parse_duration)
    max_article_attempts: int = setting(5, v.whole(1, 100))
    # The first retry's wait; each next one is 4x longer.
    article_retry_delay: float = setting(60.0, v.parse_duration)
    once_max_wait: float = setting(120.0, v.parse_duration)


@dataclass(frozen=True)
class BasicAuth:
    username: str
    password: str = field(repr=False)


def _basic_auth(value: Any) -> BasicAuth:
    return BasicAuth(*v.credentials(value))


@dataclass(frozen=True)
class RequestOptions:
    """A feed's own request settings. Headers and credentials go only to the feed's own
    host (its feed and its article pages there); the rest to all of its requests. Written
    at the feed's top level in YAML."""

    # repr=False: values such as Authorization or Cookie headers are secrets.
    headers: tuple[tuple[str, str], ...] = setting((), v.headers, shown=False)
    user_agent: str | None = setting(None, v.text)
    proxy: str | None = setting(None, v.proxy, shown=False)  # may carry credentials
    timeout: float | None = setting(None, v.positive_duration)
    auth: BasicAuth | None = setting(None, _basic_auth, shown=False)


@dataclass(frozen=True)
class FeedConfig:
    """One feed. Settings left None here inherit the global one (Config resolves them)."""

    url: str = setting(_REQUIRED, v.http_url)
    name: str | None = setting(None, v.optional_str)
    interval: float | None = setting(None, v.parse_duration)  # None: schedule.interval
    fetch_articles: bool = setting(True, v.boolean)
    respect_robots_txt: bool | None = setting(None, v.boolean)
    tags: tuple[str, ...] = setting((), v.str_list)
    enabled: bool = setting(True, v.boolean)
    min_text_length: int | None = setting(None, v.whole(0))
    # `site: URL` instead of `url:`: the site's feeds and sitemaps are discovered and each
    # is polled with this entry's options (url is then the site's address, its identity).
    site: bool = False
    # At the first poll, read up to this many older entries from the feed's history
    # (RFC 5005 prev-archive / next links; a sitemap's entries older than sitemap_max_age).
    backfill: int = setting(0, v.whole(0))
    # A sitemap entry older than this is not news: it is left out (unless backfilled).
    sitemap_max_age: float = setting(2 * 86400.0, v.parse_duration)
    request: RequestOptions = field(default_factory=RequestOptions)

    @property
    def feed_id(self) -> str:
        """The feed's identity in state: its configured URL, even after a 301."""
        return self.url


SinkStart = Literal["oldest", "latest"]


@dataclass(frozen=True)
class WebhookConfig:
    """One webhook sink: the journal POSTed in order, signed with `secret`."""

    url: str = setting(_REQUIRED, v.http_url, shown=False)  # its query may hold a token
    secret: str = setting(_REQUIRED, v.secret, shown=False)
    batch: int = setting(100, v.whole(1, 10_000))
    timeout: float = setting(10.0, v.positive_duration)
    headers: tuple[tuple[str, str], ...] = setting((), v.headers, shown=False)
    name: str | None = setting(None, v.optional_str)
    # YAML `from:`: a new sink starts at the oldest journal line kept, or the next written.
    start: SinkStart = setting("oldest", v.choice_of(SinkStart))

    @property
    def sink_name(self) -> str:
        """Its name in the state, `status` and metrics: `name`, else the URL's host and
        path (never its query, which may hold a token)."""
        if self.name:
            return self.name
        parts = urlsplit(self.url)
        return f"{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path}"


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
    sinks: tuple[WebhookConfig, ...] = ()

    def __post_init__(self) -> None:
        # Per-feed overrides resolved once: every FeedConfig carries its effective values.
        resolved = tuple(
            dataclasses.replace(
                feed,
                respect_robots_txt=self.http.respect_robots_txt
                if feed.respect_robots_txt is None
                else feed.respect_robots_txt,
                min_text_length=self.extraction.min_text_length
                if feed.min_text_length is None
                else feed.min_text_length,
            )
            for feed in self.feeds
        )
        object.__setattr__(self, "feeds", resolved)


def sections() -> dict[str, type]:
    """The top-level YAML sections (all but `feeds`) and their dataclasses."""
    return {
        f.name: f.default_factory  # type: ignore[misc]
        for f in dataclasses.fields(Config)
        if f.default_factory is not dataclasses.MISSING and f.name not in ("feeds", "sinks")
    } | {"output": OutputConfig, "state": StateConfig}
