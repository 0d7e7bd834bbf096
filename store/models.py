"""SQLModel tables: actions, their release records, and the audit chain."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Column, Dialect, Index, String, Text, UniqueConstraint
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    """Aware UTC now: every timestamp in the store is UTC, on SQLite and PostgreSQL alike."""
    return datetime.now(UTC)


class ActionStatus(StrEnum):
    """One vocabulary for the state of an action, everywhere (ARCHITECTURE.md)."""

    SUBMITTED = "submitted"
    AWAITING_APPROVAL = "awaiting_approval"
    QUEUED = "queued"
    EXECUTING = "executing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DENIED = "denied"
    REJECTED = "rejected"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    BLOCKED = "blocked"
    AMBIGUOUS = "ambiguous"


class StatusType(TypeDecorator[ActionStatus]):
    """ActionStatus stored as its plain value in a VARCHAR(32), read back as the enum."""

    impl = String(32)
    cache_ok = True

    def process_bind_param(self, value: object, dialect: Dialect) -> str | None:
        return None if value is None else str(ActionStatus(str(value)))

    def process_result_value(self, value: str | None, dialect: Dialect) -> ActionStatus | None:
        return None if value is None else ActionStatus(value)


class Action(SQLModel, table=True):
    """A critical action an agent asked for, and everything decided about it since."""

    __tablename__ = "actions"
    __table_args__ = (
        UniqueConstraint("agent", "idempotency_key", name="uq_actions_agent_idempotency_key"),
        Index("ix_actions_status_dispatched", "status", "dispatched_at"),
        Index("ix_actions_status_expires", "status", "expires_at"),
        # What the push-fatigue limits count on every submission: an agent's requests in
        # the last hour, and an agent's or a user's pending ones (never the whole history).
        Index("ix_actions_agent_created", "agent", "created_at"),
        Index("ix_actions_agent_status", "agent", "status"),
        Index("ix_actions_user_status", "user", "status"),
    )

    id: str = Field(primary_key=True, max_length=36)
    action: str = Field(max_length=128, index=True)
    params: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    user: str = Field(max_length=128, index=True)
    email: str | None = Field(default=None, max_length=320)
    agent: str = Field(max_length=128, index=True)
    context: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    idempotency_key: str | None = Field(default=None, max_length=200)
    payload_hash: str = Field(max_length=64)
    source_ip: str | None = Field(default=None, max_length=64)

    # A plain string column (the enum's values), so the database reads 'queued', not 'QUEUED'.
    status: ActionStatus = Field(sa_column=Column(StatusType(), nullable=False, index=True))
    reason: str = Field(default="", sa_column=Column(Text, nullable=False))

    # The policy decision that was taken at submission.
    decision: str = Field(max_length=16)
    policy_hash: str = Field(max_length=64)
    policy_rules: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    methods: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    mode: str = Field(default="promptless", max_length=16)
    timeout_seconds: int = 300
    on_unavailable: str = Field(default="block", max_length=8)
    on_bypass: str = Field(default="block", max_length=8)

    # The Rublon transaction, once the gate task opened it.
    tid: str | None = Field(default=None, max_length=128, index=True)
    web_uri: str | None = Field(default=None, max_length=512)
    method: str | None = Field(default=None, max_length=32)
    shown_text: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    expires_at: datetime | None = None

    # Leases: who is confirming or executing it, until when.
    lease_owner: str | None = Field(default=None, max_length=128)
    lease_until: datetime | None = None

    # Outbox bookkeeping for the execute message and the gate message.
    dispatched_at: datetime | None = None
    dispatch_count: int = 0
    attempts: int = 0

    result: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))

    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    approved_at: datetime | None = None
    released_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None

    def public(self) -> dict[str, Any]:
        """The fields an agent or operator may see (no leases, no internal bookkeeping)."""
        return {
            "id": self.id,
            "action": self.action,
            "status": str(self.status),
            "reason": self.reason,
            "user": self.user,
            "agent": self.agent,
            "params": self.params,
            "context": self.context,
            "idempotency_key": self.idempotency_key,
            "payload_hash": self.payload_hash,
            "decision": self.decision,
            "policy_hash": self.policy_hash,
            "policy_rules": self.policy_rules,
            "tid": self.tid,
            "web_uri": self.web_uri,
            "expires_at": _iso(self.expires_at),
            "result": self.result,
            "error": self.error,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
            "released_at": _iso(self.released_at),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
        }


class Release(SQLModel, table=True):
    """Why an action may run: a policy allow or a verified, signed approval. One per action."""

    __tablename__ = "releases"

    id: int | None = Field(default=None, primary_key=True)
    action_id: str = Field(foreign_key="actions.id", unique=True, max_length=36)
    kind: str = Field(max_length=32)  # policy_allow | approval | fail_open
    payload_hash: str = Field(max_length=64)
    approver: str | None = Field(default=None, max_length=128)
    method: str | None = Field(default=None, max_length=32)
    tid: str | None = Field(default=None, max_length=128)
    credentials_body: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    credentials_signature: str | None = Field(default=None, max_length=128)
    created_at: datetime = Field(default_factory=utcnow)


class AuditEvent(SQLModel, table=True):
    """One link of the append-only, HMAC-keyed audit chain."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_event_at", "event", "at"),)

    seq: int = Field(primary_key=True)
    at: datetime = Field(default_factory=utcnow)
    action_id: str | None = Field(default=None, max_length=36, index=True)
    event: str = Field(max_length=64)
    actor: str = Field(max_length=128)
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    mac: str = Field(max_length=64)


class AuditHead(SQLModel, table=True):
    """The last link of the audit chain; one row, locked by every append."""

    __tablename__ = "audit_head"

    id: int = Field(default=1, primary_key=True)
    seq: int = 0
    mac: str = Field(default="", max_length=64)


class AgentState(SQLModel, table=True):
    """What the gate has learnt about an agent at run time (suspension for push fatigue)."""

    __tablename__ = "agent_state"

    agent: str = Field(primary_key=True, max_length=128)
    suspended: bool = False
    suspended_reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    refusals_in_row: int = 0
    updated_at: datetime = Field(default_factory=utcnow)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
