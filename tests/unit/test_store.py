"""The store: compare-and-set moves, idempotency, releases, leases and the audit chain."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import text

from store import Action, ActionStatus, IdempotencyConflict, Release, Store, TransitionNotAllowed
from store.models import utcnow
from store.transitions import FINAL, TRANSITIONS

S = ActionStatus


def new_action(
    status: S = S.SUBMITTED, *, key: str | None = None, payload: str = "h" * 64, agent: str = "bot"
) -> Action:
    return Action(
        id=str(uuid.uuid4()),
        action="http.request",
        params={"url": "http://127.0.0.1/x"},
        user="alice",
        agent=agent,
        context={},
        idempotency_key=key,
        payload_hash=payload,
        status=status,
        reason="test",
        decision="mfa",
        policy_hash="p" * 64,
        policy_rules=["r"],
        methods=["push"],
        dispatched_at=utcnow(),
    )


def test_final_statuses_have_no_moves() -> None:
    assert {S.SUCCEEDED, S.FAILED, S.DENIED, S.REJECTED, S.EXPIRED, S.CANCELLED, S.BLOCKED} == FINAL
    assert TRANSITIONS[S.QUEUED] == {S.EXECUTING}


def test_move_is_compare_and_set(store: Store) -> None:
    action, _ = store.create(new_action(), release=None, actor="t", data={})
    first = store.move(action.id, expected=S.SUBMITTED, new=S.AWAITING_APPROVAL, actor="a", tid="T1")
    second = store.move(action.id, expected=S.SUBMITTED, new=S.AWAITING_APPROVAL, actor="b", tid="T2")
    assert first is not None and first.tid == "T1"
    assert second is None
    assert store.require(action.id).tid == "T1"


def test_move_not_in_table_is_refused(store: Store) -> None:
    action, _ = store.create(new_action(), release=None, actor="t", data={})
    with pytest.raises(TransitionNotAllowed, match="submitted to succeeded"):
        store.move(action.id, expected=S.SUBMITTED, new=S.SUCCEEDED, actor="t")
    assert store.require(action.id).status == S.SUBMITTED


def test_action_cannot_start_executing(store: Store) -> None:
    with pytest.raises(TransitionNotAllowed):
        store.create(new_action(S.EXECUTING), release=None, actor="t", data={})


def test_same_idempotency_key_and_payload_gives_one_action(store: Store) -> None:
    first, created_first = store.create(new_action(key="k1"), release=None, actor="t", data={})
    second, created_second = store.create(new_action(key="k1"), release=None, actor="t", data={})
    assert (created_first, created_second) == (True, False)
    assert second.id == first.id
    assert len(store.list_actions()) == 1


def test_same_key_other_payload_is_a_conflict_and_writes_nothing(store: Store) -> None:
    store.create(new_action(key="k1"), release=None, actor="t", data={})
    with pytest.raises(IdempotencyConflict, match="different payload"):
        store.create(new_action(key="k1", payload="x" * 64), release=None, actor="t", data={})
    assert len(store.list_actions()) == 1


def test_idempotency_keys_are_scoped_per_agent(store: Store) -> None:
    store.create(new_action(key="k1", agent="a1"), release=None, actor="t", data={})
    _, created = store.create(new_action(key="k1", agent="a2", payload="y" * 64), release=None, actor="t", data={})
    assert created


def test_release_happens_once(store: Store) -> None:
    action, _ = store.create(new_action(), release=None, actor="t", data={})
    store.move(action.id, expected=S.SUBMITTED, new=S.AWAITING_APPROVAL, actor="g", tid="T")
    results = []
    for who in ("l1", "l2"):
        release = Release(action_id=action.id, kind="approval", payload_hash=action.payload_hash, approver="alice")
        results.append(
            store.release(action.id, expected=S.AWAITING_APPROVAL, release=release, actor=who, reason="approved")
        )
    assert results[0] is not None and results[0].status == S.QUEUED and results[0].dispatched_at is not None
    assert results[1] is None
    found = store.release_of(action.id)
    assert found is not None and found.approver == "alice"


def test_concurrent_claims_have_one_winner(store: Store) -> None:
    release = Release(action_id="", kind="policy_allow", payload_hash="h" * 64)
    action = new_action(S.QUEUED)
    release.action_id = action.id
    store.create(action, release=release, actor="t", data={})
    winners: list[str] = []
    barrier = threading.Barrier(4)

    def claim(name: str) -> None:
        barrier.wait()
        if store.claim_for_execution(action.id, worker=name, lease_seconds=60) is not None:
            winners.append(name)

    threads = [threading.Thread(target=claim, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(winners) == 1
    claimed = store.require(action.id)
    assert claimed.status == S.EXECUTING and claimed.lease_owner == winners[0] and claimed.attempts == 1


def test_lease_excludes_others_until_it_expires(store: Store) -> None:
    action, _ = store.create(new_action(), release=None, actor="t", data={})
    store.move(action.id, expected=S.SUBMITTED, new=S.AWAITING_APPROVAL, actor="g", tid="T")
    assert store.take_lease(action.id, status=S.AWAITING_APPROVAL, owner="l1", seconds=30) is not None
    assert store.take_lease(action.id, status=S.AWAITING_APPROVAL, owner="l2", seconds=30) is None
    assert store.take_lease(action.id, status=S.AWAITING_APPROVAL, owner="l1", seconds=30) is not None
    store.set_fields(action.id, expected=S.AWAITING_APPROVAL, lease_until=utcnow() - timedelta(seconds=1))
    assert store.take_lease(action.id, status=S.AWAITING_APPROVAL, owner="l2", seconds=30) is not None


def test_every_move_is_audited_and_the_chain_verifies(store: Store) -> None:
    action, _ = store.create(new_action(), release=None, actor="t", data={})
    store.move(action.id, expected=S.SUBMITTED, new=S.AWAITING_APPROVAL, actor="g")
    store.move(action.id, expected=S.AWAITING_APPROVAL, new=S.REJECTED, actor="l", reason="alice said no")
    events = [e.event for e in store.events(action.id)]
    assert events == ["action.created", "action.awaiting_approval", "action.rejected"]
    report = store.verify_audit()
    assert report.ok and report.events == 3


def test_a_policy_allow_records_created_and_released_in_one_chained_append(store: Store) -> None:
    store.audit("first", actor="x")
    allowed = new_action(S.QUEUED)
    store.create(allowed, release=Release(action_id=allowed.id, kind="policy_allow", payload_hash="h" * 64),
                 actor="t", data={})
    store.audit("last", actor="x")

    events = store.events()
    assert [(e.seq, e.event) for e in events] == [
        (1, "first"), (2, "action.created"), (3, "action.released"), (4, "last")
    ]
    assert events[2].data == {"kind": "policy_allow", "payload_hash": "h" * 64}
    report = store.verify_audit()
    assert report.ok and report.events == 4 and report.head_seq == 4


@pytest.mark.parametrize("tamper", ["edit", "delete", "reorder", "truncate"])
def test_audit_verify_finds_tampering(store: Store, tamper: str) -> None:
    action, _ = store.create(new_action(), release=None, actor="t", data={})
    store.move(action.id, expected=S.SUBMITTED, new=S.AWAITING_APPROVAL, actor="g")
    store.move(action.id, expected=S.AWAITING_APPROVAL, new=S.EXPIRED, actor="l")
    store.audit("note", actor="x", data={"n": 1})
    statements = {
        "edit": "UPDATE audit_events SET actor = 'mallory' WHERE seq = 2",
        "delete": "DELETE FROM audit_events WHERE seq = 2",
        "reorder": "UPDATE audit_events SET seq = CASE seq WHEN 2 THEN 3 ELSE 2 END WHERE seq IN (2, 3)",
        "truncate": "DELETE FROM audit_events WHERE seq = 4",
    }
    with store.engine.begin() as conn:
        if tamper == "reorder":
            conn.execute(text("UPDATE audit_events SET seq = 1000 WHERE seq = 2"))
            conn.execute(text("UPDATE audit_events SET seq = 2 WHERE seq = 3"))
            conn.execute(text("UPDATE audit_events SET seq = 3 WHERE seq = 1000"))
        else:
            conn.execute(text(statements[tamper]))
    report = store.verify_audit()
    assert not report.ok
    assert report.broken_at == {"edit": 2, "delete": 2, "reorder": 2, "truncate": 4}[tamper]


def test_drop_lease_only_by_its_owner(store: Store) -> None:
    action, _ = store.create(new_action(), release=None, actor="t", data={})
    store.move(action.id, expected=S.SUBMITTED, new=S.AWAITING_APPROVAL, actor="g")
    store.take_lease(action.id, status=S.AWAITING_APPROVAL, owner="l1", seconds=30)
    assert not store.drop_lease(action.id, status=S.AWAITING_APPROVAL, owner="l2")
    assert store.require(action.id).lease_owner == "l1"
    assert store.drop_lease(action.id, status=S.AWAITING_APPROVAL, owner="l1")
    assert store.require(action.id).lease_owner is None


def test_reads_do_not_wait_for_a_writer(tmp_path: object) -> None:
    from pathlib import Path

    sqlite = Store(f"sqlite:///{Path(str(tmp_path)) / 'r.db'}", audit_key=b"k")
    sqlite.create_schema()
    action, _ = sqlite.create(new_action(), release=None, actor="t", data={})
    holding, release_writer = threading.Event(), threading.Event()

    def writer() -> None:
        with sqlite.session() as session:  # BEGIN IMMEDIATE: holds SQLite's write lock
            session.get(Action, action.id)
            holding.set()
            release_writer.wait(10)

    thread = threading.Thread(target=writer)
    thread.start()
    holding.wait(5)
    started = time.monotonic()
    found = sqlite.get(action.id)
    waited = time.monotonic() - started
    release_writer.set()
    thread.join()
    assert found is not None and waited < 2.0


def test_concurrent_first_audit_appends_on_a_fresh_database(store: Store) -> None:
    errors: list[str] = []

    def append(number: int) -> None:
        try:
            store.audit("test.concurrent", actor=f"writer-{number}")
        except Exception as exc:  # the assertion below names it
            errors.append(type(exc).__name__)

    threads = [threading.Thread(target=append, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    report = store.verify_audit()
    assert report.ok and report.events == 8


def test_claim_reads_the_release_record_in_the_same_transaction(store: Store) -> None:
    allowed = new_action(S.QUEUED)
    release = Release(action_id=allowed.id, kind="policy_allow", payload_hash="h" * 64)
    released, _ = store.create(allowed, release=release, actor="t", data={})
    bare, _ = store.create(new_action(S.QUEUED), release=None, actor="t", data={})
    claim = store.claim_for_execution(released.id, worker="w1", lease_seconds=60)
    assert claim is not None and claim.action.status == S.EXECUTING and claim.action.attempts == 1
    assert claim.release is not None and claim.release.kind == "policy_allow"
    assert store.claim_for_execution(released.id, worker="w2", lease_seconds=60) is None
    unreleased = store.claim_for_execution(bare.id, worker="w1", lease_seconds=60)
    assert unreleased is not None and unreleased.release is None


def test_lease_for_a_transaction_only_takes_the_action_holding_it(store: Store) -> None:
    action, _ = store.create(new_action(), release=None, actor="t", data={})
    store.move(action.id, expected=S.SUBMITTED, new=S.AWAITING_APPROVAL, actor="g", tid="T-real")
    assert store.take_lease(action.id, status=S.AWAITING_APPROVAL, owner="l1", seconds=30, tid="T-other") is None
    leased = store.take_lease(action.id, status=S.AWAITING_APPROVAL, owner="l1", seconds=30, tid="T-real")
    assert leased is not None and leased.lease_owner == "l1" and leased.tid == "T-real"


def test_an_approval_ends_the_agents_run_of_refusals_in_the_release_transaction(store: Store) -> None:
    for _ in range(2):
        store.record_refusal("bot", limit=5, actor="t")
    fail_open, _ = store.create(new_action(), release=None, actor="t", data={})
    store.release(
        fail_open.id,
        expected=S.SUBMITTED,
        release=Release(action_id="", kind="fail_open", payload_hash="h" * 64),
        actor="g",
        reason="fail open",
    )
    state = store.agent_state("bot")
    assert state is not None and state.refusals_in_row == 2  # only a person's approval counts
    approved, _ = store.create(new_action(), release=None, actor="t", data={})
    store.move(approved.id, expected=S.SUBMITTED, new=S.AWAITING_APPROVAL, actor="g", tid="T1")
    store.release(
        approved.id,
        expected=S.AWAITING_APPROVAL,
        release=Release(action_id="", kind="approval", payload_hash="h" * 64, approver="alice", tid="T1"),
        actor="l",
        reason="approved",
    )
    state = store.agent_state("bot")
    assert state is not None and state.refusals_in_row == 0 and not state.suspended


def test_request_load_counts_what_the_push_fatigue_limits_weigh(store: Store) -> None:
    since = utcnow() - timedelta(hours=1)
    empty = store.request_load(agent="bot", user="alice", since=since, raw_call_event="mcp.rublon_call")
    assert (empty.suspended, empty.pending_for_user, empty.pending_for_agent, empty.requests_by_agent) == (
        False,
        0,
        0,
        0,
    )
    store.create(new_action(), release=None, actor="t", data={})
    waiting, _ = store.create(new_action(), release=None, actor="t", data={})
    store.move(waiting.id, expected=S.SUBMITTED, new=S.AWAITING_APPROVAL, actor="g", tid="T1")
    store.create(new_action(S.DENIED), release=None, actor="t", data={})
    store.create(new_action(agent="other"), release=None, actor="t", data={})
    store.audit("mcp.rublon_call", actor="agent:bot", data={"tool": "rublon_verify_user"})
    store.audit("mcp.rublon_call", actor="agent:other", data={"tool": "rublon_verify_user"})
    for _ in range(2):
        store.record_refusal("bot", limit=2, actor="t")
    load = store.request_load(agent="bot", user="alice", since=since, raw_call_event="mcp.rublon_call")
    assert load.suspended and load.suspended_reason and "in a row" in load.suspended_reason
    assert load.pending_for_user == 3  # every agent's pending requests for alice
    assert load.pending_for_agent == 2  # bot's submitted and awaiting ones, not the denied one
    assert load.requests_by_agent == 3 + 1  # bot's three actions this hour and its one raw Rublon call
    later = store.request_load(
        agent="bot", user="alice", since=utcnow() + timedelta(seconds=1), raw_call_event="mcp.rublon_call"
    )
    assert later.requests_by_agent == 0 and later.pending_for_user == 3
