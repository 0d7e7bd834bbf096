"""A real deployment for the integration tests: Redis, simulator, web, workers, beat, listener."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from cli.stack import Stack, running_stack
from cli.target import CountingTarget
from config import Settings
from simulator.control import SimulatorControl
from store import Action, Store
from tests.fixtures import CRED_A, write_files

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def target() -> Iterator[CountingTarget]:
    """The HTTP target released actions call; counts requests per Idempotency-Key (= action id)."""
    with CountingTarget() as counting:
        yield counting


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A running deployment on SQLite, then on PostgreSQL (a module sets SQLITE_ONLY = True to skip the second)."""
    if request.param == "postgres" and getattr(request.module, "SQLITE_ONLY", False):
        pytest.skip("this module's behaviour does not depend on the database; it runs on SQLite only")
    workdir = tmp_path_factory.mktemp(f"stack-{request.param}")
    if request.param == "sqlite":
        database_url = f"sqlite:///{workdir / 'store.db'}"
    else:
        database_url = request.getfixturevalue("pg_database")
        from tests.conftest import _reset_pg

        _reset_pg(database_url)
    policy, directory = write_files(workdir / "config")
    with running_stack(workdir / "run", database_url=database_url, policy_file=policy,
                       directory_file=directory) as running:
        yield running


@pytest.fixture(scope="module")
def store(stack: Stack) -> Iterator[Store]:
    """The deployment's store, read from the test process."""
    settings = Settings(database_url=stack.env["DATABASE_URL"])
    found = Store(stack.env["DATABASE_URL"], audit_key=settings.audit_key.get_secret_value().encode())
    yield found
    found.dispose()


@pytest.fixture(scope="module")
def control(stack: Stack) -> Iterator[SimulatorControl]:
    with SimulatorControl(stack.simulator_url) as client:
        yield client


@pytest.fixture(scope="module")
def api(stack: Stack) -> Iterator[httpx.Client]:
    """The REST API as agent-a."""
    with stack.api(CRED_A) as client:
        yield client


def wait_for(store: Store, action_id: str, done: Callable[[Action], bool], *, timeout: float = 30.0) -> Action:
    """Poll the store until ``done(action)``; fails the test with the action's state on timeout."""
    deadline = time.monotonic() + timeout
    action = store.require(action_id)
    while not done(action):
        if time.monotonic() > deadline:
            pytest.fail(f"action {action_id} stuck in {action.status} ({action.reason})")
        time.sleep(0.05)
        action = store.require(action_id)
    return action


def wait_status(store: Store, action_id: str, *statuses: str, timeout: float = 30.0) -> Action:
    return wait_for(store, action_id, lambda a: a.status in statuses, timeout=timeout)


def wait_tid(store: Store, action_id: str, *, timeout: float = 30.0) -> Action:
    return wait_for(store, action_id, lambda a: a.tid is not None or a.status not in ("submitted",), timeout=timeout)


def post_action(target: CountingTarget, path: str = "/pay", *, method: str = "POST", user: str = "alice",
                **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"action": "http.request", "user": user,
                            "params": {"method": method, "url": f"{target.url}{path}", "json": {"amount": 10}}}
    if method not in ("POST", "PUT"):
        body["params"].pop("json")
    body.update(extra)
    return body
