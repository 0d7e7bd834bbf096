"""Gated actions end to end on real processes: Redis, Celery workers, listener, web, simulator."""

from __future__ import annotations

import signal
import time

import httpx
import pytest

from cli.stack import Stack
from cli.target import CountingTarget
from simulator.control import SimulatorControl
from store import Store
from tests.fixtures import CRED_B
from tests.integration.conftest import post_action, wait_status, wait_tid

pytestmark = pytest.mark.integration


def test_allowed_action_executes_at_once(api: httpx.Client, store: Store, target: CountingTarget) -> None:
    response = api.post("/v1/actions", json=post_action(target, "/report", method="GET"))
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == "queued" and "reads" in body["reason"]
    done = wait_status(store, body["id"], "succeeded")
    assert done.result is not None and done.result["status_code"] == 200
    assert target.count(body["id"]) == 1


def test_approved_action_executes_exactly_once(api: httpx.Client, store: Store, target: CountingTarget,
                                               control: SimulatorControl) -> None:
    body = api.post("/v1/actions", json=post_action(target)).json()
    assert body["status"] == "submitted"
    action = wait_tid(store, body["id"])
    assert action.status == "awaiting_approval"
    control.approve(action.tid)  # type: ignore[arg-type]
    wait_status(store, body["id"], "succeeded")
    time.sleep(1.0)  # a duplicate delivery would land now
    assert target.count(body["id"]) == 1
    release = store.release_of(body["id"])
    assert release is not None and release.kind == "approval" and release.approver == "alice"
    events = [event.event for event in store.events(body["id"])]
    assert events[:2] == ["action.created", "action.awaiting_approval"]
    assert events[-3:] == ["action.queued", "action.executing", "action.succeeded"]


def test_rejected_action_never_executes(api: httpx.Client, store: Store, target: CountingTarget,
                                        control: SimulatorControl) -> None:
    body = api.post("/v1/actions", json=post_action(target)).json()
    action = wait_tid(store, body["id"])
    control.deny(action.tid)  # type: ignore[arg-type]
    done = wait_status(store, body["id"], "rejected")
    assert "rejected" in done.reason
    assert target.count(body["id"]) == 0 and store.release_of(body["id"]) is None


def test_expired_by_rublon_never_executes(api: httpx.Client, store: Store, target: CountingTarget,
                                          control: SimulatorControl) -> None:
    body = api.post("/v1/actions", json=post_action(target)).json()
    action = wait_tid(store, body["id"])
    control.expire(action.tid)  # type: ignore[arg-type]
    wait_status(store, body["id"], "expired")
    assert target.count(body["id"]) == 0


def test_action_past_its_deadline_expires_and_its_transaction_is_cancelled(
    api: httpx.Client, store: Store, target: CountingTarget, control: SimulatorControl
) -> None:
    body = api.post("/v1/actions", json=post_action(target, "/deadline")).json()
    action = wait_tid(store, body["id"])
    assert action.expires_at is not None
    wait_status(store, body["id"], "expired", timeout=25)
    assert target.count(body["id"]) == 0
    deadline = time.monotonic() + 5
    while control.transaction(action.tid)["state"] == "pending" and time.monotonic() < deadline:  # type: ignore[arg-type]
        time.sleep(0.05)
    assert control.transaction(action.tid)["state"] in ("cancelled", "expired")  # type: ignore[arg-type]


def test_denied_by_policy_never_executes(api: httpx.Client, store: Store, target: CountingTarget) -> None:
    response = api.post("/v1/actions", json=post_action(target, "/ledger", method="DELETE"))
    body = response.json()
    assert response.status_code == 201 and body["status"] == "denied" and "no-deletes" in body["reason"]
    time.sleep(0.5)
    assert store.require(body["id"]).status == "denied" and target.count(body["id"]) == 0


@pytest.mark.parametrize(("user", "why"), [("dave", "bypassed"), ("erin", "status"), ("frank", "unknown")])
def test_user_rublon_cannot_ask_is_blocked(api: httpx.Client, store: Store, target: CountingTarget, user: str,
                                          why: str) -> None:
    body = api.post("/v1/actions", json=post_action(target, user=user)).json()
    done = wait_status(store, body["id"], "blocked")
    assert why in done.reason
    assert target.count(body["id"]) == 0


def test_rublon_unavailable_blocks_unless_the_rule_fails_open(
    api: httpx.Client, store: Store, target: CountingTarget, control: SimulatorControl
) -> None:
    control.fail("unavailable")
    try:
        closed = api.post("/v1/actions", json=post_action(target, "/pay")).json()
        opened = api.post("/v1/actions", json=post_action(target, "/failopen", method="PUT")).json()
        assert "unavailable" in wait_status(store, closed["id"], "blocked").reason
        wait_status(store, opened["id"], "succeeded")
    finally:
        control.fail(None)
    assert target.count(closed["id"]) == 0 and target.count(opened["id"]) == 1
    release = store.release_of(opened["id"])
    assert release is not None and release.kind == "fail_open"


def test_bad_rublon_signature_blocks(api: httpx.Client, store: Store, target: CountingTarget,
                                     control: SimulatorControl) -> None:
    control.fail("bad_signature")
    try:
        body = api.post("/v1/actions", json=post_action(target)).json()
        assert "signature" in wait_status(store, body["id"], "blocked").reason
    finally:
        control.fail(None)
    assert target.count(body["id"]) == 0


def test_same_idempotency_key_gives_one_action(api: httpx.Client, store: Store, target: CountingTarget) -> None:
    request = post_action(target, "/report", method="GET", idempotency_key="same-key-1")
    first, second = api.post("/v1/actions", json=request), api.post("/v1/actions", json=request)
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["id"] == second.json()["id"]
    wait_status(store, first.json()["id"], "succeeded")
    changed = dict(request, params={**request["params"], "url": f"{target.url}/other"})
    conflict = api.post("/v1/actions", json=changed)
    assert conflict.status_code == 409 and conflict.json()["error"]["field"] == "idempotency_key"
    assert target.count(first.json()["id"]) == 1


def test_payload_changed_in_store_before_release_is_refused(
    api: httpx.Client, store: Store, target: CountingTarget, control: SimulatorControl
) -> None:
    body = api.post("/v1/actions", json=post_action(target)).json()
    action = wait_tid(store, body["id"])
    tampered = {**action.params, "url": f"{target.url}/attacker"}
    store.set_fields(action.id, expected=action.status, params=tampered)  # an attacker with database access
    control.approve(action.tid)  # type: ignore[arg-type]
    done = wait_status(store, body["id"], "failed", "blocked")
    assert "payload changed" in done.reason
    assert target.count(body["id"]) == 0


def test_forged_confirmation_releases_nothing(api: httpx.Client, store: Store, target: CountingTarget,
                                             control: SimulatorControl) -> None:
    body = api.post("/v1/actions", json=post_action(target)).json()
    action = wait_tid(store, body["id"])
    control.forge(action.tid, "f" * 60)  # type: ignore[arg-type]
    done = wait_status(store, body["id"], "blocked")
    assert "could not be verified" in done.reason
    assert target.count(body["id"]) == 0 and store.release_of(body["id"]) is None


def test_cancel_withdraws_the_push(api: httpx.Client, store: Store, target: CountingTarget,
                                   control: SimulatorControl) -> None:
    body = api.post("/v1/actions", json=post_action(target)).json()
    action = wait_tid(store, body["id"])
    response = api.post(f"/v1/actions/{body['id']}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert control.transaction(action.tid)["state"] == "cancelled"  # type: ignore[arg-type]
    again = api.post(f"/v1/actions/{body['id']}/cancel")
    assert again.status_code == 409
    assert target.count(body["id"]) == 0


def test_wait_returns_when_final(api: httpx.Client, control: SimulatorControl, store: Store,
                                 target: CountingTarget) -> None:
    body = api.post("/v1/actions", json=post_action(target)).json()
    action = wait_tid(store, body["id"])
    pending = api.get(f"/v1/actions/{body['id']}/wait", params={"timeout": 0.3}).json()
    assert pending["status"] == "awaiting_approval" and pending["final"] is False
    control.approve(action.tid)  # type: ignore[arg-type]
    final = api.get(f"/v1/actions/{body['id']}/wait", params={"timeout": 20}).json()
    assert final["status"] == "succeeded" and final["final"] is True


def test_agent_sees_only_its_own_actions(api: httpx.Client, stack: Stack, target: CountingTarget) -> None:
    mine = api.post("/v1/actions", json=post_action(target, "/report", method="GET")).json()
    with stack.api(CRED_B) as other:
        assert other.get(f"/v1/actions/{mine['id']}").status_code == 404
        assert other.post(f"/v1/actions/{mine['id']}/cancel").status_code == 404


def test_agent_naming_a_user_it_may_not_act_for_is_refused(api: httpx.Client, store: Store,
                                                           target: CountingTarget) -> None:
    before = len(store.list_actions(limit=10_000))
    response = api.post("/v1/actions", json=post_action(target, user="carol"))
    assert response.status_code == 403
    assert response.json()["error"]["field"] == "user"
    assert len(store.list_actions(limit=10_000)) == before


@pytest.mark.parametrize(
    ("mutate", "status", "field"),
    [
        (lambda b: b.update(action="no.such.action"), 422, "action"),
        (lambda b: b.update(action="Bad Name!"), 422, "action"),
        (lambda b: b.update(params=[1, 2]), 422, "params"),
        (lambda b: b["params"].update(method="BREW"), 422, "params.method"),
        (lambda b: b["params"].update(url="ftp://127.0.0.1/x"), 422, "params.url"),
        (lambda b: b["params"].update(url="http://evil.example.org/x"), 422, "params.url"),
        (lambda b: b.update(user="nobody"), 422, "user"),
        (lambda b: b.update(context="not an object"), 422, "context"),
        (lambda b: b.update(context={"blob": "x" * 10_000}), 413, "context"),
        (lambda b: b["params"].update(json={"blob": "x" * 40_000}), 413, "params"),
        (lambda b: b.update(surprise=1), 422, "surprise"),
        (lambda b: b.pop("user"), 422, "user"),
    ],
)
def test_bad_input_is_refused_naming_the_field_and_writes_nothing(
    api: httpx.Client, store: Store, target: CountingTarget, mutate: object, status: int, field: str
) -> None:
    body = post_action(target)
    mutate(body)  # type: ignore[operator]
    before = len(store.list_actions(limit=10_000))
    response = api.post("/v1/actions", json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["field"] == field
    assert len(store.list_actions(limit=10_000)) == before


def test_not_json_is_refused(api: httpx.Client) -> None:
    response = api.post("/v1/actions", content=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and response.json()["error"]["field"] == "body"


@pytest.mark.parametrize("header", [None, "Bearer wrong-credential", "Basic abc"])
def test_missing_or_wrong_credential_is_refused(stack: Stack, store: Store, target: CountingTarget,
                                                header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    before = len(store.list_actions(limit=10_000))
    response = httpx.post(f"{stack.web_url}/v1/actions", json=post_action(target), headers=headers)
    assert response.status_code == 401 and response.json()["error"]["field"] == "authorization"
    assert len(store.list_actions(limit=10_000)) == before
    assert any(e.event == "auth.refused" for e in store.events()[-5:])


def test_listener_restart_while_pending_still_releases_and_expires(
    api: httpx.Client, stack: Stack, store: Store, target: CountingTarget, control: SimulatorControl
) -> None:
    approved = api.post("/v1/actions", json=post_action(target)).json()
    rejected = api.post("/v1/actions", json=post_action(target)).json()
    first, second = wait_tid(store, approved["id"]), wait_tid(store, rejected["id"])
    stack.children["listener-1"].process.send_signal(signal.SIGKILL)
    stack.children["listener-1"].process.wait(10)
    control.approve(first.tid)  # type: ignore[arg-type]
    control.deny(second.tid)  # type: ignore[arg-type]
    time.sleep(0.5)
    assert store.require(approved["id"]).status == "awaiting_approval"
    stack.start_process("listener-1")
    wait_status(store, approved["id"], "succeeded")
    wait_status(store, rejected["id"], "rejected")
    assert target.count(approved["id"]) == 1 and target.count(rejected["id"]) == 0
