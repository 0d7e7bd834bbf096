"""The simulator's state machine, decisions, tokens and subscriptions, on a fake clock."""

from __future__ import annotations

from typing import Any

import pytest

from simulator.state import (
    ApiRefusal,
    Decision,
    SimulatorState,
    SimUser,
    TransactionNotPending,
    TransactionState,
    UnknownTransaction,
    make_user,
)

APP = "APPTOKEN"
OTHER_APP = "OTHERTOKEN"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_state(clock: FakeClock, **options: Any) -> SimulatorState:
    users = [
        SimUser("alice", "alice@example.com"),
        SimUser("bob", "bob@example.com", "bypass"),
        SimUser("carol", "carol@example.com", "denied"),
        SimUser("dave", "dave@example.com", "active", ("push", "sms")),
    ]
    options.setdefault("decision", "manual")
    return SimulatorState(apps={APP: "k1", OTHER_APP: "k2"}, users=users, clock=clock, **options)


def open_tid(state: SimulatorState, email: str = "alice@example.com", username: str = "alice") -> str:
    return state.init_promptless(APP, username=username, email=email, params={"p": "1"}).tid


class Collector:
    """A subscriber sink that keeps what it is given."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    def __call__(self, message: dict[str, Any]) -> None:
        self.messages.append(message)

    @property
    def types(self) -> list[str]:
        return [m["type"] for m in self.messages]


# ---------------------------------------------------------------------------- decisions


@pytest.mark.parametrize(
    ("text", "kind", "delay"),
    [("approve", "approve", 0.0), ("deny", "deny", 0.0), ("expire", "expire", 0.0), ("manual", "manual", 0.0),
     ("approve:2.5", "approve", 2.5), ("deny:1", "deny", 1.0)],
)
def test_decision_parses_its_text_forms(text: str, kind: str, delay: float) -> None:
    decision = Decision.parse(text)

    assert (decision.kind, decision.delay) == (kind, delay)
    assert Decision.parse(str(decision)) == decision


@pytest.mark.parametrize(
    "text", ["", "yes", "approve:", "approve:-1", "approve:nan", "manual:3", "expire:1", "approve:x"]
)
def test_decision_refuses_anything_else(text: str) -> None:
    with pytest.raises(ValueError, match="decision must be"):
        Decision.parse(text)


def test_approve_decision_confirms_right_after_the_push() -> None:
    state = make_state(FakeClock(), decision="approve")
    tid = open_tid(state)

    result = state.send_method(APP, tid, "push")

    assert result == {"tid": tid, "method": "push", "sent": True}
    assert state.transaction(tid).state is TransactionState.CONFIRMED
    assert state.stats()["pushes"] == {tid: 1}


def test_delayed_approval_waits_for_its_time() -> None:
    clock = FakeClock()
    state = make_state(clock, decision="approve:2.5")
    tid = open_tid(state)
    state.send_method(APP, tid, "push")

    clock.now += 2.4
    state.tick()
    assert state.transaction(tid).state is TransactionState.PENDING
    clock.now += 0.2
    state.tick()
    assert state.transaction(tid).state is TransactionState.CONFIRMED


def test_per_transaction_decision_overrides_the_default() -> None:
    state = make_state(FakeClock(), decision="approve")
    denied, approved = open_tid(state), open_tid(state)
    state.set_decision("deny", tid=denied)

    state.send_method(APP, denied, "push")
    state.send_method(APP, approved, "push")

    assert state.transaction(denied).state is TransactionState.DENIED
    assert state.transaction(approved).state is TransactionState.CONFIRMED


def test_manual_transaction_expires_at_its_expiry_time() -> None:
    clock = FakeClock()
    state = make_state(clock, expires_in=30)
    tid = open_tid(state)
    state.send_method(APP, tid, "push")

    clock.now += 29.9
    assert state.transaction(tid).state is TransactionState.PENDING
    clock.now += 0.1
    assert state.transaction(tid).state is TransactionState.EXPIRED
    with pytest.raises(ApiRefusal, match="TransactionLocked"):
        state.send_method(APP, tid, "push")


def test_code_method_is_decided_by_the_code_not_by_the_policy() -> None:
    state = make_state(FakeClock(), decision="approve")
    tid = open_tid(state, "dave@example.com", "dave")

    assert state.send_method(APP, tid, "sms")["sent"] is True
    assert state.transaction(tid).state is TransactionState.PENDING
    assert state.submit_code(APP, tid, "sms", "999999")["accepted"] is False
    assert state.submit_code(APP, tid, "sms", "123456")["accepted"] is True
    assert state.transaction(tid).state is TransactionState.CONFIRMED


def test_code_for_a_device_method_is_forbidden() -> None:
    state = make_state(FakeClock())
    tid = open_tid(state)

    with pytest.raises(ApiRefusal, match="ForbiddenMethod"):
        state.submit_code(APP, tid, "push", "123456")


# ---------------------------------------------------------------------------- users


def test_users_are_refused_by_status() -> None:
    state = make_state(FakeClock())

    with pytest.raises(ApiRefusal) as bypassed:
        open_tid(state, "bob@example.com", "bob")
    with pytest.raises(ApiRefusal) as denied:
        open_tid(state, "carol@example.com", "carol")
    with pytest.raises(ApiRefusal) as unknown:
        open_tid(state, "nobody@example.com", "nobody")

    assert (bypassed.value.exception, bypassed.value.code) == ("UserBypassedException", 45)
    assert denied.value.exception == "UserDeniedException"
    assert unknown.value.exception == "UserNotFoundException"


def test_prompt_transaction_of_a_denied_user_is_denied_from_the_start() -> None:
    state = make_state(FakeClock())

    transaction = state.init_prompt(APP, username="carol", callback_url="http://cb", email=None, params={})

    assert transaction.state is TransactionState.DENIED


def test_set_user_changes_status_at_runtime_and_validates() -> None:
    state = make_state(FakeClock())
    state.set_user("alice", email="Alice@Example.com", status="bypass")

    assert state.verify_user(APP, "ALICE@example.com")["status"] == "bypass"
    with pytest.raises(ValueError, match="status"):
        state.set_user("x", email="x@example.com", status="maybe")
    with pytest.raises(ValueError, match="methods"):
        make_user("x", "x@example.com", "active", ["carrier-pigeon"])


# ---------------------------------------------------------------------------- tokens


def test_access_token_is_60_lower_case_alphanumerics_and_single_use() -> None:
    state = make_state(FakeClock())
    tid = open_tid(state)
    token = state.approve(tid)

    assert len(token) == 60 and token.isalnum() and token == token.lower()
    assert state.exchange_token(APP, token)["tid"] == tid
    with pytest.raises(ApiRefusal, match="UnknownAccessToken"):
        state.exchange_token(APP, token)


def test_access_token_expires_after_its_ttl() -> None:
    clock = FakeClock()
    state = make_state(clock, token_ttl=120)
    token = state.approve(open_tid(state))

    clock.now += 120.5

    with pytest.raises(ApiRefusal, match="AccessTokenExpired"):
        state.exchange_token(APP, token)


def test_another_apps_token_is_unknown() -> None:
    state = make_state(FakeClock())
    token = state.approve(open_tid(state))

    with pytest.raises(ApiRefusal, match="UnknownAccessToken"):
        state.exchange_token(OTHER_APP, token)


def test_credentials_echo_the_init_params() -> None:
    state = make_state(FakeClock())
    tid = state.init_promptless(APP, username="alice", email="alice@example.com", params={"actionId": "a-9"}).tid

    credentials = state.exchange_token(APP, state.approve(tid))

    assert credentials == {
        "username": "alice",
        "email": "alice@example.com",
        "systemToken": APP,
        "params": {"actionId": "a-9"},
        "tid": tid,
    }


# ---------------------------------------------------------------------------- subscriptions


def test_subscriber_gets_pending_then_exactly_one_final_message() -> None:
    state = make_state(FakeClock())
    tid = open_tid(state)
    sink = Collector()
    state.subscribe(APP, tid, 1, sink)

    token = state.approve(tid)
    state.tick()

    assert sink.messages == [{"type": "pending", "tid": tid}, {"type": "confirmed", "tid": tid, "accessToken": token}]


def test_subscribing_twice_on_one_connection_registers_once() -> None:
    state = make_state(FakeClock())
    tid = open_tid(state)
    sink = Collector()
    state.subscribe(APP, tid, 1, sink)
    state.subscribe(APP, tid, 1, sink)

    state.deny(tid)

    assert sink.types == ["pending", "pending", "denied"]


def test_subscriber_of_a_final_transaction_gets_the_final_message_only() -> None:
    state = make_state(FakeClock())
    tid = open_tid(state)
    state.deny(tid)
    sink = Collector()

    state.subscribe(APP, tid, 1, sink)

    assert sink.messages == [{"type": "denied", "tid": tid}]


def test_subscribe_to_another_apps_tid_is_an_error() -> None:
    state = make_state(FakeClock())
    tid = open_tid(state)
    sink = Collector()

    state.subscribe(OTHER_APP, tid, 1, sink)

    assert sink.types == ["error"]


def test_cancel_tells_subscribers_expired() -> None:
    state = make_state(FakeClock())
    tid = open_tid(state)
    sink = Collector()
    state.subscribe(APP, tid, 1, sink)

    assert state.cancel(APP, tid)["cancelled"] is True

    assert sink.types == ["pending", "expired"]
    assert state.transaction(tid).state is TransactionState.CANCELLED


def test_unsubscribed_connection_hears_nothing_more() -> None:
    state = make_state(FakeClock())
    tid = open_tid(state)
    sink = Collector()
    state.subscribe(APP, tid, 1, sink)
    state.unsubscribe(1)

    state.approve(tid)

    assert sink.types == ["pending"]


def test_forge_reaches_subscribers_without_changing_the_transaction() -> None:
    state = make_state(FakeClock())
    tid = open_tid(state)
    sink = Collector()
    state.subscribe(APP, tid, 1, sink)

    assert state.forge(tid, "forged") == 1

    assert sink.messages[-1] == {"type": "confirmed", "tid": tid, "accessToken": "forged"}
    assert state.transaction(tid).state is TransactionState.PENDING
    with pytest.raises(ApiRefusal, match="UnknownAccessToken"):
        state.exchange_token(APP, "forged")


def test_control_decisions_refuse_unknown_and_final_transactions() -> None:
    state = make_state(FakeClock())
    tid = open_tid(state)
    state.expire(tid)

    with pytest.raises(TransactionNotPending):
        state.approve(tid)
    with pytest.raises(UnknownTransaction):
        state.deny("nope")
