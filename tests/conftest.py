"""Fixtures shared by every test: stores on SQLite and PostgreSQL, runtimes, a simulator."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from config import Settings
from store import Store

PG_ADMIN_URL = os.environ.get("MFA_GATE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
AUDIT_KEY = b"test-audit-key"


def _pg_available() -> bool:
    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


PG_AVAILABLE = _pg_available()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped afterwards."""
    if not PG_AVAILABLE:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL}; .ci/run starts it")
        pytest.skip(f"PostgreSQL is not reachable at {PG_ADMIN_URL}")
    name = f"mfagate_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _reset_pg(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL for an empty store, on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    url: str = request.getfixturevalue("pg_database")
    _reset_pg(url)
    return url


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    """An empty store with its schema."""
    found = Store(database_url, audit_key=AUDIT_KEY)
    found.create_schema()
    yield found
    found.dispose()


def make_settings(**overrides: object) -> Settings:
    """Settings for a test, independent of the environment the suite runs in."""
    base: dict[str, object] = {
        "database_url": "sqlite:///:memory:",
        "redis_url": None,
        "rublon_api_server": "http://127.0.0.1:9",
    }
    base.update(overrides)
    return Settings(**base)  # type: ignore[arg-type]
