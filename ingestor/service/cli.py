"""The `ingestor` command.

Exit codes: 0 the command (or pass) completed, even if some feeds failed; 1 a fatal error
(state store unusable, output directory not writable); 2 a bad configuration or usage.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
from pathlib import Path

from ingestor import __version__
from ingestor.config.load import load_config
from ingestor.errors import ConfigError, ServiceError, SinkError, StateError
from ingestor.service.logsetup import setup_logging
from ingestor.service.once import print_summary, run_once

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
    status.add_argument(
        "--sinks",
        action="store_true",
        help="each webhook sink's cursor, lag and last error instead (with --json too)",
    )
    sinks = command("sinks", "Webhook sinks: `sinks replay NAME --from SEQ`.")
    sink_commands = sinks.add_subparsers(dest="sink_command", required=True)
    replay = sink_commands.add_parser(
        "replay", help="deliver the journal to a sink again, from line SEQ (within retention)"
    )
    replay.add_argument("name", help="the sink's name (as `status --sinks` shows it)")
    replay.add_argument("--config", required=True, type=Path)
    replay.add_argument("--from", dest="first", required=True, type=int, metavar="SEQ")
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
        "sinks": _cmd_sinks,
    }
    try:
        return handlers[args.command](args)
    except BrokenPipeError:
        # `ingestor status | head -1`: the reader is gone; nothing more to say. Standard
        # output is pointed at /dev/null so that the interpreter's own flush stays quiet.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"config error: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    except (StateError, SinkError, ServiceError) as exc:
        print(f"fatal: {exc}", file=sys.stderr)
        return EXIT_FATAL
    except KeyboardInterrupt:
        return 130


def _cmd_sinks(args: argparse.Namespace) -> int:
    from ingestor.service.webhooks import replay_sink

    config = load_config(args.config)
    newest = asyncio.run(replay_sink(config, args.name, args.first))
    print(f"sink {args.name}: delivers again from line {args.first} (the journal is at {newest})")
    return EXIT_OK


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
    sites = sum(1 for feed in config.feeds if feed.site)
    feeds = len(config.feeds) - sites
    counted = _plural(feeds, "feed") + (f", {_plural(sites, 'site')}" if sites else "")
    print(f"{args.config}: ok ({counted})")
    if not config.feeds:
        print(
            f"warning: {args.config}: no feeds configured (feeds: is empty): the daemon "
            "would poll nothing",
            file=sys.stderr,
        )
    return EXIT_OK


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _cmd_run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if args.once:
        summary = asyncio.run(run_once(config, args.metrics_file))
        print_summary(summary, config.output.dir)
        return EXIT_OK
    from ingestor.service.daemon import Daemon

    return asyncio.run(Daemon(config, args.config).run())


def _cmd_demo(args: argparse.Namespace) -> int:
    from ingestor.service.demo import run_demo

    result = asyncio.run(run_demo(args.output, workers=args.workers))
    print(f"demo: ingested {len(result.feeds)} feeds from the bundled corpus")
    print_summary(result.summary, result.output_dir)
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
    from ingestor.service import status

    config = load_config(args.config)
    if args.sinks:
        sinks = asyncio.run(status.collect_sinks(config))
        print(status.render_json(sinks) if args.json else status.render_sinks(sinks))
        return EXIT_OK
    feeds, hosts = asyncio.run(status.collect_status(config))
    if args.json:
        print(status.render_json(hosts if args.hosts else feeds))
    elif args.hosts:
        print(status.render_hosts(hosts))
    else:
        print(status.render_table(feeds))
        print(status.render_hosts(hosts))
        if config.sinks:
            print(status.render_sinks(asyncio.run(status.collect_sinks(config))))
    return EXIT_OK
