"""Fixtures for task logic in isolation: a real SQLite store, the simulator in-thread, no broker."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulator.server import SimulatorServer
from simulator.state import SimulatorState, make_user
from tasks.celery_app import app
from tasks.runtime import Runtime
from tests.conftest import make_settings
from tests.fixtures import TEST_POLICY, directory_text

TOKEN, SECRET = "0123456789ABCDEF0123456789ABCDEF", "unit-secret"


@pytest.fixture(autouse=True)
def memory_broker() -> Iterator[None]:
    previous = app.conf.broker_url
    app.conf.broker_url = "memory://"
    yield
    app.conf.broker_url = previous


@pytest.fixture(scope="module")
def simulator() -> Iterator[SimulatorServer]:
    state = SimulatorState(apps={TOKEN: SECRET}, users=[make_user("alice", "alice@example.com")], decision="manual")
    with SimulatorServer(state) as server:
        yield server


def make_runtime(tmp_path: Path, simulator: SimulatorServer, *, extra_rules: str = "",
                 limits: dict[str, int] | None = None, secrets: str = "") -> Runtime:
    policy = TEST_POLICY
    for key, value in (limits or {}).items():
        if re.search(rf"^{key} = ", policy, flags=re.M):
            policy = re.sub(rf"^{key} = .*$", f"{key} = {value}", policy, flags=re.M)
        else:
            policy = policy.replace("[limits]", f"[limits]\n{key} = {value}")
    (tmp_path / "policy.toml").write_text(policy + extra_rules)
    (tmp_path / "directory.toml").write_text(directory_text())
    extra = {}
    if secrets:
        (tmp_path / "secrets.toml").write_text(secrets)
        extra["secrets_file"] = tmp_path / "secrets.toml"
    settings = make_settings(
        database_url=f"sqlite:///{tmp_path / 'store.db'}", rublon_api_server=simulator.url,
        rublon_system_token=TOKEN, rublon_secret_key=SECRET, policy_file=tmp_path / "policy.toml",
        directory_file=tmp_path / "directory.toml", **extra,
    )
    runtime = Runtime(settings)
    runtime.check()
    return runtime


