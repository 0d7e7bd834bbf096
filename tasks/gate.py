"""The gate task: ask Rublon, promptless, to push an approval request to the person.

Queue ``gate``. A redelivered gate task never sends a second push: the action moves to
``awaiting_approval`` (with its tid) before the push is sent, and a task that finds it
past ``submitted`` does nothing. A crash between that move and the push leaves an action
nobody was asked about; it expires, which fails closed.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from celery import Task

from rublon.errors import (
    RublonApiError,
    RublonBadSignature,
    RublonError,
    RublonUnavailable,
    TransactionLocked,
    UserBypassed,
    UserDenied,
    UserNotFound,
)
from store import Action, ActionStatus, Release
from store.models import utcnow
from tasks import registry
from tasks.binding import transaction_params
from tasks.celery_app import app
from tasks.celery_config import GATE_TASK
from tasks.dispatch import notify_awaiting
from tasks.display import summary
from tasks.release import release_and_dispatch
from tasks.runtime import Runtime, get_runtime

log = logging.getLogger(__name__)
S = ActionStatus
GATE_LEASE_SECONDS = 60


@app.task(name=GATE_TASK, bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def request_approval(self: Task, action_id: str) -> str:
    """Open the Rublon transaction of a submitted action and send its method."""
    return open_transaction(get_runtime(), action_id, worker=f"gate:{self.request.hostname or 'local'}")


def open_transaction(runtime: Runtime, action_id: str, *, worker: str) -> str:
    """The gate task's logic; returns what it did (for logs and tests)."""
    store = runtime.store
    # The lease keeps two deliveries of this task from opening two transactions.
    action = store.take_lease(action_id, status=S.SUBMITTED, owner=worker, seconds=GATE_LEASE_SECONDS)
    if action is None:
        current = store.get(action_id)
        if current is None:
            store.audit("gate.refused", actor=worker, action_id=action_id, data={"reason": "no such action"})
            return "unknown action"
        if current.status != S.SUBMITTED:
            return f"nothing to do: action is {current.status}"
        return "another gate task holds it"
    try:
        return _ask_person(runtime, action, worker)
    except RublonUnavailable as exc:
        return _fail(runtime, action, worker, f"Rublon unavailable ({type(exc).__name__})", action.on_unavailable)
    except UserBypassed:
        return _fail(runtime, action, worker, "Rublon reports the user as bypassed", action.on_bypass)
    except UserNotFound:
        return _fail(runtime, action, worker, "the user is unknown to Rublon", "block")
    except UserDenied:
        return _fail(runtime, action, worker, "the user's Rublon status is 'denied' (by an administrator)", "block")
    except RublonBadSignature:
        return _fail(runtime, action, worker, "Rublon's answer had a bad signature", "block")
    except RublonApiError as exc:
        return _fail(runtime, action, worker, f"Rublon refused: {exc.exception}", "block")
    except RublonError as exc:
        return _fail(runtime, action, worker, f"Rublon error: {type(exc).__name__}", "block")


def _ask_person(runtime: Runtime, action: Action, worker: str) -> str:
    spec = registry.get(action.action)
    if spec is None:
        return _fail(runtime, action, worker, f"action {action.action!r} is no longer registered", "block")
    email = action.email or ""
    text = summary(
        spec=spec,
        params=action.params,
        agent=action.agent,
        user=action.user,
        payload_hash=action.payload_hash,
        context=action.context,
    )
    params = transaction_params(
        runtime.binding_key, action_id=action.id, payload_hash=action.payload_hash, summary=text
    )
    rublon = runtime.rublon
    if action.mode == "prompt":
        # The callback names the action: the lease must be taken before the token is exchanged.
        callback = runtime.settings.public_url.rstrip("/") + f"/rublon/callback/{action.id}"
        prompt = rublon.transaction_init(
            username=action.user, callback_url=callback, user_email=email, params={**params, "appVer": "mfa-gate/0.1"}
        )
        moved = _await(runtime, action, worker, tid=prompt.tid, web_uri=prompt.web_uri, method="prompt", text=text)
        return "prompt transaction opened" if moved else "lost the race"

    # No separate user/verify call: transaction/init refuses an unknown, bypassed or denied
    # user with the same errors (handled in open_transaction) and names the methods it allows.
    transaction = rublon.promptless_init(username=action.user, user_email=email, params=params)
    method = next((m for m in action.methods if m in transaction.methods), None)
    if method is None:
        rublon.cancel_transaction(tid=transaction.tid)
        return _fail(
            runtime,
            action,
            worker,
            f"the user has none of the methods the policy asks for ({', '.join(action.methods)})",
            "block",
        )
    if not _await(
        runtime,
        action,
        worker,
        tid=transaction.tid,
        web_uri=None,
        method=method,
        text=text,
        expires_in=min(transaction.expires_in or action.timeout_seconds, action.timeout_seconds),
    ):
        rublon.cancel_transaction(tid=transaction.tid)
        return "lost the race"
    notify_awaiting(action.id, transaction.tid)
    if method in ("push", "phoneCall", "sms", "email"):
        try:
            rublon.send_method(tid=transaction.tid, method=method)
        except TransactionLocked:
            # The person (or Rublon) answered before the method went out, e.g. on another
            # device. The answer is the listener's to verify; blocking here would override it.
            return f"{action.user} answered before the {method} was sent"
    return f"asked {action.user} by {method}"


def _await(
    runtime: Runtime,
    action: Action,
    worker: str,
    *,
    tid: str,
    web_uri: str | None,
    method: str,
    text: str,
    expires_in: int | None = None,
) -> bool:
    expires_at = utcnow() + timedelta(seconds=expires_in or action.timeout_seconds)
    moved = runtime.store.move(
        action.id,
        expected=S.SUBMITTED,
        new=S.AWAITING_APPROVAL,
        actor=worker,
        held_by=worker,
        reason=f"waiting for {action.user} to approve ({method})",
        data={"tid": tid, "method": method, "shown": text, "expires_at": expires_at.isoformat()},
        tid=tid,
        web_uri=web_uri,
        method=method,
        shown_text=text,
        expires_at=expires_at,
        lease_owner=None,
        lease_until=None,
    )
    return moved is not None


def _fail(runtime: Runtime, action: Action, worker: str, why: str, mode: str) -> str:
    """Fail closed (``blocked``) unless the matching rule said ``allow`` for this case."""
    expected = [S.SUBMITTED, S.AWAITING_APPROVAL]
    if mode == "allow":
        release = Release(action_id=action.id, kind="fail_open", payload_hash=action.payload_hash)
        released = release_and_dispatch(
            runtime,
            action.id,
            expected=expected,
            release=release,
            actor=worker,
            reason=f"{why}; the policy fails open for this case",
            data={"why": why},
        )
        return "released (fail open)" if released else "lost the race"
    data: dict[str, Any] = {"why": why}
    runtime.store.move(action.id, expected=expected, new=S.BLOCKED, actor=worker, reason=why, data=data)
    log.info("action %s blocked: %s", action.id, why)
    return f"blocked: {why}"
