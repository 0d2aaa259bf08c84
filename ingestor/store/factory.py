"""Which state store a configuration asks for: SQLite at state.path, PostgreSQL at
state.url."""

from __future__ import annotations

import os
import socket

from ingestor.config.model import StateConfig
from ingestor.core.journal import writer_name
from ingestor.store.protocol import StateStore
from ingestor.store.traffic import StoreTraffic


def instance_id(config: StateConfig) -> str:
    """This process's name in leases, logs and metrics: state.instance_id, else host:pid."""
    return config.instance_id or f"{socket.gethostname()}:{os.getpid()}"


def journal_writer(config: StateConfig) -> str:
    """Whose journal segments an instance appends to: state.instance_id, else the host
    name (not the pid: a restarted instance finishes the segments its predecessor left)."""
    return writer_name(config.instance_id or socket.gethostname())


def make_store(
    config: StateConfig, *, read_only: bool = False, traffic: StoreTraffic | None = None
) -> StateStore:
    """`traffic`, when given, counts what the store's calls cost (for the metrics)."""
    if config.url is not None:
        from ingestor.store.postgres import PostgresStateStore

        return PostgresStateStore(
            config.url,
            instance_id=instance_id(config),
            lease_ttl=config.lease_ttl,
            read_only=read_only,
            journal_writer=journal_writer(config),
            traffic=traffic,
        )
    from ingestor.store.sqlite import SQLiteStateStore

    assert config.path is not None  # the loader requires one of path and url
    return SQLiteStateStore(
        config.path, read_only=read_only, traffic=traffic, allow_moved=config.allow_moved
    )
