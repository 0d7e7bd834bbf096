"""Everything the simulator remembers, and the rules it answers by.

`SimulatorState` holds the configured apps (System Token -> Secret Key), the users,
the transactions with their one-way state machine, the access tokens, the decision
policy, the confirmation-channel subscribers and the call statistics. All of it sits
behind one lock, so the HTTP handlers (uvicorn's event loop), the WebSocket writers and
a test thread calling `approve()` directly can share it.

Transaction states::

    pending --> confirmed | denied | expired | cancelled      (each final, once)

Subscribers of a tid receive `pending` on subscribe and then exactly one final message:
`confirmed` (with the transaction's one single-use access token), `denied`, or
`expired` (also for `cancelled`).

Decision policy, applied when a method that the person answers on a device (push,
phone call, e-mail) is sent:

- ``approve`` / ``deny``: decide right after the send; ``approve:2.5`` / ``deny:2.5``
  decide 2.5 seconds later;
- ``expire``: the transaction expires right after the send;
- ``manual``: nothing happens until a control call or the prompt page decides, or the
  transaction reaches its expiry time.

Code methods (totp, sms, yubikey) are decided by `submit_code` alone: the configured
`accepted_code` confirms, any other code leaves the transaction pending.

Choices the simulator makes where Rublon documents nothing: an unknown or foreign tid
is refused with ``TransactionNotFoundException`` (not a documented name, so clients see
their generic API error), and error codes other than 45 (UserBypassed) are 400.
"""

from __future__ import annotations

import heapq
import secrets
import string
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from rublon import promptless_mapping as pm

#: Seconds a promptless or prompt transaction stays open without an answer.
DEFAULT_EXPIRES_IN = 120.0
#: Seconds an access token can be exchanged after it was issued.
DEFAULT_TOKEN_TTL = 120.0
#: The one code `submit_code` accepts (any code method).
DEFAULT_ACCEPTED_CODE = "123456"
#: Methods a configured user has when none are given.
DEFAULT_USER_METHODS: tuple[str, ...] = (pm.METHOD_PUSH, pm.METHOD_TOTP)
#: Access tokens are this many lower-case alphanumerics, as Rublon emits them.
TOKEN_LENGTH = 60
_TOKEN_ALPHABET = string.ascii_lowercase + string.digits

#: Wire name -> numeric code. Only 45 is documented; the simulator uses 400 for the rest.
ERROR_CODES: dict[str, int] = {"UserBypassedException": 45}
DEFAULT_ERROR_CODE = 400

USER_STATUSES = frozenset({pm.USER_STATUS_ACTIVE, pm.USER_STATUS_BYPASS, pm.USER_STATUS_DENIED})
FAIL_MODES = frozenset({"unavailable", "bad_signature"})

#: A subscriber's delivery function. It is called with the state's lock held, so it must
#: only hand the message over (e.g. `loop.call_soon_threadsafe(queue.put_nowait, msg)`).
Sink = Callable[[dict[str, Any]], None]


class TransactionState(StrEnum):
    PENDING = "pending"
    CONFIRMED = "confirmed"
    DENIED = "denied"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


#: What subscribers hear when a transaction reaches each final state.
_FINAL_MESSAGE_TYPES: dict[TransactionState, str] = {
    TransactionState.CONFIRMED: pm.TYPE_CONFIRMED,
    TransactionState.DENIED: pm.TYPE_DENIED,
    TransactionState.EXPIRED: pm.TYPE_EXPIRED,
    TransactionState.CANCELLED: pm.TYPE_EXPIRED,
}


class ApiRefusal(Exception):
    """A call the simulator answers with Rublon's HTTP 400 error envelope.

    Attributes: `exception` (wire name), `message`, `field` (sent as `result.name`),
    `code` (numeric code of the envelope).
    """

    def __init__(self, exception: str, message: str, *, field: str | None = None) -> None:
        super().__init__(f"{exception}: {message}")
        self.exception = exception
        self.message = message
        self.field = field
        self.code = ERROR_CODES.get(exception, DEFAULT_ERROR_CODE)


class UnknownTransaction(KeyError):
    """A control call named a tid the simulator never issued."""


class TransactionNotPending(Exception):
    """A control call tried to decide a transaction that is already final."""

    def __init__(self, tid: str, state: TransactionState) -> None:
        super().__init__(f"transaction {tid} is already {state}")
        self.tid = tid
        self.state = state


@dataclass(frozen=True)
class Decision:
    """How the simulator answers a sent method; see the module docstring.

    Parse one with `Decision.parse("approve:2.5")`.
    """

    kind: str
    delay: float = 0.0

    KINDS = frozenset({"approve", "deny", "expire", "manual"})

    @classmethod
    def parse(cls, text: str) -> Decision:
        """Read ``approve``, ``deny``, ``expire``, ``manual``, ``approve:SECONDS`` or
        ``deny:SECONDS``.

        Raises:
            ValueError: anything else (with the accepted forms in the message).
        """
        kind, sep, seconds = text.strip().partition(":")
        problem = f"decision must be approve, deny, expire, manual, approve:SECONDS or deny:SECONDS, got {text!r}"
        if kind not in cls.KINDS:
            raise ValueError(problem)
        if not sep:
            return cls(kind)
        if kind not in ("approve", "deny"):
            raise ValueError(problem)
        try:
            delay = float(seconds)
        except ValueError:
            raise ValueError(problem) from None
        if not delay >= 0 or delay == float("inf"):  # also refuses NaN
            raise ValueError(problem)
        return cls(kind, delay)

    def __str__(self) -> str:
        return f"{self.kind}:{self.delay:g}" if self.delay else self.kind


@dataclass(frozen=True)
class SimUser:
    """A configured user; `email` is what Rublon identifies them by (lower-case)."""

    username: str
    email: str
    status: str = pm.USER_STATUS_ACTIVE
    methods: tuple[str, ...] = DEFAULT_USER_METHODS

    def to_json(self) -> dict[str, Any]:
        return {"username": self.username, "email": self.email, "status": self.status, "methods": list(self.methods)}


def make_user(
    username: str, email: str, status: str = pm.USER_STATUS_ACTIVE, methods: Iterable[str] | None = None
) -> SimUser:
    """A checked user with its email lower-cased; `methods` default to push and totp.

    Raises:
        ValueError: an empty username or email, a status other than active, bypass or
            denied, or methods that are empty or not among `ALL_METHODS`.
    """
    email = email.strip().lower()
    chosen = tuple(methods) if methods is not None else DEFAULT_USER_METHODS
    if not username or not email:
        raise ValueError("a user needs a username and an email")
    if status not in USER_STATUSES:
        raise ValueError(f"user status must be one of {sorted(USER_STATUSES)}, got {status!r}")
    if not chosen or not set(chosen) <= pm.ALL_METHODS:
        raise ValueError(f"user methods must be a non-empty subset of {sorted(pm.ALL_METHODS)}, got {list(chosen)}")
    return SimUser(username=username, email=email, status=status, methods=chosen)


@dataclass
class SimTransaction:
    """One transaction, prompt or promptless. Mutated only under the state's lock."""

    tid: str
    system_token: str
    mode: str  # "prompt" or "promptless"
    username: str
    email: str | None
    params: dict[str, str]
    methods: tuple[str, ...]
    created: float
    expires_at: float
    callback_url: str | None = None
    state: TransactionState = TransactionState.PENDING
    decided_at: float | None = None
    #: (due time, decision kind) of a delayed decision, if one is scheduled.
    scheduled: tuple[float, str] | None = None
    pushes: int = 0
    #: The single-use token issued when the transaction was confirmed.
    access_token: str | None = field(default=None, repr=False)
    #: Wall-clock time (``time.time()``) the first ``confirmed`` frame went out on a WebSocket.
    confirmed_sent_at: float | None = None
    #: How many connections were subscribed when the person decided (0: the answer only
    #: went out later, when a listener subscribed).
    subscribers_at_decision: int = 0

    def to_json(self, now: float) -> dict[str, Any]:
        return {
            "tid": self.tid,
            "mode": self.mode,
            "state": str(self.state),
            "username": self.username,
            "email": self.email,
            "params": dict(self.params),
            "methods": list(self.methods),
            "callbackUrl": self.callback_url,
            "expiresIn": max(0.0, round(self.expires_at - now, 3)) if self.state is TransactionState.PENDING else 0.0,
            "decidedAgo": None if self.decided_at is None else round(now - self.decided_at, 3),
            "pushes": self.pushes,
            "confirmedSentAt": self.confirmed_sent_at,
            "subscribersAtDecision": self.subscribers_at_decision,
        }


@dataclass
class _IssuedToken:
    tid: str
    system_token: str
    issued_at: float
    used: bool = False


@dataclass
class _Stats:
    calls: Counter[str] = field(default_factory=Counter)
    pushes: Counter[str] = field(default_factory=Counter)
    tokens_issued: int = 0
    tokens_exchanged: int = 0
    forged_messages: int = 0


class SimulatorState:
    """The simulator's memory; every public method is safe to call from any thread.

    Args:
        apps: System Token -> Secret Key of each configured application.
        users: the configured users (any email not among them is unknown).
        decision: the default decision (a `Decision` or its text form).
        expires_in: seconds before an unanswered transaction expires.
        token_ttl: seconds an access token stays exchangeable.
        accepted_code: the code `submit_code` accepts.
        clock: the time source (seconds); tests may pass a fake one.

    Raises:
        ValueError: a bad decision, a non-positive duration, or a user with an unknown
            status or method.
    """

    def __init__(
        self,
        *,
        apps: Mapping[str, str],
        users: Iterable[SimUser] = (),
        decision: Decision | str = "approve",
        expires_in: float = DEFAULT_EXPIRES_IN,
        token_ttl: float = DEFAULT_TOKEN_TTL,
        accepted_code: str = DEFAULT_ACCEPTED_CODE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not expires_in > 0 or not token_ttl > 0:
            raise ValueError("expires_in and token_ttl must be positive numbers of seconds")
        self._lock = threading.RLock()
        self._clock = clock
        self._apps = dict(apps)
        self._users: dict[str, SimUser] = {}
        for user in users:
            self._put_user(make_user(user.username, user.email, user.status, user.methods))
        self._default_decision = decision if isinstance(decision, Decision) else Decision.parse(decision)
        self._overrides: dict[str, Decision] = {}
        self.expires_in = float(expires_in)
        self.token_ttl = float(token_ttl)
        self.accepted_code = accepted_code
        self._transactions: dict[str, SimTransaction] = {}
        # (due time, tid) of every expiry and delayed decision: the ticker pops only what is due
        # instead of scanning every transaction ever opened.
        self._due: list[tuple[float, str]] = []
        self._tokens: dict[str, _IssuedToken] = {}
        self._subscribers: dict[str, dict[int, Sink]] = {}
        self._stats = _Stats()
        self._fail_mode: str | None = None

    # ------------------------------------------------------------------ configuration

    def secret_for(self, system_token: str) -> str | None:
        """The Secret Key of the app with this System Token, or None if there is none."""
        with self._lock:
            return self._apps.get(system_token)

    def add_app(self, system_token: str, secret_key: str) -> None:
        """Configure (or re-key) an application."""
        with self._lock:
            self._apps[system_token] = secret_key

    def set_user(
        self, username: str, *, email: str, status: str = pm.USER_STATUS_ACTIVE, methods: Iterable[str] | None = None
    ) -> SimUser:
        """Add or replace a user (matched by email, case-insensitively; a username given
        again under a new email moves there).

        Raises:
            ValueError: see `make_user`.
        """
        user = make_user(username, email, status, methods)
        with self._lock:
            self._put_user(user)
        return user

    def _put_user(self, user: SimUser) -> None:
        for email, existing in list(self._users.items()):
            if existing.username == user.username:
                del self._users[email]
        self._users[user.email] = user

    def users(self) -> list[SimUser]:
        with self._lock:
            return list(self._users.values())

    def set_decision(self, decision: Decision | str, tid: str | None = None) -> Decision:
        """Set the default decision, or the decision for one transaction.

        Raises:
            ValueError: a malformed decision.
            UnknownTransaction: `tid` was never issued.
        """
        parsed = decision if isinstance(decision, Decision) else Decision.parse(decision)
        with self._lock:
            if tid is None:
                self._default_decision = parsed
            else:
                self._get(tid)
                self._overrides[tid] = parsed
        return parsed

    @property
    def default_decision(self) -> Decision:
        with self._lock:
            return self._default_decision

    @property
    def fail_mode(self) -> str | None:
        """None (normal), ``unavailable`` (API answers 503) or ``bad_signature``."""
        with self._lock:
            return self._fail_mode

    def set_fail_mode(self, mode: str | None) -> None:
        """Raises ValueError for a mode other than None, unavailable, bad_signature."""
        if mode is not None and mode not in FAIL_MODES:
            raise ValueError(f"fail mode must be null or one of {sorted(FAIL_MODES)}, got {mode!r}")
        with self._lock:
            self._fail_mode = mode

    # ------------------------------------------------------------------ statistics

    def record_call(self, endpoint: str) -> None:
        with self._lock:
            self._stats.calls[endpoint] += 1

    def stats(self) -> dict[str, Any]:
        """Calls per endpoint, pushes per tid and token counts, as JSON-ready data."""
        with self._lock:
            return {
                "calls": dict(self._stats.calls),
                "pushes": dict(self._stats.pushes),
                "tokensIssued": self._stats.tokens_issued,
                "tokensExchanged": self._stats.tokens_exchanged,
                "forgedMessages": self._stats.forged_messages,
                "subscribers": {tid: len(subs) for tid, subs in self._subscribers.items() if subs},
            }

    # ------------------------------------------------------------------ documented calls

    def app_info(self, system_token: str) -> dict[str, Any]:
        """Result of app/init for an authenticated app."""
        return {"name": "mfa-gate Rublon simulator", "systemToken": system_token}

    def init_prompt(
        self, system_token: str, *, username: str, callback_url: str, email: str | None, params: dict[str, str]
    ) -> SimTransaction:
        """Open a prompt-mode transaction. A denied user gets one that is already
        `denied` (Rublon then serves its deny page).

        Raises:
            ApiRefusal: UserNotFoundException, UserBypassedException.
        """
        with self._lock:
            self._tick()
            user = self._find_user(username, email)
            if user.status == pm.USER_STATUS_BYPASS:
                raise ApiRefusal("UserBypassedException", "the user is set to bypass two-factor authentication")
            transaction = self._open(system_token, "prompt", username, user, params, callback_url)
            if user.status == pm.USER_STATUS_DENIED:
                self._finish(transaction, TransactionState.DENIED)
            return replace(transaction)

    def exchange_token(self, system_token: str, access_token: str) -> dict[str, Any]:
        """Result of transaction/credentials: consumes the token (single use).

        Raises:
            ApiRefusal: UnknownAccessTokenException (unknown, used, or another app's),
                AccessTokenExpiredException (older than `token_ttl`).
        """
        with self._lock:
            self._tick()
            issued = self._tokens.get(access_token)
            if issued is None or issued.used or issued.system_token != system_token:
                raise ApiRefusal("UnknownAccessTokenException", "the access token is unknown or was already used")
            if self._clock() - issued.issued_at > self.token_ttl:
                raise ApiRefusal("AccessTokenExpiredException", "the access token has expired")
            issued.used = True
            self._stats.tokens_exchanged += 1
            transaction = self._transactions[issued.tid]
            return {
                "username": transaction.username,
                "email": transaction.email,
                "systemToken": transaction.system_token,
                "params": dict(transaction.params),
                pm.CREDENTIALS_TID: transaction.tid,
            }

    # ------------------------------------------------------------------ promptless calls

    def verify_user(self, system_token: str, email: str) -> dict[str, Any]:
        """Result of user/verify.

        Raises:
            ApiRefusal: UserNotFoundException for an email no user has.
        """
        with self._lock:
            user = self._users.get(email.strip().lower())
            if user is None:
                raise ApiRefusal("UserNotFoundException", "no user with this email")
            return {pm.RESULT_EXISTS: True, pm.RESULT_STATUS: user.status, pm.RESULT_METHODS: list(user.methods)}

    def init_promptless(
        self, system_token: str, *, username: str, email: str, params: dict[str, str]
    ) -> SimTransaction:
        """Open a promptless transaction (nothing is sent yet).

        Raises:
            ApiRefusal: UserNotFoundException, UserBypassedException, UserDeniedException.
        """
        with self._lock:
            self._tick()
            user = self._find_user(username, email)
            if user.status == pm.USER_STATUS_BYPASS:
                raise ApiRefusal("UserBypassedException", "the user is set to bypass two-factor authentication")
            if user.status == pm.USER_STATUS_DENIED:
                raise ApiRefusal("UserDeniedException", "an administrator denied this user")
            return replace(self._open(system_token, "promptless", username, user, params, None))

    def send_method(self, system_token: str, tid: str, method: str) -> dict[str, Any]:
        """Result of transaction/method; applies the decision policy for device methods.

        Raises:
            ApiRefusal: TransactionNotFoundException, TransactionLockedException (final),
                ForbiddenMethodException (method not allowed for this transaction).
        """
        with self._lock:
            self._tick()
            transaction = self._pending_of_app(system_token, tid)
            if method not in transaction.methods:
                raise ApiRefusal("ForbiddenMethodException", f"method {method!r} is not allowed for this transaction")
            # Nothing is delivered for an authenticator or YubiKey: the person has the code already.
            sent = method not in (pm.METHOD_TOTP, pm.METHOD_YUBIKEY)
            if sent:
                transaction.pushes += 1
                self._stats.pushes[tid] += 1
            if method not in pm.CODE_METHODS:
                self._apply_decision(transaction, self._overrides.get(tid, self._default_decision))
            return {pm.RESULT_TID: tid, pm.RESULT_METHOD: method, pm.RESULT_SENT: sent}

    def submit_code(self, system_token: str, tid: str, method: str, code: str) -> dict[str, Any]:
        """Result of transaction/code: the accepted code confirms the transaction.

        Raises:
            ApiRefusal: TransactionNotFoundException, TransactionLockedException,
                ForbiddenMethodException (not a code method of this transaction).
        """
        with self._lock:
            self._tick()
            transaction = self._pending_of_app(system_token, tid)
            if method not in pm.CODE_METHODS or method not in transaction.methods:
                raise ApiRefusal("ForbiddenMethodException", f"method {method!r} takes no code for this transaction")
            accepted = secrets.compare_digest(code.encode(), self.accepted_code.encode())
            if accepted:
                self._finish(transaction, TransactionState.CONFIRMED)
            return {pm.RESULT_TID: tid, pm.RESULT_ACCEPTED: accepted}

    def cancel(self, system_token: str, tid: str) -> dict[str, Any]:
        """Result of transaction/cancel; subscribers of a pending one get `expired`.

        Raises:
            ApiRefusal: TransactionNotFoundException.
        """
        with self._lock:
            self._tick()
            transaction = self._of_app(system_token, tid)
            cancelled = transaction.state is TransactionState.PENDING
            if cancelled:
                self._finish(transaction, TransactionState.CANCELLED)
            return {pm.RESULT_TID: tid, pm.RESULT_CANCELLED: cancelled}

    # ------------------------------------------------------------------ confirmation channel

    def subscribe(self, system_token: str, tid: str, subscriber: int, sink: Sink) -> None:
        """Subscribe `sink` to `tid`: it gets `pending` and later one final message, or
        the final message at once, or `error` for a tid unknown to this app. Checking
        and registering happen under one lock, so no transition can slip between them.
        Subscribing again on the same subscriber id is harmless (one registration).
        """
        with self._lock:
            self._tick()
            transaction = self._transactions.get(tid)
            if transaction is None or transaction.system_token != system_token:
                sink({pm.MSG_TYPE: pm.TYPE_ERROR, pm.MSG_TID: tid, pm.MSG_ERROR: "unknown transaction"})
                return
            if transaction.state is not TransactionState.PENDING:
                sink(self._final_message(transaction))
                return
            self._subscribers.setdefault(tid, {})[subscriber] = sink
            sink({pm.MSG_TYPE: pm.TYPE_PENDING, pm.MSG_TID: tid})

    def unsubscribe(self, subscriber: int) -> None:
        """Forget every subscription of `subscriber` (its connection closed)."""
        with self._lock:
            for subs in self._subscribers.values():
                subs.pop(subscriber, None)

    # ------------------------------------------------------------------ control

    def transactions(self) -> list[dict[str, Any]]:
        with self._lock:
            self._tick()
            now = self._clock()
            return [t.to_json(now) for t in self._transactions.values()]

    def transaction(self, tid: str) -> SimTransaction:
        """A copy of transaction `tid`. Raises UnknownTransaction."""
        with self._lock:
            self._tick()
            return replace(self._get(tid))

    def transaction_json(self, tid: str) -> dict[str, Any]:
        with self._lock:
            self._tick()
            return self._get(tid).to_json(self._clock())

    def note_sent(self, message: dict[str, Any], at: float) -> None:
        """Record that ``message`` is being written to a subscriber's WebSocket at wall-clock ``at``
        (the first genuine ``confirmed`` frame of a transaction is kept: the benchmark's release
        latency starts there; a forged one, whose token the simulator never issued, is not)."""
        if message.get(pm.MSG_TYPE) != pm.TYPE_CONFIRMED:
            return
        with self._lock:
            transaction = self._transactions.get(str(message.get(pm.MSG_TID)))
            if (
                transaction is not None
                and transaction.confirmed_sent_at is None
                and transaction.access_token is not None
                and message.get(pm.MSG_ACCESS_TOKEN) == transaction.access_token
            ):
                transaction.confirmed_sent_at = at

    def approve(self, tid: str) -> str:
        """Confirm transaction `tid` (the person approved) and return the fresh access
        token, which is also pushed to its subscribers.

        Raises:
            UnknownTransaction, TransactionNotPending.
        """
        with self._lock:
            self._tick()
            transaction = self._decidable(tid)
            token = self._finish(transaction, TransactionState.CONFIRMED)
            assert token is not None
            return token

    def deny(self, tid: str) -> None:
        """The person said no. Raises UnknownTransaction, TransactionNotPending."""
        with self._lock:
            self._tick()
            self._finish(self._decidable(tid), TransactionState.DENIED)

    def expire(self, tid: str) -> None:
        """Expire transaction `tid` now. Raises UnknownTransaction, TransactionNotPending."""
        with self._lock:
            self._tick()
            self._finish(self._decidable(tid), TransactionState.EXPIRED)

    def forge(self, tid: str, access_token: str) -> int:
        """Push a `confirmed` message carrying `access_token`, which the simulator never
        issued, to the subscribers of `tid`, without changing the transaction: a test of
        the rule that a WebSocket message alone releases nothing.

        Returns the number of subscribers it reached. Raises UnknownTransaction.
        """
        with self._lock:
            self._get(tid)
            message = {pm.MSG_TYPE: pm.TYPE_CONFIRMED, pm.MSG_TID: tid, pm.MSG_ACCESS_TOKEN: access_token}
            subs = list(self._subscribers.get(tid, {}).items())
            self._deliver(tid, subs, message)
            self._stats.forged_messages += 1
            return len(subs)

    def tick(self) -> None:
        """Apply what is due: delayed decisions and expiries. The server calls this a
        few times a second so subscribers hear about them on time; every other public
        method calls it first, so answers are right even without the ticker.
        """
        with self._lock:
            self._tick()

    # ------------------------------------------------------------------ internals (lock held)

    def _tick(self) -> None:
        now = self._clock()
        while self._due and self._due[0][0] <= now:
            _, tid = heapq.heappop(self._due)
            transaction = self._transactions.get(tid)
            if transaction is None or transaction.state is not TransactionState.PENDING:
                continue
            if transaction.scheduled is not None and transaction.scheduled[0] <= now:
                self._decide_now(transaction, transaction.scheduled[1])
            elif transaction.expires_at <= now:
                self._finish(transaction, TransactionState.EXPIRED)

    def _find_user(self, username: str, email: str | None) -> SimUser:
        if email:
            user = self._users.get(email.strip().lower())
        else:
            user = next((u for u in self._users.values() if u.username == username), None)
        if user is None:
            raise ApiRefusal("UserNotFoundException", "no user with this email" if email else "no user with this name")
        return user

    def _open(
        self,
        system_token: str,
        mode: str,
        username: str,
        user: SimUser,
        params: dict[str, str],
        callback_url: str | None,
    ) -> SimTransaction:
        now = self._clock()
        tid = secrets.token_hex(16)
        transaction = SimTransaction(
            tid=tid,
            system_token=system_token,
            mode=mode,
            username=username,
            email=user.email,
            params=dict(params),
            methods=user.methods,
            created=now,
            expires_at=now + self.expires_in,
            callback_url=callback_url,
        )
        self._transactions[tid] = transaction
        heapq.heappush(self._due, (transaction.expires_at, tid))
        return transaction

    def _get(self, tid: str) -> SimTransaction:
        transaction = self._transactions.get(tid)
        if transaction is None:
            raise UnknownTransaction(tid)
        return transaction

    def _decidable(self, tid: str) -> SimTransaction:
        transaction = self._get(tid)
        if transaction.state is not TransactionState.PENDING:
            raise TransactionNotPending(tid, transaction.state)
        return transaction

    def _of_app(self, system_token: str, tid: str) -> SimTransaction:
        transaction = self._transactions.get(tid)
        # Another app's tid is answered exactly like an unknown one: no cross-app probing.
        if transaction is None or transaction.system_token != system_token:
            raise ApiRefusal("TransactionNotFoundException", "no such transaction", field=pm.FIELD_TID)
        return transaction

    def _pending_of_app(self, system_token: str, tid: str) -> SimTransaction:
        transaction = self._of_app(system_token, tid)
        if transaction.state is not TransactionState.PENDING:
            raise ApiRefusal("TransactionLockedException", f"the transaction is already {transaction.state}")
        return transaction

    def _apply_decision(self, transaction: SimTransaction, decision: Decision) -> None:
        if decision.kind == "manual":
            return
        if decision.delay > 0:
            transaction.scheduled = (self._clock() + decision.delay, decision.kind)
            heapq.heappush(self._due, (transaction.scheduled[0], transaction.tid))
            return
        self._decide_now(transaction, decision.kind)

    def _decide_now(self, transaction: SimTransaction, kind: str) -> None:
        states = {"approve": TransactionState.CONFIRMED, "deny": TransactionState.DENIED}
        self._finish(transaction, states.get(kind, TransactionState.EXPIRED))

    def _finish(self, transaction: SimTransaction, state: TransactionState) -> str | None:
        """Move a pending transaction to a final state and tell its subscribers.

        Returns the access token issued for a confirmation, else None.
        """
        assert transaction.state is TransactionState.PENDING, "final states are final"
        transaction.state = state
        transaction.decided_at = self._clock()
        transaction.scheduled = None
        if state is TransactionState.CONFIRMED:
            # One approval, one token: a late subscriber (a restarted listener) is sent
            # this same token, so an approval can never be exchanged twice.
            transaction.access_token = self._issue_token(transaction)
        message = self._final_message(transaction)
        subs = list(self._subscribers.pop(transaction.tid, {}).items())
        transaction.subscribers_at_decision = len(subs)
        self._deliver(transaction.tid, subs, message)
        return transaction.access_token

    def _final_message(self, transaction: SimTransaction) -> dict[str, Any]:
        message: dict[str, Any] = {
            pm.MSG_TYPE: _FINAL_MESSAGE_TYPES[transaction.state],
            pm.MSG_TID: transaction.tid,
        }
        if transaction.access_token is not None:
            message[pm.MSG_ACCESS_TOKEN] = transaction.access_token
        return message

    def _issue_token(self, transaction: SimTransaction) -> str:
        token = "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(TOKEN_LENGTH))
        self._tokens[token] = _IssuedToken(
            tid=transaction.tid, system_token=transaction.system_token, issued_at=self._clock()
        )
        self._stats.tokens_issued += 1
        return token

    def _deliver(self, tid: str, subs: list[tuple[int, Sink]], message: dict[str, Any]) -> None:
        for subscriber, sink in subs:
            try:
                sink(dict(message))
            except Exception:  # a sink of a closed event loop must not break the others
                self.unsubscribe(subscriber)
