"""SQLite's write lock: waited for in short steps, and given up on after the busy timeout."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from store import engine


def connect(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute(f"PRAGMA busy_timeout={engine.SQLITE_BUSY_TIMEOUT_MS}")
    return connection


def test_a_writer_gets_the_lock_soon_after_another_lets_it_go(tmp_path: Path) -> None:
    holder, waiter = connect(tmp_path / "s.db"), connect(tmp_path / "s.db")
    holder.execute("BEGIN IMMEDIATE")
    released = threading.Timer(0.05, lambda: holder.execute("COMMIT"))
    released.start()
    started = time.monotonic()
    engine.begin_immediate(waiter)
    waited = time.monotonic() - started
    waiter.execute("COMMIT")
    released.join()
    assert 0.04 < waited < 0.5
    assert waiter.execute("PRAGMA busy_timeout").fetchone()[0] == engine.SQLITE_BUSY_TIMEOUT_MS


def test_a_writer_gives_up_after_the_busy_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "SQLITE_BUSY_TIMEOUT_MS", 100)
    holder, waiter = connect(tmp_path / "s.db"), connect(tmp_path / "s.db")
    holder.execute("BEGIN IMMEDIATE")
    started = time.monotonic()
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        engine.begin_immediate(waiter)
    assert 0.05 < time.monotonic() - started < 1.0
    assert waiter.in_transaction is False  # nothing half-begun is left behind
    holder.execute("COMMIT")
