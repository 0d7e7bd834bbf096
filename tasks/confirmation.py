"""Turning a person's answer into a release, the same way for the listener and the callback.

A WebSocket ``confirmed`` message or a callback's ``rublonToken`` is a hint. Only a
signed ``transaction/credentials`` answer whose tid, user, action id, payload hash and
binding tag match the held action releases it, once. Before the token is exchanged the
caller takes a lease on the action, so two listeners (or a listener and the callback)
never both exchange.

Everything here is synchronous and meant to run whole in one worker thread of an async
caller (the listener, the callback): lease, exchange, checks, release and the execute
message then cost one hand-over between threads, not one per step.
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass

from rublon.client import Credentials, RublonClient
from rublon.errors import (
    AccessTokenExpired,
    RublonApiError,
    RublonBadSignature,
    RublonError,
    RublonUnavailable,
    UnknownAccessToken,
)
from store import Action, ActionStatus, Release
from tasks.binding import PARAM_ACTION_ID, PARAM_BINDING_TAG, PARAM_PAYLOAD_HASH, binding_tag
from tasks.release import release_and_dispatch
from tasks.runtime import Runtime

log = logging.getLogger(__name__)
S = ActionStatus


@dataclass(frozen=True)
class Outcome:
    """What became of an answer: the action's status afterwards and why."""

    action_id: str | None
    status: str
    detail: str


def credentials_problem(runtime: Runtime, action: Action, creds: Credentials) -> str | None:
    """Why a credentials answer does not approve ``action``, or None when it does."""
    expected_tag = binding_tag(runtime.binding_key, action_id=action.id, payload_hash=action.payload_hash)
    checks = (
        ("tid", creds.tid, action.tid),
        ("username", creds.username, action.user),
        ("action id", creds.params.get(PARAM_ACTION_ID), action.id),
        ("payload hash", creds.params.get(PARAM_PAYLOAD_HASH), action.payload_hash),
        ("binding tag", creds.params.get(PARAM_BINDING_TAG), expected_tag),
    )
    for name, seen, wanted in checks:
        if seen is None or wanted is None or not hmac.compare_digest(str(seen), str(wanted)):
            return f"the approval's {name} does not match the held action"
    return None


def record_late_answer(runtime: Runtime, action: Action | None, *, tid: str | None, kind: str, actor: str) -> Outcome:
    """Audit an answer for an action that is no longer waiting; it releases nothing."""
    status = "unknown" if action is None else str(action.status)
    runtime.store.audit(
        "confirmation.ignored",
        actor=actor,
        action_id=action.id if action else None,
        data={"tid": tid, "answer": kind, "status": status, "reason": f"action is {status}"},
    )
    return Outcome(action.id if action else None, status, f"{kind} ignored: action is {status}")


def confirm(
    runtime: Runtime,
    rublon: RublonClient,
    action_id: str,
    access_token: str,
    *,
    tid: str | None,
    actor: str,
    method: str | None,
) -> Outcome:
    """Exchange ``access_token`` and release the action if the signed answer matches it.

    Args:
        tid: the transaction the answer came on (the listener's); the action must hold it.
            None when the answer names the action itself (the prompt callback's URL).

    Never raises for Rublon's or the store's refusals: each ends as an Outcome, audited.
    """
    store = runtime.store
    leased = _lease(runtime, action_id, tid=tid, actor=actor)
    if isinstance(leased, Outcome):
        return leased
    action = leased
    try:
        creds = rublon.transaction_credentials(access_token=access_token)
    except (UnknownAccessToken, AccessTokenExpired) as exc:
        return _block(
            runtime, leased, actor, f"approval could not be verified: the token is not exchangeable ({exc.exception})"
        )
    except RublonBadSignature:
        return _block(runtime, leased, actor, "approval could not be verified: Rublon's answer had a bad signature")
    except RublonUnavailable as exc:
        # Rublon did not answer: give the lease back at once, so maintenance does not take
        # this for a confirming process that died mid-way (which it blocks); the answer
        # delivered again on a reconnect may still be verified, else the action expires.
        store.drop_lease(action.id, status=S.AWAITING_APPROVAL, owner=actor)
        store.audit(
            "confirmation.unverified",
            actor=actor,
            action_id=action.id,
            data={"reason": f"Rublon unavailable ({type(exc).__name__})"},
        )
        return Outcome(action.id, str(S.AWAITING_APPROVAL), "Rublon unavailable; will retry")
    except RublonApiError as exc:
        return _block(runtime, leased, actor, f"approval could not be verified: Rublon refused ({exc.exception})")
    except RublonError as exc:
        return _block(runtime, leased, actor, f"approval could not be verified ({type(exc).__name__})")
    return _release_verified(runtime, leased, creds, actor=actor, method=method)


def confirm_exchanged(runtime: Runtime, creds: Credentials, *, actor: str, method: str | None) -> Outcome:
    """Release the held action a credentials answer names, if the answer matches it.

    For a prompt-mode callback that names no action: the token was exchanged first, so the
    echoed action id says which action it is; the same lease and checks as ``confirm`` apply.
    """
    store = runtime.store
    action_id = creds.params.get(PARAM_ACTION_ID)
    action = store.get(action_id) if action_id else None
    if action is None:
        store.audit(
            "confirmation.unlinked",
            actor=actor,
            data={"tid": creds.tid, "reason": "the approval names no action of mfa-gate"},
        )
        return Outcome(None, "unknown", "the approval names no action of mfa-gate")
    leased = _lease(runtime, action.id, tid=None, actor=actor)
    if isinstance(leased, Outcome):
        return leased
    return _release_verified(runtime, leased, creds, actor=actor, method=method)


def _lease(runtime: Runtime, action_id: str, *, tid: str | None, actor: str) -> Action | Outcome:
    """The action leased to ``actor`` for confirming, or the Outcome saying why not (late answers audited).

    The lease is tried first, in one statement: on the hot path (an action awaiting its
    answer) nothing else touches the store before the token exchange.
    """
    store = runtime.store
    leased = store.take_lease(
        action_id, status=S.AWAITING_APPROVAL, owner=actor, seconds=runtime.settings.confirm_lease_seconds, tid=tid
    )
    if leased is not None:
        return leased
    current = store.get(action_id)
    if current is not None and current.status == S.AWAITING_APPROVAL and tid is not None and current.tid != tid:
        # The answer came on another transaction than the one this action holds: it cannot
        # approve it, and exchanging its token here would only block the action.
        why = "the answer's transaction is not the action's"
        store.audit(
            "confirmation.ignored",
            actor=actor,
            action_id=action_id,
            data={"tid": tid, "answer": "confirmed", "reason": why},
        )
        return Outcome(action_id, str(S.AWAITING_APPROVAL), why)
    if current is not None and current.status == S.AWAITING_APPROVAL:
        return Outcome(action_id, str(current.status), "another process is confirming it")
    return record_late_answer(runtime, current, tid=tid, kind="confirmed", actor=actor)


def _release_verified(
    runtime: Runtime, leased: Action, creds: Credentials, *, actor: str, method: str | None
) -> Outcome:
    """Check a signed credentials answer against the leased action and release it, once."""
    store, action = runtime.store, leased
    problem = credentials_problem(runtime, leased, creds)
    if problem is not None:
        return _block(runtime, leased, actor, f"approval could not be verified: {problem}")
    release = Release(
        action_id=action.id,
        kind="approval",
        payload_hash=leased.payload_hash,
        approver=creds.username,
        method=method or leased.method,
        tid=creds.tid,
        credentials_body=creds.raw_body.decode(),
        credentials_signature=creds.signature,
    )
    released = release_and_dispatch(
        runtime,
        action.id,
        expected=S.AWAITING_APPROVAL,
        release=release,
        actor=actor,
        reason=f"approved by {creds.username}",
        held_by=actor,
        data={"approver": creds.username, "method": method or leased.method, "shown": leased.shown_text},
    )
    if released is None:
        return record_late_answer(runtime, store.get(action.id), tid=action.tid, kind="confirmed", actor=actor)
    return Outcome(action.id, str(S.QUEUED), f"approved by {creds.username}")


def _block(runtime: Runtime, action: Action, actor: str, why: str) -> Outcome:
    moved = runtime.store.move(
        action.id,
        expected=S.AWAITING_APPROVAL,
        new=S.BLOCKED,
        actor=actor,
        held_by=actor,
        reason=why,
        lease_owner=None,
        lease_until=None,
    )
    log.info("action %s: %s", action.id, why)
    return Outcome(action.id, str(S.BLOCKED) if moved else str(action.status), why)


def refuse(runtime: Runtime, action: Action, *, new: ActionStatus, reason: str, actor: str) -> Outcome:
    """A ``denied`` (-> rejected) or ``expired`` answer; late ones are only audited."""
    if action.status != S.AWAITING_APPROVAL:
        return record_late_answer(runtime, action, tid=action.tid, kind=str(new), actor=actor)
    moved = runtime.store.move(
        action.id,
        expected=S.AWAITING_APPROVAL,
        new=new,
        actor=actor,
        reason=reason,
        lease_owner=None,
        lease_until=None,
    )
    if moved is None:
        current = runtime.store.get(action.id)
        return record_late_answer(runtime, current, tid=action.tid, kind=str(new), actor=actor)
    note_refusal(runtime, action.agent, actor=actor)
    return Outcome(action.id, str(new), reason)


def note_refusal(runtime: Runtime, agent: str, *, actor: str) -> None:
    """Count a rejected or expired request against the agent (push-fatigue defence)."""
    limit = runtime.policy.limits.suspend_agent_after_refusals
    if runtime.store.record_refusal(agent, limit=limit, actor=actor):
        log.warning("agent %s suspended after %s refused approval requests in a row", agent, limit)
