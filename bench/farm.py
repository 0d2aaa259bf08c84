"""A local feed farm for the benchmark: several 127.x hosts in one server process.

Shaped like the web a new user points the ingestor at, not like our own fixtures:
- article pages of 80-140 KB (about 110 KB): the body (about 2,800 characters in one of 12
  languages) inside a portal page with a mega-menu, teaser grids, comments, footer link
  lists, inline scripts, JSON state and styles;
- feeds of about 33 KB for 15 items (categories, authors, media, a summary of about 1,000
  characters), and every fourth feed full-content RSS (`content:encoded`, about 80 KB);
- gzip for every client that asks for it; 5-40 ms per response, one slow host in eight at
  150-400 ms;
- a fault mix: a share of pages and feeds answer 429 or 503 once (Retry-After 1-5 s);
- duplicates: the same URL in two feeds, or a syndicated copy under another URL.
"""

from __future__ import annotations

import asyncio
import email.utils
import gzip
import html
import json
import multiprocessing
import random
import time
from dataclasses import dataclass

from aiohttp import web

from bench.corpus import FAKER_LOCALES, Story

# 12 languages, each with a Faker locale whose lorem provider has the language's own words.
LANGUAGES = {
    "en": "en_US",
    **{
        lang: "ar_AA" if lang == "ar" else FAKER_LOCALES[lang]
        for lang in ("de", "fr", "es", "it", "nl", "pl", "ru", "cs", "ar", "ja", "zh")
    },
}


@dataclass(frozen=True)
class FarmSpec:
    hosts: int = 8
    feeds: int = 60
    items: int = 15
    poll_feeds: int = 0
    latency: tuple[float, float] = (0.005, 0.040)
    port: int = 0
    # This share of pages and of feeds answers 429 or 503 once, with Retry-After 1-5 s
    # (as seconds or as an HTTP date), as real sites under load do.
    fault_rate: float = 0.0
    page_bytes: tuple[int, int] = (80_000, 140_000)
    body_chars: int = 2_800
    # One host in `slow_every` answers in `slow_latency` instead (0: none).
    slow_every: int = 8
    slow_latency: tuple[float, float] = (0.150, 0.400)
    gzip: bool = True


def is_faulty(path: str, rate: float) -> bool:
    return rate > 0 and random.Random(f"fault:{path}").random() < rate


def fault_response(path: str) -> web.Response:
    rng = random.Random(f"kind:{path}")
    seconds = rng.randint(1, 5)
    status = rng.choice((429, 503))
    if rng.random() < 0.5:
        value = str(seconds)
    else:
        value = email.utils.formatdate(time.time() + seconds + 1, usegmt=True)
    return web.Response(status=status, headers={"Retry-After": value})


def host_address(index: int) -> str:
    return f"127.0.{10 + index // 250}.{1 + index % 250}"


class _Writer:
    """Seeded text in one language, from Faker's word lists (imported lazily: the farm's
    polling-only uses need no Faker)."""

    def __init__(self) -> None:
        from faker import Faker

        self._fakers = {lang: Faker(locale) for lang, locale in LANGUAGES.items()}
        english = self._fakers["en"]
        english.seed_instance(7)
        # Headlines for menus, teasers and comments: drawn from a pool, as seeding Faker
        # per line would cost most of the farm's build time.
        self._teasers = [english.sentence(nb_words=7) for _ in range(3000)]
        self.filler = _filler_blocks(random.Random(11), 400)

    def story(self, seed: int, chars: int) -> Story:
        lang = list(LANGUAGES)[seed % len(LANGUAGES)]
        fake = self._fakers[lang]
        fake.seed_instance(seed)
        title = fake.sentence(nb_words=8).rstrip(".。")
        paragraphs: list[str] = []
        total = 0
        while total < chars:
            paragraph = fake.paragraph(nb_sentences=5, variable_nb_sentences=True)
            paragraphs.append(paragraph)
            total += len(paragraph) + 1
        return Story(f"{lang}-{seed}", lang, title, tuple(paragraphs))

    def teaser(self, rng: random.Random) -> str:
        return rng.choice(self._teasers)


def _filler_blocks(rng: random.Random, count: int) -> list[str]:
    """What makes real pages heavy besides their text: hydration state, inline styles, ad
    loader scripts, ad containers (a site's pages share most of these)."""
    blocks = []
    for _ in range(count):
        kind = rng.randrange(4)
        if kind == 0:
            ads = [
                {"slot": rng.randint(0, 9999), "size": [300, 250], "k": rng.random()}
                for _ in range(25)
            ]
            blocks.append(f"<script>window.__STATE__={json.dumps({'ads': ads})};</script>")
        elif kind == 1:
            rules = "".join(
                f".c{rng.randint(0, 9999)}{{margin:{rng.randint(0, 9)}px;"
                f"color:#{rng.randint(0, 0xFFFFFF):06x}}}"
                for _ in range(40)
            )
            blocks.append(f"<style>{rules}</style>")
        elif kind == 2:
            blocks.append(
                "<script>(function(){var s=document.createElement('script');s.src='https://"
                f"ads.example/tag.js?slot={rng.randint(0, 99999)}';document.head.appendChild(s);"
                "})();</script>" * 6
            )
        else:
            blocks.append(
                f"<div class='ad-container' data-slot='{rng.randint(0, 9999)}'><div "
                "class='ad-label'>Advertisement</div><iframe src='about:blank'></iframe></div>"
            )
    return blocks


def article_page(story: Story, target_bytes: int, seed: int, writer: _Writer) -> str:
    """A news portal's article page of about target_bytes: what sits around a body on real
    sites (navigation, teaser grids, comments, footer lists) and what makes them heavy
    (inline scripts, hydration state, styles, ad containers)."""
    rng = random.Random(seed)
    esc = html.escape
    title = esc(story.title)
    published = f"2024-03-{1 + seed % 9:02d}T{seed % 24:02d}:{seed % 60:02d}:00+01:00"
    sections = ["News", "World", "Business", "Science", "Sport", "Culture", "Opinion", "Video"]
    mega_menu = "".join(
        f"<li class='menu-group'><a href='/{s.lower()}'>{s}</a><ul>"
        + "".join(
            f"<li><a href='/{s.lower()}/{rng.randint(0, 9999)}'>{esc(writer.teaser(rng))}</a></li>"
            for _ in range(12)
        )
        + "</ul></li>"
        for s in sections
    )
    head = (
        f"<meta charset='utf-8'><title>{title} | Example Times</title>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<meta property='og:title' content='{title}'>"
        "<meta property='og:site_name' content='Example Times'>"
        "<meta property='og:type' content='article'>"
        f"<meta name='description' content='{esc(story.paragraphs[0][:160])}'>"
        # As on most news sites: the dates in article meta and in schema.org JSON-LD.
        f"<meta property='article:published_time' content='{published}'>"
        f"<meta property='article:modified_time' content='{published}'>"
        "<script type='application/ld+json'>"
        + json.dumps(
            {
                "@context": "https://schema.org",
                "@type": "NewsArticle",
                "headline": story.title,
                "datePublished": published,
                "dateModified": published,
                "author": {"@type": "Person", "name": "Staff Reporter"},
                "publisher": {"@type": "Organization", "name": "Example Times"},
                "inLanguage": story.lang,
            },
            ensure_ascii=False,
        ).replace("</", "<\\/")
        + "</script>"
        "<link rel='stylesheet' href='/static/main.css'>"
        + "".join(f"<link rel='preload' href='/static/f{i}.woff2' as='font'>" for i in range(4))
    )
    paras = story.paragraphs
    body_parts: list[str] = []
    for i, paragraph in enumerate(paras):
        body_parts.append(f"<p>{esc(paragraph)}</p>")
        if i == 1:
            body_parts.append(
                "<div class='inline-related'><strong>Read also:</strong> "
                f"<a href='/news/{rng.randint(0, 9999)}'>{esc(writer.teaser(rng))}</a></div>"
            )
        if i == 3:
            body_parts.append(
                "<figure><img src='/img/photo.jpg' alt='' loading='lazy'><figcaption>"
                f"{esc(writer.teaser(rng))}</figcaption></figure>"
            )
    comments = "".join(
        f"<div class='comment'><span class='author'>reader{rng.randint(1, 999)}</span>"
        f"<time>2 h</time><p>{esc(writer.teaser(rng))} {esc(writer.teaser(rng))}</p>"
        "<a class='reply' href='#'>Reply</a></div>"
        for _ in range(rng.randint(3, 8))
    )

    def teaser_grid(name: str, cards: int) -> str:
        return (
            f"<section class='{name}'><h2>{name.replace('-', ' ').title()}</h2>"
            + "".join(
                f"<div class='card'><a href='/news/{rng.randint(0, 99999)}'><img src='/t/"
                f"{rng.randint(0, 9999)}.jpg' alt=''><h3>{esc(writer.teaser(rng))}</h3></a>"
                f"<p class='kicker'>{esc(writer.teaser(rng))}</p>"
                f"<span class='meta'>{rng.randint(1, 59)} min</span></div>"
                for _ in range(cards)
            )
            + "</section>"
        )

    footer = (
        "<footer>"
        + "".join(
            f"<div class='col'><h4>{s}</h4><ul>"
            + "".join(f"<li><a href='/{s.lower()}/{j}'>{s} {j}</a></li>" for j in range(10))
            + "</ul></div>"
            for s in sections
        )
        + "<p>© 2024 Example Times. All rights reserved.</p></footer>"
    )
    page = (
        f"<!DOCTYPE html><html lang='{story.lang}'><head>{head}</head><body>"
        "<div class='cookie-banner'><p>We use cookies to personalise content and ads and to "
        "analyse our traffic.</p><button>Accept all</button></div>"
        f"<header><nav class='mega'><ul>{mega_menu}</ul></nav></header>"
        "<div class='breadcrumbs'><a href='/'>Home</a> › <a href='/news'>News</a></div>"
        f"<main><article class='story'><h1>{title}</h1><p class='byline'>By Staff Reporter"
        f" <time datetime='{published}'>{published[:10]}</time></p>"
        f"<div class='story-body'>{''.join(body_parts)}</div>"
        "<div class='share'><a href='#'>Facebook</a><a href='#'>X</a><a href='#'>Email</a>"
        f"</div></article><section id='comments'><h2>Comments</h2>{comments}</section>"
        f"{teaser_grid('most-read', 10)}{teaser_grid('more-from-the-site', 16)}</main>"
        f"{footer}</body></html>"
    )
    filler: list[str] = []
    size = len(page.encode())
    while size < target_bytes:
        block = rng.choice(writer.filler)
        filler.append(block)
        size += len(block)
    return page.replace("</body>", "".join(filler) + "</body>")


class FarmContent:
    """Deterministic pages and feeds, also rebuilt by the benchmark for the baselines."""

    def __init__(self, spec: FarmSpec, port: int) -> None:
        self.spec = spec
        self.port = port
        self.pages: dict[str, bytes] = {}
        self.feeds: dict[str, tuple[bytes, str]] = {}
        self.languages: dict[str, str] = {}  # page path -> the language its body is in
        self.bodies: dict[str, str] = {}  # page path -> its body's paragraphs
        self._build()

    def base(self, host: int) -> str:
        return f"http://{host_address(host % self.spec.hosts)}:{self.port}"

    def article_url(self, feed: int, item: int) -> str:
        return f"{self.base(feed + item)}/a/{feed}/{item}.html"

    def _build(self) -> None:
        rng = random.Random(42)
        spec = self.spec
        writer = _Writer() if spec.feeds else None
        for feed in range(spec.feeds):
            assert writer is not None
            entries = []
            for item in range(spec.items):
                url = self.article_url(feed, item)
                n = feed * 10_000 + item
                story = writer.story(n, spec.body_chars)
                roll = rng.random()
                if roll < 0.05 and feed > 0:
                    # The same article through another feed (URL-level duplicate).
                    url = self.article_url(feed - 1, item)
                    story = writer.story(n - 10_000, spec.body_chars)
                elif roll < 0.10 and feed > 0:
                    # A syndicated copy: another URL, the previous feed's story, one extra
                    # paragraph (near duplicate).
                    source = writer.story(n - 10_000, spec.body_chars)
                    story = Story(
                        story.name,
                        source.lang,
                        source.title,
                        (*source.paragraphs, "Distributed by the wire service."),
                    )
                path = "/" + url.split(":", 2)[2].split("/", 1)[1]
                if path not in self.pages:
                    size = rng.randint(*spec.page_bytes)
                    self.pages[path] = article_page(story, size, n, writer).encode("utf-8")
                    self.languages[path] = story.lang
                    self.bodies[path] = "\n".join(story.paragraphs)
                entries.append((url, story))
            kind = FEED_KINDS[feed % len(FEED_KINDS)]
            self.feeds[f"/feeds/{feed}.{kind}"] = _render_feed(kind, feed, entries)
        for n in range(spec.poll_feeds):
            self.feeds[f"/poll/{n}.xml"] = (_tiny_rss(n), "application/rss+xml")

    def feed_urls(self) -> list[str]:
        return [
            f"{self.base(i)}/feeds/{i}.{FEED_KINDS[i % len(FEED_KINDS)]}"
            for i in range(self.spec.feeds)
        ]

    def poll_urls(self, unchanged: bool) -> list[str]:
        prefix = "poll-same" if unchanged else "poll"
        return [f"{self.base(n)}/{prefix}/{n}.xml" for n in range(self.spec.poll_feeds)]


# Every fourth feed is full-content RSS: the body is in the feed as well as on the page.
FEED_KINDS = ("rss", "atom", "json", "full.rss")


def _summary(story: Story) -> str:
    text = " ".join(story.paragraphs)
    return text[:1000].rsplit(" ", 1)[0] + "…" if len(text) > 1000 else text


def _render_feed(kind: str, feed: int, entries: list[tuple[str, Story]]) -> tuple[bytes, str]:
    date = "2024-03-0{d}T{h:02d}:00:00Z"
    esc = html.escape
    if kind == "json":
        items = [
            {
                "id": f"{feed}-{i}",
                "url": url,
                "title": s.title,
                "summary": _summary(s),
                "image": f"https://cdn.example/img/{feed}/{i}.jpg",
                "date_published": date.format(d=1 + i % 9, h=i % 24),
                "authors": [{"name": "Staff Reporter", "url": "https://example.org/staff"}],
                "tags": ["news", "region", s.lang],
                "language": s.lang,
            }
            for i, (url, s) in enumerate(entries)
        ]
        body = json.dumps(
            {
                "version": "https://jsonfeed.org/version/1.1",
                "title": f"Feed {feed}",
                "home_page_url": "https://example.org/",
                "feed_url": f"https://example.org/feeds/{feed}.json",
                "items": items,
            },
            ensure_ascii=False,
        )
        return body.encode(), "application/feed+json"
    if kind == "atom":
        body = "".join(
            f"<entry><id>urn:{feed}:{i}</id><title>{esc(s.title)}</title>"
            f"<link rel='alternate' type='text/html' href='{esc(url)}'/>"
            f"<published>{date.format(d=1 + i % 9, h=i % 24)}</published>"
            f"<updated>{date.format(d=1 + i % 9, h=i % 24)}</updated>"
            "<author><name>Staff Reporter</name><uri>https://example.org/staff</uri></author>"
            "<category term='news'/><category term='region'/>"
            f"<summary type='html'>{esc('<p>' + esc(_summary(s)) + '</p>')}</summary></entry>"
            for i, (url, s) in enumerate(entries)
        )
        return (
            f"<?xml version='1.0' encoding='utf-8'?><feed xmlns='http://www.w3.org/2005/"
            f"Atom'><title>Feed {feed}</title><id>urn:feed:{feed}</id>"
            "<link rel='self' href='https://example.org/atom'/>"
            f"<updated>2024-03-01T00:00:00Z</updated>{body}</feed>"
        ).encode(), ("application/atom+xml")
    full = kind == "full.rss"
    items = []
    for i, (url, s) in enumerate(entries):
        content = ""
        if full:
            paragraphs = "".join(f"<p>{esc(p)}</p>" for p in s.paragraphs)
            content = f"<content:encoded><![CDATA[{paragraphs}]]></content:encoded>"
        items.append(
            f"<item><guid isPermaLink='false'>{feed}-{i}</guid><title>{esc(s.title)}</title>"
            f"<link>{esc(url)}</link><pubDate>Fri, 0{1 + i % 9} Mar 2024 "
            f"{i % 24:02d}:00:00 GMT</pubDate><dc:creator>Staff Reporter</dc:creator>"
            "<category>News</category><category>Region</category>"
            f"<description>{esc('<p>' + esc(_summary(s)) + '</p>')}</description>{content}"
            f"<media:content url='https://cdn.example/img/{feed}/{i}.jpg' medium='image' "
            f"width='1200' height='675'/><comments>{esc(url)}#comments</comments></item>"
        )
    return (
        "<?xml version='1.0' encoding='utf-8'?><rss version='2.0' "
        "xmlns:content='http://purl.org/rss/1.0/modules/content/' "
        "xmlns:dc='http://purl.org/dc/elements/1.1/' "
        "xmlns:media='http://search.yahoo.com/mrss/'><channel>"
        f"<title>Feed {feed}</title><link>http://example.org/</link>"
        f"<description>News from feed {feed}</description><language>en</language>"
        f"{''.join(items)}</channel></rss>"
    ).encode(), "application/rss+xml"


def _tiny_rss(n: int) -> bytes:
    return (
        f"<?xml version='1.0'?><rss version='2.0'><channel><title>Poll {n}</title>"
        f"<link>http://example.org/{n}</link><description>quiet feed</description>"
        f"</channel></rss>"
    ).encode()


class _Handler:
    """The farm's answers: pages, feeds with validators, polls, faults, latency, gzip."""

    def __init__(self, spec: FarmSpec, port: int) -> None:
        self.spec = spec
        self.content = FarmContent(spec, port)
        self.faulted: set[str] = set()
        # Compressed once here, so that serving costs the farm little CPU (it shares the
        # cores with the ingestor).
        self.gzipped: dict[str, bytes] = {}
        if spec.gzip:
            for path, body in self.content.pages.items():
                self.gzipped[path] = gzip.compress(body, 6)
            for path, (body, _media) in self.content.feeds.items():
                self.gzipped[path] = gzip.compress(body, 6)
        self.slow_hosts = {
            host_address(h)
            for h in range(spec.hosts)
            if spec.slow_every and h % spec.slow_every == 1
        }

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        spec, content, path = self.spec, self.content, request.path
        if spec.latency[1] and not path.startswith("/poll"):
            host = (request.host or "").rsplit(":", 1)[0]
            slow = host in self.slow_hosts
            await asyncio.sleep(random.uniform(*(spec.slow_latency if slow else spec.latency)))
        known = path in content.feeds or path in content.pages
        if known and path not in self.faulted and is_faulty(path, spec.fault_rate):
            self.faulted.add(path)
            return fault_response(path)
        if path == "/robots.txt":
            return web.Response(text="User-agent: *\nAllow: /\n")
        if path.startswith(("/poll-same/", "/poll/")):
            return self.poll(request, path)
        if path in content.feeds:
            etag = f'"f{path}"'
            if request.headers.get("If-None-Match") == etag:
                return web.Response(status=304, headers={"ETag": etag})
            body, media = content.feeds[path]
            return self.respond(request, path, body, media, etag)
        if path in content.pages:
            return self.respond(request, path, content.pages[path], "text/html; charset=utf-8")
        return web.Response(status=404)

    def respond(
        self, request: web.Request, path: str, body: bytes, media: str, etag: str = ""
    ) -> web.Response:
        headers = {"Content-Type": media}
        if etag:
            headers["ETag"] = etag
        if path in self.gzipped and "gzip" in request.headers.get("Accept-Encoding", ""):
            headers["Content-Encoding"] = "gzip"
            body = self.gzipped[path]
        return web.Response(body=body, headers=headers)

    def poll(self, request: web.Request, path: str) -> web.Response:
        if path.startswith("/poll-same/"):
            body, media = self.content.feeds[path.replace("/poll-same/", "/poll/")]
            return web.Response(body=body, content_type=media)  # no validators: same body
        etag = f'"p{path}"'
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag})
        body, media = self.content.feeds[path]
        return web.Response(body=body, content_type=media, headers={"ETag": etag})


def _serve(spec: FarmSpec, port: int, ready: multiprocessing.synchronize.Event) -> None:
    handler = _Handler(spec, port)

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/{tail:.*}", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        for host in range(spec.hosts):
            await web.TCPSite(runner, host_address(host), port, backlog=1024).start()
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


class FarmServer:
    """The farm in its own process, so that its CPU is not counted as the ingestor's."""

    def __init__(self, spec: FarmSpec) -> None:
        self.spec = spec
        self.port = spec.port or _free_port()
        self._process: multiprocessing.Process | None = None

    def __enter__(self) -> FarmContent:
        ready = multiprocessing.get_context("fork").Event()
        self._process = multiprocessing.get_context("fork").Process(
            target=_serve, args=(self.spec, self.port, ready), daemon=True
        )
        self._process.start()
        if not ready.wait(120):
            raise RuntimeError("the feed farm did not start")
        return FarmContent(self.spec, self.port)

    def __exit__(self, *exc: object) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.join(10)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((host_address(0), 0))
        return sock.getsockname()[1]
