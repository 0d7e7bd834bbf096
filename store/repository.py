"""Every database operation on actions, in one place; each move a compare-and-set.

A move is ``UPDATE actions SET status = new ... WHERE id = ? AND status IN (expected)``:
exactly one of two racing workers or listeners sees one changed row and wins; the other
learns it lost and does nothing. Each move writes its audit event in the same
transaction, so the chain and the state never disagree.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple, cast

import sqlalchemy as sa
from sqlalchemy import Connection, Table, func, insert, or_, update
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlmodel import Session, SQLModel, col, select

from store import audit, schema
from store.audit import ChainReport
from store.engine import READ_ONLY, is_sqlite, make_engine
from store.errors import ActionNotFound, IdempotencyConflict, TransitionNotAllowed
from store.models import Action, ActionStatus, AgentState, AuditEvent, AuditHead, Release, utcnow
from store.transitions import INITIAL, PENDING, allowed

S = ActionStatus
ACTIONS = cast(Table, Action.__table__)  # type: ignore[attr-defined]
RELEASES = cast(Table, Release.__table__)  # type: ignore[attr-defined]
AGENTS = cast(Table, AgentState.__table__)  # type: ignore[attr-defined]
_GET_ACTION = sa.select(ACTIONS).where(ACTIONS.c.id == sa.bindparam("action_id"))
_FIND_BY_TID = sa.select(ACTIONS).where(ACTIONS.c.tid == sa.bindparam("tid")).limit(1)
_GET_RELEASE = sa.select(RELEASES).where(RELEASES.c.action_id == sa.bindparam("action_id"))
_RESET_REFUSALS = (
    update(AGENTS)
    .where(AGENTS.c.agent == sa.bindparam("approved_agent"), AGENTS.c.refusals_in_row > 0)
    .values(refusals_in_row=0, updated_at=sa.bindparam("now"))
)


#: A value for ``move(**fields)``: the column's current value plus one (``attempts``).
INCREMENT: Any = object()


@functools.lru_cache(maxsize=128)
def _move_statement(expected: int, held: bool, assigned: tuple[str, ...], incremented: tuple[str, ...]) -> sa.Update:
    """The compare-and-set UPDATE for one shape of move, built once and then only bound.

    A move's statement differs only by how many statuses it expects, whether a lease
    owner must hold it, which columns it sets (``set_<column>`` parameters) and which it
    increments; building and compiling it anew on every move cost more than running it.
    """
    statuses = [sa.bindparam(f"move_from_{i}", type_=ACTIONS.c.status.type) for i in range(expected)]
    statement = update(ACTIONS).where(ACTIONS.c.id == sa.bindparam("move_id"), ACTIONS.c.status.in_(statuses))
    if held:
        statement = statement.where(ACTIONS.c.lease_owner == sa.bindparam("move_held_by"))
    values: dict[str, Any] = {name: ACTIONS.c[name] + 1 for name in incremented}
    for key in assigned:
        column = ACTIONS.c[key.removeprefix("set_")]
        values[column.name] = sa.bindparam(key, type_=column.type)
    return statement.values(values).returning(*ACTIONS.c)


_LEASE = (
    update(ACTIONS)
    .where(ACTIONS.c.id == sa.bindparam("lease_id"), ACTIONS.c.status == sa.bindparam("lease_status"))
    .where(
        or_(
            ACTIONS.c.lease_until.is_(None),
            ACTIONS.c.lease_until < sa.bindparam("lease_now", type_=ACTIONS.c.lease_until.type),
            ACTIONS.c.lease_owner == sa.bindparam("lease_owner_now"),
        )
    )
    .values(lease_owner=sa.bindparam("new_owner"), lease_until=sa.bindparam("new_until"))
    .returning(*ACTIONS.c)
)
_LEASE_FOR_TID = _LEASE.where(ACTIONS.c.tid == sa.bindparam("lease_tid"))


def _request_load_query() -> sa.Select[Any]:
    agent: sa.BindParameter[str] = sa.bindparam("load_agent", type_=sa.String())
    user: sa.BindParameter[str] = sa.bindparam("load_user", type_=sa.String())
    since = sa.bindparam("load_since", type_=ACTIONS.c.created_at.type)
    events = cast(Table, AuditEvent.__table__)  # type: ignore[attr-defined]

    def count(table: Table, *where: Any) -> Any:
        return sa.select(func.count()).select_from(table).where(*where).scalar_subquery()

    pending = ACTIONS.c.status.in_(sorted(PENDING))
    suspended = (AGENTS.c.agent == agent, AGENTS.c.suspended.is_(True))
    return sa.select(
        count(AGENTS, *suspended),
        sa.select(AGENTS.c.suspended_reason).where(*suspended).scalar_subquery(),
        count(ACTIONS, ACTIONS.c.user == user, pending),
        count(ACTIONS, ACTIONS.c.agent == agent, pending),
        count(ACTIONS, ACTIONS.c.agent == agent, ACTIONS.c.created_at >= since),
        count(
            events,
            events.c.event == sa.bindparam("load_event"),
            events.c.at >= since,
            events.c.actor == sa.bindparam("load_actor"),
        ),
    )


_REQUEST_LOAD = _request_load_query()


def _action(row: sa.Row[Any]) -> Action:
    """An Action from a row of the actions table (read-only: it belongs to no session)."""
    return Action(**row._mapping)


def _release(row: sa.Row[Any]) -> Release:
    return Release(**row._mapping)


def _columns(record: SQLModel, table: Table) -> dict[str, Any]:
    """A model's column values for an INSERT (an unset autoincrement key left out)."""
    values = {column.name: getattr(record, column.name) for column in table.columns}
    return {name: value for name, value in values.items() if not (name == "id" and value is None)}


class Claim(NamedTuple):
    """An action claimed for execution, and its release record (None: released by nobody)."""

    action: Action
    release: Release | None


@dataclass(frozen=True)
class RequestLoad:
    """An agent's and a user's load of approval requests, as the push-fatigue limits see it."""

    suspended: bool
    suspended_reason: str | None
    pending_for_user: int
    pending_for_agent: int
    #: Actions the agent created since the window's start.
    actions_by_agent: int
    #: Raw Rublon calls the agent made over MCP since the window's start.
    raw_calls_by_agent: int

    @property
    def requests_by_agent(self) -> int:
        """What the hourly request limit counts: submissions and raw Rublon calls alike."""
        return self.actions_by_agent + self.raw_calls_by_agent


class Store:
    """The store of one deployment: an engine and the audit key.

    Args:
        url: a SQLAlchemy URL (``sqlite:///file.db``, ``postgresql://...``).
        audit_key: the server-side HMAC key of the audit chain.
    """

    def __init__(self, url: str, *, audit_key: bytes) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._reader = self.engine.execution_options(**{READ_ONLY: True})
        # PostgreSQL runs a lone statement as its own transaction: no BEGIN and COMMIT round trips.
        self._autocommit = (
            None if is_sqlite(self.engine) else self.engine.execution_options(isolation_level="AUTOCOMMIT")
        )
        self._audit_key = audit_key

    # -- plumbing -------------------------------------------------------------------------
    def create_schema(self) -> None:
        """Apply the Alembic migrations up to head (see store.schema).

        Several processes may start at once: a lost race on SQLite is retried.
        """
        for attempt in range(5):
            try:
                schema.upgrade(self.engine)
                return
            except (OperationalError, ProgrammingError, IntegrityError):
                if attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session whose transaction commits on success and rolls back on any error."""
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            yield session

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A read-only session: on SQLite it takes no write lock (deferred BEGIN), so reads never queue
        behind writers, and a write inside it fails loudly."""
        with Session(self._reader, expire_on_commit=False) as session, session.begin():
            yield session

    @contextmanager
    def _writing(self) -> Iterator[Connection]:
        """A plain connection in a write transaction (``BEGIN IMMEDIATE`` on SQLite).

        The hot path (moves, leases, releases, claims, audit) runs on Core statements here,
        not through the ORM's session: on SQLite the write lock is held for the whole
        transaction, so every bit of Python work inside it delays every other writer.
        """
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def _writing_once(self) -> Iterator[Connection]:
        """A plain connection for ONE write statement (a lease, a bookkeeping update).

        On PostgreSQL the statement is its own transaction (autocommit): one round trip
        instead of three. On SQLite it is a ``_writing`` transaction, so the write lock is
        waited for the same way as everywhere else.
        """
        if self._autocommit is None:
            with self._writing() as conn:
                yield conn
            return
        with self._autocommit.connect() as conn:
            yield conn

    @contextmanager
    def _fetching(self) -> Iterator[Connection]:
        """A plain connection for ONE read statement (deferred ``BEGIN`` on SQLite, autocommit on
        PostgreSQL, where a lone statement sees one snapshot anyway)."""
        if self._autocommit is None:
            with self._reader.begin() as conn:
                yield conn
            return
        with self._autocommit.connect() as conn:
            yield conn

    def dispose(self) -> None:
        """Close pooled connections (after a fork, or at exit)."""
        self.engine.dispose()

    # -- reading --------------------------------------------------------------------------
    def get(self, action_id: str) -> Action | None:
        """The action with this id, or None."""
        with self._fetching() as conn:
            row = conn.execute(_GET_ACTION, {"action_id": action_id}).first()
        return _action(row) if row is not None else None

    def require(self, action_id: str) -> Action:
        """The action with this id; raises ActionNotFound."""
        found = self.get(action_id)
        if found is None:
            raise ActionNotFound(f"no action has id {action_id!r}; list them with 'mfa-gate list'")
        return found

    def release_of(self, action_id: str) -> Release | None:
        """The release record of an action, or None when it was never released."""
        with self._fetching() as conn:
            row = conn.execute(_GET_RELEASE, {"action_id": action_id}).first()
        return _release(row) if row is not None else None

    def list_actions(
        self, *, statuses: Iterable[S] | None = None, agent: str | None = None, limit: int = 50
    ) -> list[Action]:
        """The newest actions first, optionally filtered by status and agent."""
        query = select(Action).order_by(col(Action.created_at).desc()).limit(limit)
        if statuses is not None:
            query = query.where(col(Action.status).in_(list(statuses)))
        if agent is not None:
            query = query.where(Action.agent == agent)
        with self.reading() as session:
            return list(session.exec(query))

    def count_by_status(self) -> dict[str, int]:
        """How many actions are in each status."""
        with self.reading() as session:
            rows = session.exec(select(Action.status, func.count()).group_by(Action.status)).all()
        return {str(status): int(count) for status, count in rows}

    def request_load(self, *, agent: str, user: str, since: datetime, raw_call_event: str) -> RequestLoad:
        """What the push-fatigue limits weigh before a new approval request or raw Rublon call, in one query."""
        params = {"load_agent": agent, "load_user": user, "load_since": since, "load_event": raw_call_event}
        with self._fetching() as conn:
            row = conn.execute(_REQUEST_LOAD, params | {"load_actor": f"agent:{agent}"}).one()
        is_suspended, reason, for_user, for_agent, recent, raw_calls = row
        return RequestLoad(
            suspended=bool(is_suspended),
            suspended_reason=reason,
            pending_for_user=int(for_user),
            pending_for_agent=int(for_agent),
            actions_by_agent=int(recent),
            raw_calls_by_agent=int(raw_calls),
        )

    def released_since(self, since: datetime, *, agent: str | None = None, user: str | None = None) -> list[Action]:
        """Actions released at or after ``since`` (by agent or user): what cumulative limits add up."""
        query = select(Action).where(col(Action.released_at).is_not(None), col(Action.released_at) >= since)
        if agent is not None:
            query = query.where(Action.agent == agent)
        if user is not None:
            query = query.where(Action.user == user)
        with self.reading() as session:
            return list(session.exec(query))

    # -- creating -------------------------------------------------------------------------
    def create(
        self, action: Action, *, release: Release | None, actor: str, data: dict[str, Any]
    ) -> tuple[Action, bool]:
        """Record a new action (and its release, for a policy allow) in one transaction.

        Returns ``(action, True)`` when recorded, or ``(existing, False)`` when the agent
        already submitted the same payload under the same idempotency key.

        Raises:
            IdempotencyConflict: the key was used before for a different payload.
            TransitionNotAllowed: ``action.status`` is not a status an action may start in.
        """
        if action.status not in INITIAL:
            raise TransitionNotAllowed(f"an action cannot start in status {action.status!s}")
        if action.idempotency_key is not None:
            existing = self._by_idempotency_key(action.agent, action.idempotency_key)
            if existing is not None:
                return self._same_or_conflict(existing, action), False
        try:
            with self._writing() as conn:
                conn.execute(insert(ACTIONS), _columns(action, ACTIONS))
                if release is not None:
                    conn.execute(insert(RELEASES), _columns(release, RELEASES))
                created = {"status": str(action.status), "reason": action.reason, **data}
                events = [audit.Entry("action.created", actor, action.id, created)]
                if release is not None:
                    released = {"kind": release.kind, "payload_hash": release.payload_hash}
                    events.append(audit.Entry("action.released", actor, action.id, released))
                audit.append_all(conn, self._audit_key, events)
        except IntegrityError:
            # Lost a race on the same idempotency key: the other insert is the action.
            if action.idempotency_key is None:
                raise
            existing = self._by_idempotency_key(action.agent, action.idempotency_key)
            if existing is None:
                raise
            return self._same_or_conflict(existing, action), False
        return action, True

    def _by_idempotency_key(self, agent: str, key: str) -> Action | None:
        with self.reading() as session:
            return session.exec(select(Action).where(Action.agent == agent, Action.idempotency_key == key)).first()

    @staticmethod
    def _same_or_conflict(existing: Action, new: Action) -> Action:
        if existing.payload_hash != new.payload_hash:
            raise IdempotencyConflict(
                f"idempotency_key {new.idempotency_key!r} was already used by this agent for a different payload "
                f"(action {existing.id}); use a new key for a new action"
            )
        return existing

    # -- moving ---------------------------------------------------------------------------
    def move(
        self,
        action_id: str,
        *,
        expected: S | Sequence[S],
        new: S,
        actor: str,
        reason: str | None = None,
        data: dict[str, Any] | None = None,
        held_by: str | None = None,
        **fields: Any,
    ) -> Action | None:
        """Compare-and-set ``expected -> new``; the updated action, or None if another won.

        Args:
            held_by: when given, the move also requires that this owner holds the lease.
            fields: other columns to set in the same UPDATE (``tid``, ``result``, ...).

        Raises:
            TransitionNotAllowed: the state table forbids one of the moves.
        """
        expected_set = [expected] if isinstance(expected, ActionStatus) else list(expected)
        for current in expected_set:
            if not allowed(current, new):
                raise TransitionNotAllowed(f"an action may not move from {current!s} to {new!s}")
        with self._writing() as conn:
            row = self._move(conn, action_id, expected_set, new, actor, reason, data, held_by, fields)
        return _action(row) if row is not None else None

    def _move(
        self,
        conn: Connection,
        action_id: str,
        expected: list[S],
        new: S,
        actor: str,
        reason: str | None,
        data: dict[str, Any] | None,
        held_by: str | None,
        fields: dict[str, Any],
    ) -> sa.Row[Any] | None:
        """The compare-and-set and its audit event; returns the moved row (the caller builds the
        Action after the commit: on SQLite every step inside holds the write lock)."""
        values: dict[str, Any] = {"status": new, "updated_at": utcnow(), **fields}
        if reason is not None:
            values["reason"] = reason
        assigned = {f"set_{name}": value for name, value in values.items() if value is not INCREMENT}
        incremented = tuple(sorted(name for name, value in values.items() if value is INCREMENT))
        statement = _move_statement(len(expected), held_by is not None, tuple(sorted(assigned)), incremented)
        params = {"move_id": action_id, "move_held_by": held_by, **assigned}
        params |= {f"move_from_{i}": status for i, status in enumerate(expected)}
        # UPDATE ... RETURNING: the compare-and-set and the read of the moved row in one statement.
        row = conn.execute(statement, params).first()
        if row is None:
            return None
        event_data = {"to": str(new), "reason": row.reason, **(data or {})}
        audit.append(conn, self._audit_key, event=f"action.{new}", actor=actor, action_id=action_id, data=event_data)
        return row

    def release(
        self,
        action_id: str,
        *,
        expected: S | Sequence[S],
        release: Release,
        actor: str,
        reason: str,
        held_by: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> Action | None:
        """Release an action: its release record and ``-> queued`` in ONE transaction.

        The execute message is the caller's to send after this returns (the outbox:
        maintenance re-sends ``queued`` actions whose message was lost).
        Returns the queued action, or None when another process already moved it.
        """
        expected_set = [expected] if isinstance(expected, ActionStatus) else list(expected)
        for current in expected_set:
            if not allowed(current, S.QUEUED):
                raise TransitionNotAllowed(f"an action may not be released from {current!s}")
        now = utcnow()
        with self._writing() as conn:
            moved = self._move(
                conn,
                action_id,
                expected_set,
                S.QUEUED,
                actor,
                reason,
                {"release": release.kind, "approver": release.approver, "method": release.method, **(data or {})},
                held_by,
                {
                    "dispatched_at": now,
                    "released_at": now,
                    "lease_owner": None,
                    "lease_until": None,
                    "approved_at": now if release.kind == "approval" else None,
                },
            )
            if moved is None:
                return None
            release.action_id = action_id
            conn.execute(insert(RELEASES), _columns(release, RELEASES))
            if release.kind == "approval":
                # A person's approval ends the agent's run of refused requests (push fatigue).
                conn.execute(_RESET_REFUSALS, {"approved_agent": moved.agent, "now": now})
        return _action(moved)

    def take_lease(
        self, action_id: str, *, status: S, owner: str, seconds: float, tid: str | None = None
    ) -> Action | None:
        """Lease an action in ``status`` (and holding transaction ``tid``, when given) to ``owner``
        unless another holds a live lease."""
        now = utcnow()
        params = {
            "lease_id": action_id,
            "lease_status": status,
            "lease_now": now,
            "lease_owner_now": owner,
            "lease_tid": tid,
            "new_owner": owner,
            "new_until": now + timedelta(seconds=seconds),
        }
        with self._writing_once() as conn:
            row = conn.execute(_LEASE if tid is None else _LEASE_FOR_TID, params).first()
        return _action(row) if row is not None else None

    def drop_lease(self, action_id: str, *, status: S, owner: str) -> bool:
        """Give up a lease this owner holds (nothing happens when another owner holds it now)."""
        statement = (
            update(ACTIONS)
            .where(ACTIONS.c.id == action_id, ACTIONS.c.status == status, ACTIONS.c.lease_owner == owner)
            .values(lease_owner=None, lease_until=None)
        )
        with self._writing_once() as conn:
            return bool(conn.execute(statement).rowcount == 1)

    def set_fields(self, action_id: str, *, expected: S, **fields: Any) -> bool:
        """Update bookkeeping columns of an action still in ``expected`` (no status change)."""
        statement = (
            update(ACTIONS)
            .where(ACTIONS.c.id == action_id, ACTIONS.c.status == expected)
            .values(updated_at=utcnow(), **fields)
        )
        with self._writing_once() as conn:
            return bool(conn.execute(statement).rowcount == 1)

    def claim_for_execution(self, action_id: str, *, worker: str, lease_seconds: float) -> Claim | None:
        """``queued -> executing`` for one worker, with the action's release record read in the same
        transaction; None when it is not queued (a duplicate or forged message)."""
        now = utcnow()
        fields = {
            "lease_owner": worker,
            "lease_until": now + timedelta(seconds=lease_seconds),
            "started_at": now,
            "attempts": INCREMENT,
        }
        with self._writing() as conn:
            claimed = self._move(
                conn, action_id, [S.QUEUED], S.EXECUTING, worker, "executing", {"worker": worker}, None, fields
            )
            if claimed is None:
                return None
            row = conn.execute(_GET_RELEASE, {"action_id": action_id}).first()
        return Claim(_action(claimed), _release(row) if row is not None else None)

    def mark_dispatched(self, action_id: str, *, status: S, backoff_seconds: float = 0.0) -> None:
        """Record that a message for the action was just sent (pushed ``backoff_seconds`` ahead)."""
        with self._writing_once() as conn:
            conn.execute(
                update(ACTIONS)
                .where(ACTIONS.c.id == action_id, ACTIONS.c.status == status)
                .values(
                    dispatched_at=utcnow() + timedelta(seconds=backoff_seconds),
                    dispatch_count=ACTIONS.c.dispatch_count + 1,
                )
            )

    # -- what maintenance and the listener look for ---------------------------------------
    def due(self, status: S, *, column: str, before: datetime, limit: int = 500) -> list[Action]:
        """Actions in ``status`` whose timestamp ``column`` is older than ``before``."""
        timestamp = getattr(Action, column)
        query = (
            select(Action)
            .where(Action.status == status, col(timestamp).is_not(None), timestamp < before)
            .order_by(timestamp)
            .limit(limit)
        )
        with self.reading() as session:
            return list(session.exec(query))

    def awaiting(self, *, updated_since: datetime | None = None, limit: int = 100_000) -> list[Action]:
        """Actions awaiting approval with an open transaction (changed since ``updated_since``, if given)."""
        query = select(Action).where(Action.status == S.AWAITING_APPROVAL, col(Action.tid).is_not(None))
        if updated_since is not None:
            query = query.where(Action.updated_at >= updated_since)
        with self.reading() as session:
            return list(session.exec(query.limit(limit)))

    def awaiting_tids(self, *, updated_since: datetime | None = None) -> list[tuple[str, str]]:
        """(action id, tid) of every promptless action awaiting approval: what a listener subscribes to.

        Only two short columns per row, so resuming 10,000 pending approvals stays small.
        """
        query = select(Action.id, Action.tid).where(
            Action.status == S.AWAITING_APPROVAL, col(Action.tid).is_not(None), Action.mode != "prompt"
        )
        if updated_since is not None:
            query = query.where(Action.updated_at >= updated_since)
        with self.reading() as session:
            return [(action_id, str(tid)) for action_id, tid in session.exec(query)]

    def find_by_tid(self, tid: str) -> Action | None:
        """The action whose Rublon transaction is ``tid``."""
        with self._fetching() as conn:
            row = conn.execute(_FIND_BY_TID, {"tid": tid}).first()
        return _action(row) if row is not None else None

    # -- agents ---------------------------------------------------------------------------
    def agent_state(self, agent: str) -> AgentState | None:
        """Run-time state of an agent (suspension), or None when nothing was recorded."""
        with self.reading() as session:
            return session.get(AgentState, agent)

    def record_refusal(self, agent: str, *, limit: int, actor: str) -> bool:
        """Count a rejected or expired request of ``agent``; suspend it at ``limit`` in a row.

        Returns True when this refusal suspended the agent.
        """
        with self.session() as session:
            state = session.get(AgentState, agent, with_for_update=True) or AgentState(agent=agent)
            state.refusals_in_row += 1
            state.updated_at = utcnow()
            suspended_now = not state.suspended and state.refusals_in_row >= limit
            if suspended_now:
                state.suspended = True
                state.suspended_reason = f"{state.refusals_in_row} approval requests in a row rejected or expired"
                audit.append(
                    session.connection(),
                    self._audit_key,
                    event="agent.suspended",
                    actor=actor,
                    data={"agent": agent, "reason": state.suspended_reason},
                )
            session.add(state)
            return suspended_now

    def lift_suspension(self, agent: str, *, actor: str) -> bool:
        """Lift a push-fatigue suspension; False when the agent was not suspended."""
        with self.session() as session:
            state = session.get(AgentState, agent, with_for_update=True)
            if state is None or not state.suspended:
                return False
            state.suspended, state.suspended_reason, state.refusals_in_row = False, None, 0
            state.updated_at = utcnow()
            session.add(state)
            audit.append(
                session.connection(), self._audit_key, event="agent.lifted", actor=actor, data={"agent": agent}
            )
            return True

    # -- audit ----------------------------------------------------------------------------
    def audit(
        self, event: str, *, actor: str, action_id: str | None = None, data: dict[str, Any] | None = None
    ) -> None:
        """Append an event that is not a state change (a refusal, a late answer, ...)."""
        with self._writing() as conn:
            audit.append(conn, self._audit_key, event=event, actor=actor, action_id=action_id, data=data)

    def events_since(self, event: str, since: datetime, *, actor: str | None = None) -> list[AuditEvent]:
        """Events of one kind at or after ``since`` (optionally by one actor), oldest first: for rate limits."""
        query = select(AuditEvent).where(AuditEvent.event == event, AuditEvent.at >= since)
        if actor is not None:
            query = query.where(AuditEvent.actor == actor)
        with self.reading() as session:
            return list(session.exec(query.order_by(col(AuditEvent.seq))))

    def events(self, action_id: str | None = None) -> list[AuditEvent]:
        """The audit trail, of one action or of everything, in order."""
        with self.reading() as session:
            return list(audit.iter_events(session, action_id=action_id))

    def audit_head(self) -> tuple[int, str]:
        """The chain's last link: its sequence number and MAC (``(0, "")`` when empty)."""
        with self.reading() as session:
            head = session.get(AuditHead, 1)
            return (head.seq, head.mac) if head else (0, "")

    def verify_audit(self) -> ChainReport:
        """Recompute the audit chain; see :func:`store.audit.verify`."""
        with self.reading() as session:
            return audit.verify(session, self._audit_key)
