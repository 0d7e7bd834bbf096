"""The maintenance sweep in isolation: a real SQLite store, the simulator in-thread, sends recorded.

Each test puts an action in the state a fault leaves behind (a lost message, a dead gate
task, a dead listener, a dead worker) and checks what one sweep makes of it.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from simulator.control import SimulatorControl
from simulator.server import SimulatorServer
from store import Action, ActionStatus, Release
from store.models import utcnow
from tasks import maintenance, registry
from tasks.binding import payload_hash
from tasks.gate import open_transaction
from tasks.maintenance import MAX_RUNS, _backoff, sweep
from tasks.registry import ExecutionContext
from tasks.runtime import Runtime
from tasks.submission import SubmitRequest, submit
from tests.unit.conftest import make_runtime

S = ActionStatus
IDEMPOTENT = "test.maintenance-idempotent"


class Nothing(BaseModel):
    """No params."""


if registry.get(IDEMPOTENT) is None:

    @registry.action(IDEMPOTENT, params=Nothing, idempotent=True)
    def _idempotent(params: Nothing, ctx: ExecutionContext) -> dict[str, Any]:
        return {}


@pytest.fixture
def runtime(tmp_path: Path, simulator: SimulatorServer) -> Runtime:
    return make_runtime(tmp_path, simulator)


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, list[str]]]:
    """The messages the sweep sends, by kind, instead of a broker."""
    record: dict[str, list[str]] = {"execute": [], "gate": []}

    def recorder(kind: str) -> Any:
        def send(action_id: str) -> bool:
            record[kind].append(action_id)
            return True

        return send

    monkeypatch.setattr(maintenance, "send_execute", recorder("execute"))
    monkeypatch.setattr(maintenance, "send_gate", recorder("gate"))
    yield record


def queued(runtime: Runtime, action: str = "http.request", params: dict[str, Any] | None = None) -> Action:
    """A released (policy allow) action, as the web process records it."""
    params = params if params is not None else {"method": "GET", "url": "http://127.0.0.1/x"}
    digest = payload_hash(action=action, params=params, user="alice", agent="agent-a")
    now = utcnow()
    record = Action(
        id=str(uuid.uuid4()), action=action, params=params, user="alice", agent="agent-a", context={},
        payload_hash=digest, status=S.QUEUED, reason="allowed", decision="allow", policy_hash="p" * 64,
        policy_rules=["reads"], methods=[], dispatched_at=now, released_at=now,
    )
    release = Release(action_id=record.id, kind="policy_allow", payload_hash=digest)
    created, _ = runtime.store.create(record, release=release, actor="test", data={})
    return created


def held(runtime: Runtime) -> Action:
    """A gated POST, still ``submitted`` (its gate task has not run)."""
    request = SubmitRequest(action="http.request", user="alice",
                            params={"method": "POST", "url": "http://127.0.0.1/pay", "json": {"amount": 5}})
    return submit(runtime, request, agent="agent-a", source_ip=None, actor="test").action


def age(runtime: Runtime, action: Action, column: str, seconds: float = 3600) -> None:
    """Move one timestamp of the action into the past."""
    assert runtime.store.set_fields(action.id, expected=runtime.store.require(action.id).status,
                                    **{column: utcnow() - timedelta(seconds=seconds)})


def test_queued_action_whose_message_was_lost_is_sent_again_with_growing_backoff(
    runtime: Runtime, sent: dict[str, list[str]]
) -> None:
    action = queued(runtime)
    assert sweep(runtime).resent_execute == []  # still within the grace period
    age(runtime, action, "dispatched_at")
    assert sweep(runtime).resent_execute == [action.id]
    assert sweep(runtime).resent_execute == []  # not twice in a row
    first = runtime.store.require(action.id)
    assert first.dispatch_count == 1 and sent["execute"] == [action.id]
    age(runtime, action, "dispatched_at")
    sweep(runtime)
    second = runtime.store.require(action.id)
    grace = runtime.settings.dispatch_grace_seconds
    assert second.dispatch_count == 2 and second.dispatched_at is not None
    pushed = (second.dispatched_at.replace(tzinfo=None) - utcnow().replace(tzinfo=None)).total_seconds()
    assert grace - 5 < pushed <= grace  # the second re-send waits one more grace period
    assert [_backoff(10, n) for n in range(7)] == [0, 10, 30, 70, 150, 150, 150]  # capped


def test_resending_stops_at_the_first_broker_failure(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    actions = [queued(runtime) for _ in range(3)]
    for action in actions:
        age(runtime, action, "dispatched_at")
    tries: list[str] = []

    def refused(action_id: str) -> bool:
        tries.append(action_id)
        return False

    monkeypatch.setattr(maintenance, "send_execute", refused)
    monkeypatch.setattr(maintenance, "send_gate", refused)
    report = sweep(runtime)
    assert len(tries) == 1 and report.resent_execute == []
    assert all(runtime.store.require(a.id).dispatch_count == 0 for a in actions)  # due again next sweep


def test_submitted_action_whose_gate_task_was_lost_goes_back_to_the_gate(
    runtime: Runtime, sent: dict[str, list[str]]
) -> None:
    action = held(runtime)
    age(runtime, action, "dispatched_at")
    assert sweep(runtime).resent_gate == [action.id]
    assert sent["gate"] == [action.id]


def test_submitted_action_leased_by_a_gate_task_is_left_to_it(runtime: Runtime, sent: dict[str, list[str]]) -> None:
    action = held(runtime)
    age(runtime, action, "dispatched_at")
    assert runtime.store.take_lease(action.id, status=S.SUBMITTED, owner="gate:dead", seconds=60)
    assert sweep(runtime).resent_gate == []
    assert runtime.store.require(action.id).dispatch_count == 0
    age(runtime, action, "lease_until")  # the dead gate task's lease ran out
    assert sweep(runtime).resent_gate == [action.id]


def test_overdue_action_expires_and_its_transaction_is_cancelled(
    runtime: Runtime, simulator: SimulatorServer, sent: dict[str, list[str]]
) -> None:
    action = held(runtime)
    assert open_transaction(runtime, action.id, worker="gate").startswith("asked alice")
    age(runtime, action, "expires_at", seconds=1)
    report = sweep(runtime)
    done = runtime.store.require(action.id)
    assert report.expired == [action.id] and done.status == S.EXPIRED
    assert runtime.store.release_of(action.id) is None
    with SimulatorControl(simulator.url) as control:
        assert control.transaction(done.tid or "")["state"] == "cancelled"


def test_confirmation_lease_left_by_a_dead_listener_fails_closed(
    runtime: Runtime, sent: dict[str, list[str]]
) -> None:
    action = held(runtime)
    open_transaction(runtime, action.id, worker="gate")
    assert runtime.store.take_lease(action.id, status=S.AWAITING_APPROVAL, owner="listener:dead", seconds=30)
    assert sweep(runtime).blocked == []  # the lease is still live: the listener may be exchanging
    age(runtime, action, "lease_until", seconds=1)
    assert sweep(runtime).blocked == [action.id]
    done = runtime.store.require(action.id)
    assert done.status == S.BLOCKED and "could not be verified" in done.reason
    assert runtime.store.release_of(action.id) is None and sent["execute"] == []


def test_worker_that_died_mid_run_leaves_the_action_ambiguous(runtime: Runtime, sent: dict[str, list[str]]) -> None:
    action = queued(runtime)
    assert runtime.store.claim_for_execution(action.id, worker="execute:dead", lease_seconds=60)
    assert sweep(runtime).ambiguous == []
    age(runtime, action, "lease_until", seconds=1)
    assert sweep(runtime).ambiguous == [action.id]
    done = runtime.store.require(action.id)
    assert done.status == S.AMBIGUOUS and "mfa-gate resolve" in done.reason
    assert sent["execute"] == []  # a non-idempotent action never runs again by itself
    resolved = runtime.store.move(action.id, expected=S.AMBIGUOUS, new=S.SUCCEEDED, actor="cli", reason="checked")
    assert resolved is not None and resolved.status == S.SUCCEEDED


def test_idempotent_action_runs_again_after_its_worker_died_but_not_forever(
    runtime: Runtime, sent: dict[str, list[str]]
) -> None:
    action = queued(runtime, IDEMPOTENT, {})
    for run in range(1, MAX_RUNS + 1):
        claimed = runtime.store.claim_for_execution(action.id, worker=f"execute:dead-{run}", lease_seconds=60)
        assert claimed is not None and claimed.action.attempts == run
        age(runtime, action, "lease_until", seconds=1)
        report = sweep(runtime)
        if run < MAX_RUNS:
            assert report.requeued == [action.id] and runtime.store.require(action.id).status == S.QUEUED
    assert report.ambiguous == [action.id]
    assert runtime.store.require(action.id).status == S.AMBIGUOUS
    assert sent["execute"] == [action.id] * (MAX_RUNS - 1)


def test_sweeps_running_at_once_move_each_action_once(runtime: Runtime, sent: dict[str, list[str]]) -> None:
    actions = [queued(runtime) for _ in range(5)]
    for action in actions:
        runtime.store.claim_for_execution(action.id, worker="execute:dead", lease_seconds=60)
        age(runtime, action, "lease_until", seconds=1)
    reports: list[maintenance.SweepReport] = []
    threads = [threading.Thread(target=lambda: reports.append(sweep(runtime))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    moved = sorted(action_id for report in reports for action_id in report.ambiguous)
    assert moved == sorted(a.id for a in actions)
    for action in actions:
        assert [e.event for e in runtime.store.events(action.id)].count("action.ambiguous") == 1
