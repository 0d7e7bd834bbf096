"""Attack paths on the real deployment: each is a dead end, and each refusal is audited."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from celery import Celery
from kombu import Exchange, Queue

from cli.stack import TEST_SECRET_KEY, TEST_SYSTEM_TOKEN, Stack
from cli.target import CountingTarget
from rublon.client import RublonClient
from simulator.control import SimulatorControl
from store import Store
from tasks.celery_config import EXECUTE_QUEUE, EXECUTE_TASK
from tests.fixtures import CRED_A, CRED_B
from tests.integration.conftest import post_action, wait_status, wait_tid

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def forger(stack: Stack) -> Iterator[Celery]:
    """Someone who reached the broker: sends execute messages straight to the execute queue."""
    app = Celery("forger", broker=stack.env["REDIS_URL"])
    app.conf.task_queues = [Queue(EXECUTE_QUEUE, Exchange(EXECUTE_QUEUE), routing_key=EXECUTE_QUEUE)]
    yield app
    app.close()


def _forge_execute(forger: Celery, action_id: str) -> None:
    forger.send_task(EXECUTE_TASK, args=[action_id], queue=EXECUTE_QUEUE)


def _refusals(store: Store, action_id: str) -> list[str]:
    return [str(e.data.get("reason")) for e in store.events() if e.event == "execute.refused"
            and e.data.get("action_id", e.action_id) == action_id]


def test_forged_execute_messages_execute_nothing(forger: Celery, api: httpx.Client, store: Store,
                                                target: CountingTarget, control: SimulatorControl) -> None:
    held = api.post("/v1/actions", json=post_action(target, "/forged-held")).json()
    rejected = api.post("/v1/actions", json=post_action(target, "/forged-rejected")).json()
    wait_tid(store, held["id"])
    control.deny(wait_tid(store, rejected["id"]).tid)  # type: ignore[arg-type]
    wait_status(store, rejected["id"], "rejected")
    invented = str(uuid.uuid4())
    for action_id in (invented, held["id"], rejected["id"]):
        _forge_execute(forger, action_id)
    for action_id in (invented, held["id"], rejected["id"]):
        deadline = time.monotonic() + 20
        while not _refusals(store, action_id) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _refusals(store, action_id), f"no audited refusal for {action_id}"
    assert store.require(held["id"]).status == "awaiting_approval"
    assert store.require(rejected["id"]).status == "rejected"
    assert target.count(held["id"]) == target.count(rejected["id"]) == target.count(invented) == 0


def _own_transaction(stack: Stack, control: SimulatorControl) -> str:
    """A Rublon transaction not linked to any action, approved: its token was never exchanged."""
    with RublonClient(api_server=stack.simulator_url, system_token=TEST_SYSTEM_TOKEN,
                      secret_key=TEST_SECRET_KEY) as rublon:
        tid = rublon.promptless_init(username="alice", user_email="alice@example.com", params={"x": "1"}).tid
    return control.approve(tid)


def test_token_of_another_transaction_releases_nothing(stack: Stack, api: httpx.Client, store: Store,
                                                      target: CountingTarget, control: SimulatorControl) -> None:
    body = api.post("/v1/actions", json=post_action(target, "/other-token")).json()
    action = wait_tid(store, body["id"])
    control.forge(action.tid, _own_transaction(stack, control))  # type: ignore[arg-type]
    done = wait_status(store, body["id"], "blocked")
    assert "tid does not match" in done.reason or "does not match" in done.reason
    assert target.count(body["id"]) == 0 and store.release_of(body["id"]) is None


def test_reused_token_releases_nothing(api: httpx.Client, store: Store, target: CountingTarget,
                                       control: SimulatorControl) -> None:
    first = api.post("/v1/actions", json=post_action(target, "/reuse-1")).json()
    second = api.post("/v1/actions", json=post_action(target, "/reuse-2")).json()
    one, two = wait_tid(store, first["id"]), wait_tid(store, second["id"])
    token = control.approve(one.tid)  # type: ignore[arg-type]
    wait_status(store, first["id"], "succeeded")
    control.forge(two.tid, token)  # type: ignore[arg-type]
    assert "not exchangeable" in wait_status(store, second["id"], "blocked").reason
    assert target.count(first["id"]) == 1 and target.count(second["id"]) == 0


def test_wrongly_signed_credentials_answer_releases_nothing(api: httpx.Client, store: Store, target: CountingTarget,
                                                            control: SimulatorControl) -> None:
    body = api.post("/v1/actions", json=post_action(target, "/badsig")).json()
    action = wait_tid(store, body["id"])
    control.fail("bad_signature")
    try:
        control.approve(action.tid)  # type: ignore[arg-type]
        done = wait_status(store, body["id"], "blocked")
    finally:
        control.fail(None)
    assert "signature" in done.reason and target.count(body["id"]) == 0


def test_approval_trail_shows_who_how_when_and_what_was_shown(api: httpx.Client, store: Store,
                                                              target: CountingTarget,
                                                              control: SimulatorControl) -> None:
    body = api.post("/v1/actions", json=post_action(target, "/trail")).json()
    action = wait_tid(store, body["id"])
    control.approve(action.tid)  # type: ignore[arg-type]
    wait_status(store, body["id"], "succeeded")
    queued = next(e for e in store.events(body["id"]) if e.event == "action.queued")
    assert queued.data["approver"] == "alice" and queued.data["method"] == "push"
    assert "POST" in queued.data["shown"] and "Code:" in queued.data["shown"]
    assert queued.at is not None
    release = store.release_of(body["id"])
    assert release is not None and release.credentials_signature and release.tid == action.tid
    assert store.verify_audit().ok


def test_secrets_never_reach_the_logs(stack: Stack, api: httpx.Client, store: Store, target: CountingTarget,
                                      control: SimulatorControl) -> None:
    body = api.post("/v1/actions", json=post_action(target, "/secret-scan")).json()
    token = control.approve(wait_tid(store, body["id"]).tid)  # type: ignore[arg-type]
    wait_status(store, body["id"], "succeeded")
    time.sleep(0.5)
    logs = "".join(child.log_text() for name, child in stack.children.items() if name != "simulator")
    for secret in (TEST_SECRET_KEY, CRED_A, CRED_B, token):
        assert secret not in logs
    audit_dump = str([e.data for e in store.events()])
    for secret in (TEST_SECRET_KEY, CRED_A, CRED_B, token):
        assert secret not in audit_dump
