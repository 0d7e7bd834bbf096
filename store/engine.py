"""Database engines: a SQLite file by default (WAL), PostgreSQL through DATABASE_URL."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlmodel import create_engine

SQLITE_BUSY_TIMEOUT_MS = 30_000
LOCK_RETRY_FIRST_SECONDS = 0.00005
LOCK_RETRY_MAX_SECONDS = 0.001
# Execution option marking read-only work: SQLite then opens a deferred transaction.
READ_ONLY = "mfa_gate_read_only"


def normalise_url(url: str) -> str:
    """Map ``postgres://`` and ``postgresql://`` to the psycopg 3 driver; leave the rest alone."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def make_engine(url: str) -> Engine:
    """An engine for ``url``. SQLite gets WAL, a busy timeout and ``BEGIN IMMEDIATE``.

    ``BEGIN IMMEDIATE`` takes SQLite's write lock at the start of each transaction, so a
    compare-and-set never fails half-way with "database is locked" when two processes
    race; they queue on the busy timeout instead.
    """
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)
    connect_args: dict[str, Any] = {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
    engine = create_engine(url, connect_args=connect_args)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below issue BEGIN itself.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if parsed.database not in (None, "", ":memory:"):
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        dbapi_connection = connection.connection.dbapi_connection
        if connection.get_execution_options().get(READ_ONLY, False):
            dbapi_connection.execute("BEGIN")
        else:
            begin_immediate(dbapi_connection)

    return engine


def begin_immediate(dbapi_connection: sqlite3.Connection) -> None:
    """``BEGIN IMMEDIATE``, waiting for SQLite's write lock in short steps.

    SQLite's own busy handler sleeps 1, 2, 5, 10, 15 ... ms between tries, while a write
    transaction of mfa-gate holds the lock for well under a millisecond: the waiters
    slept far longer than the lock was held. Here the tries start 50 us apart and back off
    to 1 ms; after ``SQLITE_BUSY_TIMEOUT_MS`` the "database is locked" error is raised.
    """
    dbapi_connection.execute("PRAGMA busy_timeout=0")
    try:
        deadline, pause = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000, LOCK_RETRY_FIRST_SECONDS
        while True:
            try:
                dbapi_connection.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if time.monotonic() + pause > deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, LOCK_RETRY_MAX_SECONDS)
    finally:
        dbapi_connection.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")


def is_sqlite(engine: Engine) -> bool:
    """True for a SQLite engine."""
    return engine.dialect.name == "sqlite"
