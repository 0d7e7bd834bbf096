"""Alembic migrations: an empty database upgraded to head matches the models exactly."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlmodel import SQLModel

from store import Store, schema


def test_upgrade_on_empty_database_matches_the_models(store: Store) -> None:
    assert schema.current(store.engine) == schema.head()
    with store.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)
    assert differences == []


def test_upgrade_twice_is_a_no_op(store: Store) -> None:
    store.create_schema()
    assert schema.current(store.engine) == schema.head()
