"""Security logic in isolation: push text, push-fatigue limits, cumulative limits, refusals, secrets.

Task logic runs in this process against a real SQLite store and the simulator over
loopback HTTP; Celery messages go to an in-memory broker no worker reads.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from cli.target import CountingTarget
from policies import hash_credential
from simulator.server import SimulatorServer
from store import ActionStatus
from tasks import registry
from tasks.confirmation import confirm, refuse
from tasks.display import clean_text, summary
from tasks.execute import execute
from tasks.gate import open_transaction
from tasks.submission import SubmitRequest, submit
from tests.fixtures import directory_text
from tests.unit.conftest import make_runtime

S = ActionStatus
TOKEN, SECRET = "0123456789ABCDEF0123456789ABCDEF", "unit-secret"


def post(url: str, amount: float = 10, method: str = "POST", **extra: object) -> SubmitRequest:
    params = {"method": method, "url": url, "json": {"amount": amount, "recipient": "ACME"}, **extra}
    return SubmitRequest(action="http.request", params=params, user="alice")


def test_push_text_is_built_from_the_typed_action_and_cleans_agent_text() -> None:
    spec = registry.get("http.request")
    assert spec is not None
    note = "Pay now\u202e\u200b\x07 " + "x" * 500
    text = summary(spec=spec, params={"method": "POST", "url": "http://127.0.0.1/pay", "json": {"amount": 5000}},
                   agent="agent-a", user="alice", payload_hash="abcdef0123", context={"note": note})
    lines = text.splitlines()
    assert lines[0] == "Approve http.request for alice?"
    assert "POST http://127.0.0.1/pay" in lines and "amount: 5000" in lines
    assert "Requested by agent: agent-a" in lines and "Code: ABCDEF" in lines
    labelled = [line for line in lines if line.startswith("Agent's note (unverified): ")]
    assert len(labelled) == 1 and len(labelled[0]) < 160
    assert not any(ch in text for ch in "\u202e\u200b\x07")
    assert clean_text("a\u2066b\nc", limit=10) == "ab c"


def test_pending_limit_per_user_blocks_the_next_request(tmp_path: Path, simulator: SimulatorServer) -> None:
    runtime = make_runtime(tmp_path, simulator, limits={"max_pending_per_user": 1})
    first = submit(runtime, post("http://127.0.0.1/a"), agent="agent-a", source_ip=None, actor="t")
    second = submit(runtime, post("http://127.0.0.1/b"), agent="agent-a", source_ip=None, actor="t")
    assert first.action.status == S.SUBMITTED
    assert second.action.status == S.BLOCKED and "pending approval requests" in second.action.reason
    assert runtime.store.events(second.action.id)[0].data["status"] == "blocked"


def test_agent_suspended_after_refusals_until_lifted(tmp_path: Path, simulator: SimulatorServer) -> None:
    runtime = make_runtime(tmp_path, simulator)
    limit = runtime.policy.limits.suspend_agent_after_refusals
    suspended = [runtime.store.record_refusal("agent-a", limit=3, actor="t") for _ in range(3)]
    assert suspended == [False, False, True] and limit >= 3
    blocked = submit(runtime, post("http://127.0.0.1/c"), agent="agent-a", source_ip=None, actor="t")
    assert blocked.action.status == S.BLOCKED and "suspended" in blocked.action.reason
    assert [e.event for e in runtime.store.events() if e.event.startswith("agent.")] == ["agent.suspended"]
    assert runtime.store.lift_suspension("agent-a", actor="cli")
    again = submit(runtime, post("http://127.0.0.1/d"), agent="agent-a", source_ip=None, actor="t")
    assert again.action.status == S.SUBMITTED


def test_small_allowed_actions_add_up_to_an_approval(tmp_path: Path, simulator: SimulatorServer) -> None:
    allow_puts = '\n[[rules]]\nname = "small-puts"\naction = "http.request"\nwhen = ["params.method == \'PUT\'"]\n' \
                 'outcome = "allow"\n'
    runtime = make_runtime(tmp_path, simulator, limits={"max_amount_per_agent_window": 100}, extra_rules=allow_puts)
    statuses = [submit(runtime, post(f"http://127.0.0.1/{i}", amount=40, method="PUT"), agent="agent-a",
                       source_ip=None, actor="t").action for i in range(3)]
    assert [a.status for a in statuses] == [S.QUEUED, S.QUEUED, S.SUBMITTED]
    assert "would move 120" in statuses[2].reason


def test_execute_refuses_actions_that_are_not_queued(tmp_path: Path, simulator: SimulatorServer) -> None:
    runtime = make_runtime(tmp_path, simulator)
    held = submit(runtime, post("http://127.0.0.1/held"), agent="agent-a", source_ip=None, actor="t").action
    assert execute(runtime, held.id, worker="forger").startswith("refused")
    assert execute(runtime, str(uuid.uuid4()), worker="forger").startswith("refused")
    assert runtime.store.require(held.id).status == S.SUBMITTED
    refusals = [e for e in runtime.store.events() if e.event == "execute.refused"]
    assert len(refusals) == 2


def test_gate_never_sends_a_second_push(tmp_path: Path, simulator: SimulatorServer) -> None:
    runtime = make_runtime(tmp_path, simulator)
    held = submit(runtime, post("http://127.0.0.1/push"), agent="agent-a", source_ip=None, actor="t").action
    assert open_transaction(runtime, held.id, worker="g1").startswith("asked alice")
    assert open_transaction(runtime, held.id, worker="g2").startswith("nothing to do")
    tid = runtime.store.require(held.id).tid
    from simulator.control import SimulatorControl

    with SimulatorControl(simulator.url) as control:
        assert control.stats()["pushes"].get(tid) == 1


def test_server_held_secrets_are_injected_and_never_stored(tmp_path: Path, simulator: SimulatorServer) -> None:
    runtime = make_runtime(tmp_path, simulator, secrets='[secrets]\npayments_api = "sk-live-TOPSECRET"\n')
    with CountingTarget() as target:
        request = SubmitRequest(action="http.request", user="alice", params={
            "method": "GET", "url": f"{target.url}/balance", "secret_headers": {"X-Api-Key": "payments_api"}})
        action = submit(runtime, request, agent="agent-a", source_ip=None, actor="t").action
        assert execute(runtime, action.id, worker="w") == "succeeded"
        assert target.requests[-1]["headers"]["X-Api-Key"] == "sk-live-TOPSECRET"
    dump = str(runtime.store.require(action.id).model_dump()) + str([e.data for e in runtime.store.events()])
    assert "TOPSECRET" not in dump


def test_agent_may_not_set_credential_headers(tmp_path: Path, simulator: SimulatorServer) -> None:
    from tasks.submission import SubmissionError

    runtime = make_runtime(tmp_path, simulator)
    request = SubmitRequest(action="http.request", user="alice", params={
        "method": "GET", "url": "http://127.0.0.1/x", "headers": {"Authorization": "Bearer stolen"}})
    with pytest.raises(SubmissionError) as refused:
        submit(runtime, request, agent="agent-a", source_ip=None, actor="t")
    assert refused.value.field == "params.headers"
    assert runtime.store.list_actions() == []


def test_credentials_are_stored_hashed() -> None:
    text = directory_text()
    assert "credential-of-agent-a" not in text and hash_credential("credential-of-agent-a-0123456789") in text


def test_late_answers_for_final_actions_release_nothing_and_are_audited(tmp_path: Path,
                                                                      simulator: SimulatorServer) -> None:
    runtime = make_runtime(tmp_path, simulator)
    held = submit(runtime, post("http://127.0.0.1/late"), agent="agent-a", source_ip=None, actor="t").action
    open_transaction(runtime, held.id, worker="g")
    runtime.store.move(held.id, expected=S.AWAITING_APPROVAL, new=S.EXPIRED, actor="t", reason="deadline")
    final = runtime.store.require(held.id)

    confirmed = confirm(runtime, runtime.rublon, final.id, "t" * 60, tid=final.tid, actor="listener", method="push")
    denied = refuse(runtime, final, new=S.REJECTED, reason="no", actor="listener")

    assert [confirmed.status, denied.status] == ["expired", "expired"]
    ignored = [e.data["answer"] for e in runtime.store.events(held.id) if e.event == "confirmation.ignored"]
    assert ignored == ["confirmed", "rejected"]
    assert runtime.store.require(held.id).status == S.EXPIRED and runtime.store.release_of(held.id) is None
