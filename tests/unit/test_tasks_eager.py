"""The Celery tasks' logic in eager mode (task_always_eager): no broker, no worker, real store and simulator."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.target import CountingTarget
from simulator.control import SimulatorControl
from simulator.server import SimulatorServer
from store import ActionStatus
from tasks.celery_app import app
from tasks.confirmation import confirm
from tasks.execute import run_action
from tasks.gate import request_approval
from tasks.maintenance import sweep_task
from tasks.runtime import Runtime, set_runtime
from tasks.submission import SubmitRequest, submit
from tests.unit.conftest import make_runtime

S = ActionStatus


@pytest.fixture
def eager(tmp_path: Path, simulator: SimulatorServer) -> Iterator[Runtime]:
    runtime = make_runtime(tmp_path, simulator)
    app.conf.task_always_eager, app.conf.task_eager_propagates = True, True
    set_runtime(runtime)
    yield runtime
    set_runtime(None)
    app.conf.task_always_eager, app.conf.task_eager_propagates = False, False


def test_gate_then_approval_then_execute_in_eager_mode(eager: Runtime, simulator: SimulatorServer) -> None:
    with CountingTarget() as target:
        request = SubmitRequest(
            action="http.request",
            user="alice",
            params={"method": "POST", "url": f"{target.url}/eager", "json": {"amount": 1}},
        )
        action = submit(eager, request, agent="agent-a", source_ip=None, actor="t").action
        assert request_approval.delay(action.id).get() == "asked alice by push"
        held = eager.store.require(action.id)
        assert held.status == S.AWAITING_APPROVAL and held.tid
        with SimulatorControl(simulator.url) as control:
            token = control.approve(held.tid)

        approved = confirm(eager, eager.rublon, held.id, token, tid=held.tid, actor="listener", method="push")

        assert approved.status == "queued"
        assert run_action.delay(action.id).get() == "succeeded"
        assert run_action.delay(action.id).get().startswith("refused")  # a duplicate delivery does nothing
        assert target.count(action.id) == 1


def test_answer_on_another_transaction_neither_exchanges_nor_blocks(eager: Runtime, simulator: SimulatorServer) -> None:
    """A listener told the wrong action for a tid (say, a forged notice) leaves both actions' fates intact."""
    request = SubmitRequest(
        action="http.request",
        user="alice",
        params={"method": "POST", "url": "http://127.0.0.1:9/", "json": {"amount": 1}},
    )
    first, second = (submit(eager, request, agent="agent-a", source_ip=None, actor="t").action for _ in range(2))
    for action in (first, second):
        assert request_approval.delay(action.id).get() == "asked alice by push"
    held = eager.store.require(second.id)
    assert held.tid
    with SimulatorControl(simulator.url) as control:
        token = control.approve(held.tid)

    def confirm_as(action_id: str) -> str:
        return confirm(eager, eager.rublon, action_id, token, tid=held.tid, actor="listener", method=None).status

    assert confirm_as(first.id) == "awaiting_approval"
    assert eager.store.require(first.id).status == S.AWAITING_APPROVAL
    ignored = [e for e in eager.store.events(first.id) if e.event == "confirmation.ignored"]
    assert ignored and "not the action's" in ignored[0].data["reason"]
    # The single-use token was not spent: the action that holds the tid is released with it.
    assert confirm_as(second.id) == "queued"


def test_user_without_a_method_the_policy_asks_for_is_blocked_and_the_transaction_withdrawn(
    eager: Runtime, simulator: SimulatorServer
) -> None:
    with SimulatorControl(simulator.url) as control:
        control.set_user("bob", email="bob@example.com", methods=["totp"])  # the policy asks for push
        request = SubmitRequest(
            action="http.request", user="bob", params={"method": "POST", "url": "http://127.0.0.1:9/", "json": {}}
        )
        action = submit(eager, request, agent="agent-a", source_ip=None, actor="t").action
        assert request_approval.delay(action.id).get().startswith("blocked: the user has none of the methods")
        assert eager.store.require(action.id).status == S.BLOCKED
        opened = [t for t in control.transactions() if t["username"] == "bob"]
    assert [t["state"] for t in opened] == ["cancelled"]  # nobody is left a request they cannot answer


def test_maintenance_sweep_in_eager_mode_expires_overdue_actions(eager: Runtime) -> None:
    from datetime import timedelta

    from store.models import utcnow

    request = SubmitRequest(
        action="http.request", user="alice", params={"method": "POST", "url": "http://127.0.0.1/sweep", "json": {}}
    )
    action = submit(eager, request, agent="agent-a", source_ip=None, actor="t").action
    request_approval.delay(action.id)
    eager.store.set_fields(action.id, expected=S.AWAITING_APPROVAL, expires_at=utcnow() - timedelta(seconds=1))
    counts = sweep_task.delay().get()
    assert counts["expired"] == 1
    assert eager.store.require(action.id).status == S.EXPIRED
