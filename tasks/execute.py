"""The execute task: run a released action, at most once unless its handler is idempotent.

Queue ``execute``. The message carries only the action id and proves nothing: the task
runs an action only when the store says it is ``queued`` with a release record whose
payload hash matches the stored payload, and only after winning the ``queued ->
executing`` compare-and-set, so duplicate or forged messages do nothing.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from typing import Any

import httpx
from celery import Task
from celery.exceptions import SoftTimeLimitExceeded
from pydantic import ValidationError

from rublon.signing import verify
from store import Action, ActionStatus, Release
from store.models import utcnow
from tasks import registry
from tasks.binding import PARAM_ACTION_ID, PARAM_BINDING_TAG, PARAM_PAYLOAD_HASH, binding_tag, payload_hash
from tasks.celery_app import app
from tasks.celery_config import EXECUTE_TASK
from tasks.registry import ExecutionContext, TransientError
from tasks.runtime import Runtime, get_runtime

log = logging.getLogger(__name__)
S = ActionStatus
# Retries of an idempotent handler: 0.5 s, 1 s, 2 s, ... at most 5 s apart, and never
# past the handler's time budget (so the task's soft time limit is not what stops them).
RETRY_BASE_SECONDS = 0.5
RETRY_MAX_SECONDS = 5.0

# Failures after which the target may have done the work: the request went out and no
# answer came back. A non-idempotent action is then ``ambiguous``, never ``failed``
# (an agent told "failed" would submit the payment again).
OUTCOME_UNKNOWN: tuple[type[BaseException], ...] = (
    SoftTimeLimitExceeded,
    httpx.ReadTimeout,
    httpx.WriteTimeout,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
)
RETRYABLE: tuple[type[BaseException], ...] = (TransientError, *OUTCOME_UNKNOWN)


@app.task(name=EXECUTE_TASK, bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run_action(self: Task, action_id: str) -> str:
    """Claim and run one released action."""
    # One identity per pool process: two children of one worker never share a lease.
    return execute(get_runtime(), action_id, worker=f"execute:{self.request.hostname or 'local'}:{os.getpid()}")


def execute(runtime: Runtime, action_id: str, *, worker: str) -> str:
    """The execute task's logic; returns what it did (for logs and tests)."""
    store = runtime.store
    # Claim first: the compare-and-set is the one check a duplicate or forged message cannot
    # pass, and it reads the release record in the same transaction.
    claim = store.claim_for_execution(action_id, worker=worker, lease_seconds=runtime.settings.execute_lease_seconds)
    if claim is None:
        action = store.get(action_id)
        status = "unknown" if action is None else str(action.status)
        store.audit(
            "execute.refused",
            actor=worker,
            action_id=action_id if action else None,
            data={"action_id": action_id, "reason": f"action is {status}, not queued", "status": status},
        )
        return "duplicate: another worker claimed it" if status == S.EXECUTING else f"refused: action is {status}"
    claimed, release = claim
    problem = "queued without a release record" if release is None else release_problem(runtime, claimed, release)
    if problem is not None:
        store.move(
            action_id,
            expected=S.EXECUTING,
            new=S.FAILED,
            actor=worker,
            held_by=worker,
            reason=f"refused before running: {problem}",
            data={"refused": problem},
            error=problem,
            finished_at=utcnow(),
            lease_owner=None,
            lease_until=None,
        )
        return f"refused: {problem}"
    return _run(runtime, claimed, worker)


def release_problem(runtime: Runtime, action: Action, release: Release) -> str | None:
    """Why the stored release does not cover the stored payload, or None when it does."""
    try:
        recomputed = payload_hash(action=action.action, params=action.params, user=action.user, agent=action.agent)
    except Exception:
        return "the stored payload cannot be hashed"
    if recomputed != action.payload_hash or recomputed != release.payload_hash:
        return "the payload changed after it was released (hash mismatch)"
    if release.kind != "approval":
        return None
    body, signature = release.credentials_body, release.credentials_signature
    if body is None or not verify(runtime.rublon_secret, body.encode(), signature):
        return "the kept approval is not signed by Rublon"
    try:
        params = json.loads(body).get("result", {}).get("params", {})
    except (ValueError, AttributeError):
        return "the kept approval cannot be read"
    tag = binding_tag(runtime.binding_key, action_id=action.id, payload_hash=recomputed)
    if (params.get(PARAM_ACTION_ID), params.get(PARAM_PAYLOAD_HASH), params.get(PARAM_BINDING_TAG)) != (
        action.id,
        recomputed,
        tag,
    ):
        return "the kept approval is for another payload"
    return None


def _run(runtime: Runtime, action: Action, worker: str) -> str:
    spec = registry.get(action.action)
    if spec is None:
        return _finish(runtime, action, worker, S.FAILED, error=f"action {action.action!r} is not registered")
    try:
        params = spec.params_model.model_validate(action.params)
    except ValidationError as exc:
        return _finish(runtime, action, worker, S.FAILED, error=f"params no longer valid: {exc.errors()[0]['msg']}")
    budget = float(max(1, runtime.settings.execute_time_limit - 10))
    deadline = time.monotonic() + budget
    ctx = ExecutionContext(
        action_id=action.id,
        user=action.user,
        agent=action.agent,
        attempt=action.attempts,
        timeout=budget,
        secrets=runtime.secrets,
        http=runtime.policy.http,
    )
    attempt = 0
    while True:
        attempt += 1
        try:
            result = spec.handler(params, ctx) or {}
        except RETRYABLE as exc:
            unknown = isinstance(exc, OUTCOME_UNKNOWN)
            if not spec.idempotent:
                if unknown:
                    return _finish(runtime, action, worker, S.AMBIGUOUS, error=_unknown_error(exc, runtime.secrets))
                return _finish(runtime, action, worker, S.FAILED, error=_safe_error(exc, runtime.secrets))
            pause = min(RETRY_BASE_SECONDS * 2 ** (attempt - 1), RETRY_MAX_SECONDS)
            remaining = deadline - time.monotonic() - pause
            if attempt >= spec.max_attempts or remaining < 1.0:
                error = f"gave up after {attempt} attempt(s): {_safe_error(exc, runtime.secrets)}"
                return _finish(runtime, action, worker, S.FAILED, error=error)
            log.info("action %s: attempt %s failed (%s); again in %.1fs", action.id, attempt, type(exc).__name__, pause)
            time.sleep(pause)
            ctx = dataclasses.replace(ctx, timeout=remaining)
            continue
        except Exception as exc:  # the handler's failure is the action's outcome, recorded
            return _finish(runtime, action, worker, S.FAILED, error=_safe_error(exc, runtime.secrets))
        store_result: dict[str, Any] = json.loads(json.dumps(result, default=str))
        return _finish(runtime, action, worker, S.SUCCEEDED, result=store_result)


def _unknown_error(exc: BaseException, secrets: dict[str, str]) -> str:
    return (
        f"the outcome is unknown ({_safe_error(exc, secrets)}); check the target, then resolve it with "
        "'mfa-gate resolve ID --succeeded|--failed'"
    )


def _finish(
    runtime: Runtime,
    action: Action,
    worker: str,
    status: S,
    *,
    result: dict[str, Any] | None = None,
    error: str | None = None,
) -> str:
    reason = {S.SUCCEEDED: "executed", S.AMBIGUOUS: f"{error}"}.get(status, f"execution failed: {error}")
    moved = runtime.store.move(
        action.id,
        expected=S.EXECUTING,
        new=status,
        actor=worker,
        held_by=worker,
        reason=reason,
        data={"error": error} if error else {},
        result=result,
        error=error,
        finished_at=utcnow(),
        lease_owner=None,
        lease_until=None,
    )
    if moved is None:
        # Maintenance took the action over (its lease ran out): keep what happened in the
        # audit trail for the person who resolves it.
        log.warning("action %s finished but its lease had moved on; outcome %s not recorded", action.id, status)
        runtime.store.audit(
            "execute.outcome_after_lease",
            actor=worker,
            action_id=action.id,
            data={"outcome": str(status), "error": error, "result": result},
        )
        return "lease lost"
    return str(status)


def _safe_error(exc: BaseException, secrets: dict[str, str]) -> str:
    """An error line for the store: the exception's name and message, with server secrets blanked."""
    message = str(exc)
    for value in secrets.values():
        if value:
            message = message.replace(value, "***")
    return f"{type(exc).__name__}: {message[:500]}"
