"""The execute task's logic in isolation: a real SQLite store, a local counting target, no broker.

What it must guarantee: a released action runs at most once however often it is delivered,
nothing unreleased or changed since its release runs, a non-idempotent request whose
outcome is unknown ends ``ambiguous`` (never ``failed``), and idempotent handlers retry
transient errors with a bounded backoff inside the task's time budget.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from cli.target import CountingTarget
from simulator.server import SimulatorServer
from store import Action, ActionStatus, Release
from store.models import utcnow
from tasks import execute as execute_module
from tasks import maintenance, registry
from tasks.binding import payload_hash
from tasks.execute import execute
from tasks.registry import ExecutionContext, TransientError
from tasks.runtime import Runtime
from tests.unit.conftest import make_runtime

S = ActionStatus
FLAKY = "test.execute-flaky"
STUCK = "test.execute-stuck"
calls: Counter[str] = Counter()


class Plan(BaseModel):
    """How often the flaky handler fails before it works (-1: always)."""

    failures: int = 0


if registry.get(FLAKY) is None:

    @registry.action(FLAKY, params=Plan, idempotent=True, max_attempts=3)
    def _flaky(params: Plan, ctx: ExecutionContext) -> dict[str, Any]:
        calls[ctx.action_id] += 1
        if params.failures < 0 or calls[ctx.action_id] <= params.failures:
            raise TransientError("HTTP 503 from the target")
        return {"calls": calls[ctx.action_id]}

    @registry.action(STUCK, params=Plan, idempotent=False)
    def _stuck(params: Plan, ctx: ExecutionContext) -> dict[str, Any]:
        # The worker is presumed dead meanwhile: its lease runs out and maintenance takes over.
        runtime = _current["runtime"]
        runtime.store.set_fields(ctx.action_id, expected=S.EXECUTING, lease_until=utcnow() - timedelta(seconds=1))
        maintenance.sweep(runtime)
        return {"done": True}


_current: dict[str, Runtime] = {}


@pytest.fixture
def runtime(tmp_path: Path, simulator: SimulatorServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    made = make_runtime(tmp_path, simulator)
    _current["runtime"] = made
    monkeypatch.setattr(execute_module, "RETRY_BASE_SECONDS", 0.01)
    monkeypatch.setattr(maintenance, "send_execute", lambda action_id: True)
    yield made
    _current.clear()


@pytest.fixture(scope="module")
def target() -> Iterator[CountingTarget]:
    with CountingTarget() as counting:
        yield counting


def released(runtime: Runtime, action: str, params: dict[str, Any], *, release: bool = True) -> Action:
    """A ``queued`` action with a policy-allow release record (unless ``release`` is False)."""
    digest = payload_hash(action=action, params=params, user="alice", agent="agent-a")
    now = utcnow()
    record = Action(
        id=str(uuid.uuid4()), action=action, params=params, user="alice", agent="agent-a", context={},
        payload_hash=digest, status=S.QUEUED, reason="allowed", decision="allow", policy_hash="p" * 64,
        policy_rules=["test"], methods=[], dispatched_at=now, released_at=now,
    )
    grant = Release(action_id=record.id, kind="policy_allow", payload_hash=digest) if release else None
    created, _ = runtime.store.create(record, release=grant, actor="test", data={})
    return created


def post(target: CountingTarget, path: str, **extra: Any) -> dict[str, Any]:
    return {"method": "POST", "url": f"{target.url}{path}", "json": {"amount": 10}, **extra}


def test_released_action_runs_once_however_often_it_is_delivered(runtime: Runtime, target: CountingTarget) -> None:
    action = released(runtime, "http.request", post(target, "/once"))
    assert execute(runtime, action.id, worker="w1") == "succeeded"
    assert execute(runtime, action.id, worker="w2").startswith("refused")
    assert target.count(action.id) == 1
    events = [e.event for e in runtime.store.events(action.id)]
    assert events.count("action.executing") == 1 and events.count("execute.refused") == 1


def test_deliveries_at_the_same_moment_run_it_once(runtime: Runtime, target: CountingTarget) -> None:
    action = released(runtime, "http.request", post(target, "/race"))
    outcomes: list[str] = []
    threads = [
        threading.Thread(target=lambda n=n: outcomes.append(execute(runtime, action.id, worker=f"w{n}")))
        for n in range(6)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("succeeded") == 1 and target.count(action.id) == 1


def test_action_without_a_release_or_changed_since_never_runs(runtime: Runtime, target: CountingTarget) -> None:
    unreleased = released(runtime, "http.request", post(target, "/unreleased"), release=False)
    assert execute(runtime, unreleased.id, worker="w") == "refused: queued without a release record"
    assert runtime.store.require(unreleased.id).status == S.FAILED
    tampered = released(runtime, "http.request", post(target, "/tampered"))
    runtime.store.set_fields(tampered.id, expected=S.QUEUED, params=post(target, "/attacker"))
    assert "payload changed" in execute(runtime, tampered.id, worker="w")
    assert runtime.store.require(tampered.id).status == S.FAILED
    assert target.count(unreleased.id) == target.count(tampered.id) == 0


def test_post_whose_answer_never_came_is_ambiguous_not_failed(runtime: Runtime, target: CountingTarget) -> None:
    action = released(runtime, "http.request", post(target, "/slow/1500/timeout", timeout=0.3))
    assert execute(runtime, action.id, worker="w") == "ambiguous"
    done = runtime.store.require(action.id)
    assert "outcome is unknown" in (done.error or "") and "mfa-gate resolve" in done.reason
    assert target.count(action.id) == 1  # the target did get it: "failed" would have been a lie


def test_non_idempotent_post_is_not_retried_on_a_5xx(runtime: Runtime, target: CountingTarget) -> None:
    action = released(runtime, "http.request", post(target, "/http503/pay"))
    assert execute(runtime, action.id, worker="w") == "failed"
    assert target.count(action.id) == 1


def test_idempotent_handler_retries_transient_errors(runtime: Runtime) -> None:
    action = released(runtime, FLAKY, {"failures": 2})
    assert execute(runtime, action.id, worker="w") == "succeeded"
    assert calls[action.id] == 3 and runtime.store.require(action.id).result == {"calls": 3}


def test_idempotent_handler_gives_up_after_its_bounded_attempts(runtime: Runtime) -> None:
    action = released(runtime, FLAKY, {"failures": -1})
    assert execute(runtime, action.id, worker="w") == "failed"
    assert calls[action.id] == 3
    assert "gave up after 3 attempt(s)" in (runtime.store.require(action.id).error or "")


def test_retries_stop_when_the_time_budget_is_spent(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime.settings, "execute_time_limit", 11)  # leaves the handlers 1 s in all
    action = released(runtime, FLAKY, {"failures": -1})
    assert execute(runtime, action.id, worker="w") == "failed"
    assert calls[action.id] == 1


def test_outcome_reached_after_the_lease_ran_out_is_kept_in_the_audit_trail(runtime: Runtime) -> None:
    action = released(runtime, STUCK, {})
    assert execute(runtime, action.id, worker="w") == "lease lost"
    assert runtime.store.require(action.id).status == S.AMBIGUOUS
    late = [e for e in runtime.store.events(action.id) if e.event == "execute.outcome_after_lease"]
    assert len(late) == 1 and late[0].data["outcome"] == "succeeded"
