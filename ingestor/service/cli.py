"""The `ingestor` command.

Exit codes: 0 the command (or pass) completed, even if some feeds failed; 1 a fatal error
(state store unusable, output directory not writable); 2 a bad configuration or usage.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

from ingestor import __version__
from ingestor.config.load import load_config
from ingestor.config.model import Config
from ingestor.errors import ConfigError, ServiceError, SinkError, StateError
from ingestor.pipeline.outcomes import PassSummary
from ingestor.service.logsetup import setup_logging

log = logging.getLogger("ingestor")

EXIT_OK, EXIT_FATAL, EXIT_CONFIG = 0, 1, 2
_EXIT_CODES = """exit codes:
  0  completed (a pass with failing feeds still exits 0: see the log and `ingestor status`);
     also `run --once` stopped by SIGTERM or SIGINT, after its summary
  1  fatal error: state store unusable, output directory not writable
  2  bad configuration or usage
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ingestor",
        description="Asynchronous RSS/Atom/JSON Feed ingestion: clean, deduplicated, "
        "language-tagged article records as JSON files.",
        epilog=_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"ingestor {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=_EXIT_CODES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.add_argument(
            "--log-format",
            choices=("text", "json"),
            default="text",
            help="log lines for people (text) or for machines (json)",
        )
        sub.add_argument(
            "--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR")
        )
        return sub

    run = command(
        "run",
        "Run the daemon until SIGTERM/SIGINT (SIGHUP reloads the config), "
        "or one pass over all feeds with --once.",
    )
    run.add_argument("--config", required=True, type=Path, help="YAML configuration file")
    run.add_argument(
        "--once",
        action="store_true",
        help="poll every enabled feed now (still honouring Retry-After, "
        "Cache-Control, error backoff and disabled feeds), then exit",
    )
    run.add_argument(
        "--metrics-file",
        type=Path,
        default=None,
        metavar="FILE",
        help="with --once: write the pass's metrics (Prometheus text format, stage timings "
        "included) to FILE at the end",
    )

    demo = command("demo", "Serve the bundled offline corpus on 127.0.0.1 and ingest it once.")
    demo.add_argument(
        "--output",
        type=Path,
        default=None,
        help="where to write the records (default: a new temporary directory)",
    )
    demo.add_argument(
        "--workers", type=int, default=0, help="extraction worker processes (default: CPU count)"
    )

    check = command("check-config", "Validate a configuration file; one line per problem.")
    check.add_argument("--config", required=True, type=Path)

    opml = command("import-opml", "Turn an OPML feed list into YAML `feeds:` entries.")
    opml.add_argument("opml", type=Path, help="the OPML file")
    opml.add_argument(
        "--append-to",
        type=Path,
        default=None,
        metavar="CONFIG",
        help="append the new feeds to this config file (validated first) instead of printing them",
    )

    status = command("status", "Per-feed status from the state store.")
    status.add_argument("--config", required=True, type=Path)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument(
        "--hosts",
        action="store_true",
        help="the article frontier per host instead of the feeds (with --json too)",
    )
    tail = command(
        "tail",
        "Print the change journal (records created, updated, deleted) as JSON lines, in "
        "journal order; with --follow, new lines as they come.",
    )
    tail.add_argument("--config", required=True, type=Path)
    tail.add_argument(
        "--since",
        type=int,
        default=0,
        metavar="SEQ",
        help="start after this seq (default 0: from the oldest line kept)",
    )
    tail.add_argument("--follow", action="store_true", help="wait for new lines (until SIGINT)")
    tail.add_argument(
        "--cursor",
        type=Path,
        default=None,
        metavar="FILE",
        help="resume after the seq kept in FILE (overrides --since) and keep the last seq "
        "delivered there",
    )
    tail.add_argument(
        "--paths",
        action="store_true",
        help="the journal lines only (seq, op, id, path, ...), without each record's content",
    )
    migrate = command(
        "migrate-state",
        "Move a single machine's SQLite state into PostgreSQL (validators, seen entries, "
        "record reservations, fingerprints, queued articles). Stop the daemon first.",
    )
    migrate.add_argument("--from", dest="source", required=True, type=Path, metavar="PATH")
    migrate.add_argument("--to", dest="target", required=True, metavar="POSTGRESQL_URL")
    migrate.add_argument(
        "--merge",
        action="store_true",
        help="add to a database that already holds state (rows already there are kept)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup_logging(args.log_format, args.log_level)
    handlers = {
        "run": _cmd_run,
        "demo": _cmd_demo,
        "check-config": _cmd_check_config,
        "import-opml": _cmd_import_opml,
        "status": _cmd_status,
        "tail": _cmd_tail,
        "migrate-state": _cmd_migrate_state,
    }
    try:
        return handlers[args.command](args)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"config error: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    except (StateError, SinkError, ServiceError) as exc:
        print(f"fatal: {exc}", file=sys.stderr)
        return EXIT_FATAL
    except KeyboardInterrupt:
        return 130


def _cmd_migrate_state(args: argparse.Namespace) -> int:
    from ingestor.config.values import postgres_url, redact_url
    from ingestor.store.migrate import migrate_state

    try:
        target = postgres_url(args.target)
    except ValueError as exc:
        raise ConfigError([f"--to: {exc}"]) from None
    copied = asyncio.run(migrate_state(args.source, target, merge=args.merge))
    moved = ", ".join(f"{n} {table.replace('_', ' ')}" for table, n in copied.items())
    print(f"migrated {args.source} into {redact_url(target)}: {moved}")
    print("now point state.url at it (and remove state.path) in every instance's config")
    return EXIT_OK


def _cmd_check_config(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    print(f"{args.config}: ok ({len(config.feeds)} feeds)")
    return EXIT_OK


def _cmd_run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if args.once:
        summary = asyncio.run(_run_once(config, args.metrics_file))
        _print_summary(summary, config.output.dir)
        return EXIT_OK
    from ingestor.service.daemon import Daemon

    return asyncio.run(Daemon(config, args.config).run())


async def _run_once(config: Config, metrics_file: Path | None) -> PassSummary:
    from ingestor.core.metrics import Metrics
    from ingestor.pipeline.journal import apply_retention
    from ingestor.service.runtime import open_pipeline

    progress = _Progress() if sys.stderr.isatty() else _LogProgress()
    metrics = Metrics()
    stop = asyncio.Event()
    stopped_by: list[str] = []

    def on_signal(name: str) -> None:
        if not stopped_by:
            log.warning(
                "%s received: no new work; in-flight articles get %gs "
                "(pipeline.shutdown_grace), the rest stays queued for the next run",
                name,
                config.pipeline.shutdown_grace,
            )
        stopped_by.append(name)
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig.name)
    async with open_pipeline(config, metrics) as pipeline:
        summary = await pipeline.run_once_until(config.feeds, stop, progress)
        summary.stopped_by = stopped_by[0] if stopped_by else None
        await metrics.collect()
        # A cron-driven deployment never runs the daemon's hourly clean-up: do it here.
        await pipeline.store.prune(
            time.time(), config.state.seen_entry_max_age, config.dedup.window
        )
        if config.output.retention is not None:
            retention = config.output.retention
            await apply_retention(pipeline.store, pipeline.sink, retention, time.time())
    if isinstance(progress, _Progress):
        progress.finish()
    if metrics_file is not None:
        metrics_file.write_text(metrics.render(), encoding="utf-8")
    return summary


class _LogProgress:
    """Not a terminal: a plain log line now and then instead of a bar."""

    def __init__(self) -> None:
        self.last = 0.0

    def __call__(self, summary: PassSummary) -> None:
        now = time.monotonic()
        if now - self.last >= 10.0:
            self.last = now
            log.info(
                "progress: feeds %d/%d, articles queued %d, written %d, retrying %d",
                summary.feeds,
                summary.total_feeds,
                summary.queued,
                summary.written,
                summary.retries,
            )


class _Progress:
    """A one-line progress bar on a terminal: feeds polled, articles queued, written and
    waiting for a retry."""

    def __init__(self) -> None:
        self.last = 0.0

    def __call__(self, summary: PassSummary) -> None:
        now = time.monotonic()
        if now - self.last < 0.1 and summary.feeds < summary.total_feeds:
            return
        self.last = now
        width = 24
        filled = int(width * summary.feeds / max(summary.total_feeds, 1))
        bar = "#" * filled + "-" * (width - filled)
        sys.stderr.write(
            f"\r[{bar}] feeds {summary.feeds}/{summary.total_feeds}  "
            f"queued {summary.queued}  written {summary.written}  "
            f"waiting {summary.retries}  feed errors {summary.failed}"
        )
        sys.stderr.flush()

    def finish(self) -> None:
        sys.stderr.write("\n")


def _print_summary(summary: PassSummary, output_dir: Path) -> None:
    print(
        f"feeds: {summary.feeds} ({summary.polled} polled, {summary.not_modified} unchanged, "
        f"{summary.failed} failed, {summary.skipped} skipped)"
    )
    print(f"articles written: {summary.written}")
    print(f"duplicates: {summary.duplicates}")
    if summary.retries or summary.fallbacks:
        print(
            f"article retries: {summary.retries}; records from the feed's text after "
            f"a failed page: {summary.fallbacks}"
        )
    if summary.left:
        print(f"still queued for the next run: {summary.left}")
        for line in summary.left_why[:20]:
            print(f"  {line}")
    print(f"errors: {len(summary.errors)}")
    for error in summary.errors:
        print(f"  {error}")
    print(f"records in: {output_dir}")
    if summary.stopped_by:
        print(
            f"stopped by {summary.stopped_by}: the pass ended early; what it had not done "
            "stays queued for the next run"
        )


def _cmd_demo(args: argparse.Namespace) -> int:
    from ingestor.service.demo import run_demo

    result = asyncio.run(run_demo(args.output, workers=args.workers))
    print(f"demo: ingested {len(result.feeds)} feeds from the bundled corpus")
    _print_summary(result.summary, result.output_dir)
    return EXIT_OK


def _cmd_import_opml(args: argparse.Namespace) -> int:
    from ingestor.service.opml import feeds_yaml, read_opml

    feeds, skipped = read_opml(args.opml)
    for line in skipped:
        print(f"import-opml: {line}", file=sys.stderr)
    if args.append_to is None:
        print("feeds:")
        print(_indent(feeds_yaml(feeds)), end="")
        return EXIT_OK
    target: Path = args.append_to
    config = load_config(target)
    known = {f.url for f in config.feeds}
    new = [f for f in feeds if f["url"] not in known]
    if not new:
        print(f"{target}: all {len(feeds)} feeds are already configured")
        return EXIT_OK
    text = target.read_text(encoding="utf-8")
    top_keys = [
        line.split(":", 1)[0]
        for line in text.splitlines()
        if line and not line[0].isspace() and not line.startswith("#") and ":" in line
    ]
    if "feeds" in top_keys and top_keys[-1] != "feeds":
        raise ConfigError(
            [
                f"{target}: feeds: is not the last section, so entries cannot be "
                "appended safely; run without --append-to and paste the output"
            ]
        )
    addition = (
        ("" if text.endswith("\n") else "\n")
        + ("" if "feeds" in top_keys else "feeds:\n")
        + _indent(feeds_yaml(new))
    )
    candidate = text + addition
    with tempfile.NamedTemporaryFile(
        "w", dir=target.parent, suffix=".yaml", delete=False, encoding="utf-8"
    ) as tmp:
        tmp.write(candidate)
    try:
        load_config(tmp.name)
        os.replace(tmp.name, target)
    finally:
        if os.path.exists(tmp.name):
            os.unlink(tmp.name)
    print(f"{target}: appended {len(new)} feeds ({len(feeds) - len(new)} already there)")
    return EXIT_OK


def _indent(text: str) -> str:
    return "".join(f"  {line}\n" for line in text.splitlines())


def _cmd_tail(args: argparse.Namespace) -> int:
    from ingestor.service.tail import TailOptions, tail

    if args.since < 0:
        raise ConfigError(["--since: must be 0 or a journal seq"])
    config = load_config(args.config)
    options = TailOptions(args.since, args.follow, args.cursor, args.paths)
    return asyncio.run(tail(config, options, sys.stdout.buffer))


def _cmd_status(args: argparse.Namespace) -> int:
    from ingestor.service.status import collect_status, render_hosts, render_json, render_table

    config = load_config(args.config)
    feeds, hosts = asyncio.run(collect_status(config))
    if args.json:
        print(render_json(hosts if args.hosts else feeds))
    elif args.hosts:
        print(render_hosts(hosts))
    else:
        print(render_table(feeds))
        print(render_hosts(hosts))
    return EXIT_OK
