"""ingestor: an asynchronous RSS/Atom/JSON Feed ingestion daemon.

Data flows one way; each folder is a layer and may import only the layers below it
(tests/test_architecture.py checks every import):

    service/   the daemon, the CLI, status, the metrics endpoint, the demo
    pipeline/  the orchestrator: polls feeds, feeds the frontier, runs the articles;
               calls the layers below in order and decides nothing itself
    http/      fetching: one aiohttp session, politeness, robots.txt, the SSRF guard
    store/     the state store contract (protocol.py) and its backends: SQLite (one
               machine) and PostgreSQL (a fleet: leases, host leases, server functions)
    sink/      where records go: atomic JSON files
    analyze/   CPU-bound work run in worker processes: extraction, language, MinHash
    parse/     feed bytes to entries: RSS/Atom via feedparser, JSON Feed, text
    core/      pure decisions and the plain data they work on: schedule, dedup,
               frontier rules, record assembly, URLs; no I/O of any kind

errors.py (the exception hierarchy) and config/ (the configuration: its model, values and
loader) are used by all. ARCHITECTURE.md follows one feed URL through the layers to a
record and a journal line.
"""

__version__ = "0.1.0"
