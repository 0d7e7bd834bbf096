"""Submitting an action: validate, check who may act for whom, ask the policy, record, dispatch.

The one path for the REST API, the MCP gate tools and the CLI. Validation happens before
anything is written: bad input raises SubmissionError naming the field, and the store
holds no trace of it but an audit event.
"""

from __future__ import annotations

import dataclasses
import json
import re
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import rfc8785
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from policies import Decision, Facts, evaluate
from store import Action, ActionStatus, IdempotencyConflict, Release
from store.models import utcnow
from store.transitions import PENDING
from tasks import registry
from tasks.actions.http_request import HttpRequestParams, target_refusal
from tasks.binding import payload_hash
from tasks.dispatch import send_execute, send_gate
from tasks.runtime import Runtime

S = ActionStatus
ACTION_NAME = re.compile(r"^[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)*$")
MAX_KEY_LENGTH = 200
RAW_RUBLON_CALL_EVENT = "mcp.rublon_call"


class SubmitRequest(BaseModel):
    """What an agent asks for. The agent itself comes from its credential, never from here."""

    model_config = ConfigDict(extra="forbid")

    action: str = Field(min_length=1, max_length=128)
    params: dict[str, Any] = Field(default_factory=dict)
    user: str = Field(min_length=1, max_length=128)
    email: str | None = Field(default=None, max_length=320)
    context: dict[str, Any] = Field(default_factory=dict)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=MAX_KEY_LENGTH)


class SubmissionError(Exception):
    """Bad input, or an agent asking beyond its rights. Nothing was written.

    Attributes:
        status_code: the HTTP status the API answers with.
        field: the request field at fault (``params.amount``, ``user``, ...).
    """

    def __init__(self, status_code: int, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.status_code = status_code
        self.field = field
        self.message = message

    def body(self) -> dict[str, Any]:
        """The JSON error body of the API."""
        return {"error": {"field": self.field, "message": self.message}}


@dataclass(frozen=True)
class Submitted:
    """The recorded action, and whether this call created it (False: idempotent replay)."""

    action: Action
    created: bool
    decision: Decision | None


def parse_request(raw: object) -> SubmitRequest:
    """Validate a raw JSON body into a SubmitRequest; raises SubmissionError naming the field."""
    if not isinstance(raw, dict):
        raise SubmissionError(422, "body", "must be a JSON object with action, params, user")
    try:
        return SubmitRequest.model_validate(raw)
    except ValidationError as exc:
        raise _from_validation(exc, prefix="") from None


def _from_validation(exc: ValidationError, *, prefix: str) -> SubmissionError:
    first = exc.errors()[0]
    field = ".".join(str(part) for part in (prefix, *first["loc"]) if part != "")
    message = first["msg"]
    if first["type"] == "dict_type":
        message = "must be a JSON object"
    elif first["type"] == "extra_forbidden":
        message = "is not a known field; remove it"
    elif first["type"] == "missing":
        message = "is required"
    return SubmissionError(422, field or prefix or "body", message)


def _size(value: object) -> int:
    return len(json.dumps(value, separators=(",", ":"), default=str).encode())


def submit(runtime: Runtime, request: SubmitRequest, *, agent: str, source_ip: str | None, actor: str) -> Submitted:
    """Record the action and start its way through the gate.

    Args:
        agent: the authenticated agent (from its credential, or an operator's --agent).
        source_ip: the connection's address, a server-known fact for the policy.
        actor: who to name in the audit trail.

    Raises:
        SubmissionError: bad input or no right to act for the user; nothing was written.
    """
    settings, directory, policy = runtime.settings, runtime.directory, runtime.policy
    if not ACTION_NAME.fullmatch(request.action):
        raise SubmissionError(422, "action", "must be dotted lower-case words, e.g. 'payments.transfer'")
    spec = registry.get(request.action)
    if spec is None:
        raise SubmissionError(422, "action", f"unknown action {request.action!r}; known: {', '.join(registry.names())}")
    if _size(request.params) > settings.max_params_bytes:
        raise SubmissionError(413, "params", f"is larger than {settings.max_params_bytes} bytes")
    if _size(request.context) > settings.max_context_bytes:
        raise SubmissionError(413, "context", f"is larger than {settings.max_context_bytes} bytes")
    try:
        typed = spec.params_model.model_validate(request.params)
    except ValidationError as exc:
        raise _from_validation(exc, prefix="params") from None
    user = directory.user(request.user)
    if user is None:
        raise SubmissionError(422, "user", f"unknown user {request.user!r}; users come from the directory file")
    if not directory.may_act_for(agent, request.user):
        raise SubmissionError(403, "user", f"agent {agent!r} may not act for user {request.user!r}")
    if request.email is not None and request.email.lower() != user.email.lower():
        raise SubmissionError(422, "email", "does not match the directory's email for this user; leave it out")
    if isinstance(typed, HttpRequestParams):
        _check_target(runtime, typed)
    try:
        digest = payload_hash(action=request.action, params=request.params, user=request.user, agent=agent)
    except rfc8785.CanonicalizationError as exc:
        raise SubmissionError(
            422, "params", f"cannot be canonicalised ({exc}); use finite numbers below 2**53"
        ) from None

    facts = Facts(agent=agent, user=request.user, groups=tuple(user.groups), source_ip=source_ip, now=utcnow())
    decision = evaluate(policy, action=request.action, params=request.params, facts=facts, context=request.context)
    if decision.outcome == "allow":
        over = _cumulative_excess(runtime, spec, request, agent=agent)
        if over is not None:
            decision = dataclasses.replace(
                decision,
                outcome="mfa",
                rule="(cumulative limit)",
                reason=f"{over}; this one needs MFA although rule '{decision.rule}' allows it",
            )
    now = utcnow()
    action = Action(
        id=str(uuid.uuid4()),
        action=request.action,
        params=request.params,
        user=request.user,
        email=user.email,
        agent=agent,
        context=request.context,
        idempotency_key=request.idempotency_key,
        payload_hash=digest,
        source_ip=source_ip,
        status=S.SUBMITTED,
        reason=decision.reason,
        decision=decision.outcome,
        policy_hash=decision.policy_hash,
        policy_rules=[match.rule for match in decision.matched] or [decision.rule],
        methods=list(decision.methods),
        mode=decision.mode,
        timeout_seconds=decision.timeout_seconds,
        on_unavailable=decision.on_unavailable,
        on_bypass=decision.on_bypass,
        dispatched_at=now,
    )
    release: Release | None = None
    if decision.outcome == "deny":
        action.status = S.DENIED
    elif decision.outcome == "allow":
        action.status, action.released_at = S.QUEUED, now
        release = Release(action_id=action.id, kind="policy_allow", payload_hash=digest)
    else:
        refusal = _refusal(runtime, agent=agent, user=request.user)
        if refusal is not None:
            action.status, action.reason = S.BLOCKED, refusal
    data = {
        "agent": agent,
        "user": request.user,
        "action": request.action,
        "decision": decision.outcome,
        "rule": decision.rule,
        "policy_hash": decision.policy_hash,
        "source_ip": source_ip,
    }
    try:
        recorded, created = runtime.store.create(action, release=release, actor=actor, data=data)
    except IdempotencyConflict as exc:
        raise SubmissionError(409, "idempotency_key", str(exc)) from None
    if created and recorded.status == S.QUEUED:
        send_execute(recorded.id)
    elif created and recorded.status == S.SUBMITTED:
        send_gate(recorded.id)
    return Submitted(recorded, created, decision)


def _cumulative_excess(
    runtime: Runtime, spec: registry.ActionSpec, request: SubmitRequest, *, agent: str
) -> str | None:
    """Why an otherwise allowed action would cross a per-agent or per-user window limit, or None.

    Small allowed actions add up: a large payment split into small ones still reaches a person.
    """
    limits = runtime.policy.limits
    caps = (
        ("agent", agent, limits.max_count_per_agent_window, limits.max_amount_per_agent_window),
        ("user", request.user, limits.max_count_per_user_window, limits.max_amount_per_user_window),
    )
    if not any(count or amount for _, _, count, amount in caps):
        return None
    since = utcnow() - timedelta(seconds=limits.window_seconds)
    this_amount = spec.amount_of(request.params) or 0.0
    for kind, name, max_count, max_amount in caps:
        if not (max_count or max_amount):
            continue
        released = runtime.store.released_since(since, **{kind: name})
        if max_count and len(released) + 1 > max_count:
            return f"{kind} {name!r} would exceed {max_count} released actions in {limits.window_seconds}s"
        if max_amount:
            total = this_amount + sum(_amount(a) for a in released)
            if total > max_amount:
                return f"{kind} {name!r} would move {total:g} in {limits.window_seconds}s (limit {max_amount:g})"
    return None


def _amount(action: Action) -> float:
    spec = registry.get(action.action)
    return (spec.amount_of(action.params) or 0.0) if spec else 0.0


def _check_target(runtime: Runtime, params: HttpRequestParams) -> None:
    refusal = target_refusal(params.url, runtime.policy.http)
    if refusal is not None:
        raise SubmissionError(422, "params.url", refusal)


def _refusal(runtime: Runtime, *, agent: str, user: str) -> str | None:
    """Why a new approval request must not reach the person (push-fatigue limits), or None."""
    limits = runtime.policy.limits
    # Raw Rublon calls through MCP spend the same hourly budget as submissions (web/mcp_server.py).
    load = runtime.store.request_load(
        agent=agent, user=user, since=utcnow() - timedelta(hours=1), raw_call_event=RAW_RUBLON_CALL_EVENT
    )
    if load.suspended:
        return f"agent {agent!r} is suspended ({load.suspended_reason}); a person lifts it with 'mfa-gate agents lift'"
    if load.pending_for_user >= limits.max_pending_per_user:
        return f"user {user!r} already has {limits.max_pending_per_user} pending approval requests"
    if load.pending_for_agent >= limits.max_pending_per_agent:
        return f"agent {agent!r} already has {limits.max_pending_per_agent} pending approval requests"
    if load.requests_by_agent >= limits.max_requests_per_agent_per_hour:
        return f"agent {agent!r} sent more than {limits.max_requests_per_agent_per_hour} requests in the last hour"
    return None


def cancel(runtime: Runtime, action_id: str, *, agent: str | None, actor: str) -> Action:
    """Withdraw an action that was not released; its Rublon transaction is cancelled.

    Args:
        agent: the agent that must own the action (None for an operator).

    Raises:
        SubmissionError: 404 when not found (or not this agent's), 409 when already released or final.
    """
    action = runtime.store.get(action_id)
    if action is None or (agent is not None and action.agent != agent):
        raise SubmissionError(404, "id", f"no action {action_id!r} for this agent")
    moved = runtime.store.move(
        action_id,
        expected=list(PENDING),
        new=S.CANCELLED,
        actor=actor,
        reason=f"cancelled by {actor}",
        lease_owner=None,
        lease_until=None,
    )
    if moved is None:
        current = runtime.store.get(action_id)
        status = current.status if current else "unknown"
        raise SubmissionError(
            409, "id", f"action is {status}; only submitted or awaiting_approval actions can be cancelled"
        )
    if moved.tid:
        from tasks.maintenance import cancel_transaction

        cancel_transaction(runtime, moved.tid)
    return moved
