"""The maintenance sweep (beat, queue ``maintenance``): the store's half of the outbox.

Each run:
- re-sends ``queued`` actions whose execute message is older than the grace period,
  pushing ``dispatched_at`` ahead with exponential backoff so a backlog is not multiplied;
- re-sends ``submitted`` actions whose gate task was lost, the same way;
- expires ``awaiting_approval`` actions past their deadline and cancels the transaction;
- blocks ``awaiting_approval`` actions whose confirmation lease ran out (a listener died
  after exchanging the token and before recording it: the answer cannot be verified again);
- moves ``executing`` actions whose lease ran out to ``ambiguous``, or back to ``queued``
  when the handler is registered as idempotent (at most ``MAX_RUNS`` runs in all, so an
  action that kills its worker every time does not loop forever).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from rublon.errors import RublonError
from store import ActionStatus
from store.models import utcnow
from tasks import registry
from tasks.celery_app import app
from tasks.celery_config import SWEEP_TASK
from tasks.confirmation import note_refusal
from tasks.dispatch import send_execute, send_gate
from tasks.runtime import Runtime, get_runtime

log = logging.getLogger(__name__)
S = ActionStatus
ACTOR = "maintenance"
# Re-sends back off as grace x 1, 3, 7, 15: at most 16 grace periods between two sends of
# one action, so a message lost in a long backlog (or a Redis that forgot its queues) is
# still re-sent within minutes, while a backlog is not multiplied.
MAX_BACKOFF_EXPONENT = 4
MAX_RUNS = 3


@dataclass
class SweepReport:
    """What one sweep did."""

    resent_execute: list[str] = field(default_factory=list)
    resent_gate: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    ambiguous: list[str] = field(default_factory=list)
    requeued: list[str] = field(default_factory=list)

    def total(self) -> int:
        return sum(len(items) for items in vars(self).values())


@app.task(name=SWEEP_TASK, ignore_result=True, acks_late=True)
def sweep_task() -> dict[str, int]:
    """Run one sweep; returns counts (for Flower)."""
    report = sweep(get_runtime())
    return {name: len(items) for name, items in vars(report).items()}


def _aware(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; every timestamp in the store is UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _backoff(grace: float, count: int) -> float:
    return grace * (2 ** min(count, MAX_BACKOFF_EXPONENT) - 1)


def sweep(runtime: Runtime) -> SweepReport:
    """One pass over the store; safe to run from several workers at once (every move is a CAS)."""
    store, settings, report = runtime.store, runtime.settings, SweepReport()
    now = utcnow()

    # One failed send ends the re-sending for this sweep: the broker is down, and each
    # further try would wait through the publish retries while nothing can be sent.
    broker_up = True
    for action in store.due(
        S.QUEUED, column="dispatched_at", before=now - timedelta(seconds=settings.dispatch_grace_seconds)
    ):
        broker_up = broker_up and send_execute(action.id)
        if not broker_up:
            break
        store.mark_dispatched(
            action.id,
            status=S.QUEUED,
            backoff_seconds=_backoff(settings.dispatch_grace_seconds, action.dispatch_count),
        )
        report.resent_execute.append(action.id)

    for action in store.due(
        S.SUBMITTED, column="dispatched_at", before=now - timedelta(seconds=settings.gate_grace_seconds)
    ):
        if not broker_up:
            break
        if action.lease_until is not None and _aware(action.lease_until) > now:
            # A gate task holds it (running, or died with the lease): a message now would only
            # be refused, and counting it would push the real re-send further out.
            continue
        broker_up = send_gate(action.id)
        if not broker_up:
            break
        store.mark_dispatched(
            action.id,
            status=S.SUBMITTED,
            backoff_seconds=_backoff(settings.gate_grace_seconds, action.dispatch_count),
        )
        report.resent_gate.append(action.id)

    for action in store.due(S.AWAITING_APPROVAL, column="expires_at", before=now):
        moved = store.move(
            action.id,
            expected=S.AWAITING_APPROVAL,
            new=S.EXPIRED,
            actor=ACTOR,
            reason="nobody approved before the deadline",
            lease_owner=None,
            lease_until=None,
        )
        if moved is not None:
            report.expired.append(action.id)
            note_refusal(runtime, action.agent, actor=ACTOR)
            cancel_transaction(runtime, action.tid)

    for action in store.due(S.AWAITING_APPROVAL, column="lease_until", before=now):
        moved = store.move(
            action.id,
            expected=S.AWAITING_APPROVAL,
            new=S.BLOCKED,
            actor=ACTOR,
            held_by=action.lease_owner,
            reason="approval could not be verified (the confirming process stopped mid-way)",
            lease_owner=None,
            lease_until=None,
        )
        if moved is not None:
            report.blocked.append(action.id)
            cancel_transaction(runtime, action.tid)

    for action in store.due(S.EXECUTING, column="lease_until", before=now):
        spec = registry.get(action.action)
        if spec is not None and spec.idempotent and action.attempts < MAX_RUNS:
            moved = store.move(
                action.id,
                expected=S.EXECUTING,
                new=S.QUEUED,
                actor=ACTOR,
                held_by=action.lease_owner,
                reason="the worker stopped mid-run; the handler is idempotent, so it runs again",
                dispatched_at=now,
                lease_owner=None,
                lease_until=None,
            )
            if moved is not None:
                send_execute(action.id)
                report.requeued.append(action.id)
        else:
            moved = store.move(
                action.id,
                expected=S.EXECUTING,
                new=S.AMBIGUOUS,
                actor=ACTOR,
                held_by=action.lease_owner,
                reason=(
                    "the worker stopped mid-run"
                    + (f" {action.attempts} times" if action.attempts > 1 else "")
                    + " and the outcome is unknown; resolve it with 'mfa-gate resolve ID --succeeded|--failed'"
                ),
                lease_owner=None,
                lease_until=None,
            )
            if moved is not None:
                report.ambiguous.append(action.id)
    anchor_audit_head(runtime)
    if report.total():
        log.info("maintenance: %s", {name: len(items) for name, items in vars(report).items() if items})
    return report


_last_anchor: dict[str, float] = {"at": 0.0}


def anchor_audit_head(runtime: Runtime) -> None:
    """Write the audit chain's head to the log every MFA_GATE_AUDIT_ANCHOR_INTERVAL seconds.

    A log shipped elsewhere then holds MACs the database cannot silently rewrite: a chain
    recomputed later must pass through every anchored (seq, mac).
    """
    now = time.monotonic()
    if now - _last_anchor["at"] < runtime.settings.audit_anchor_interval:
        return
    _last_anchor["at"] = now
    seq, mac = runtime.store.audit_head()
    log.info("audit head seq=%s mac=%s", seq, mac, extra={"audit_head_seq": seq, "audit_head_mac": mac})


def cancel_transaction(runtime: Runtime, tid: str | None) -> None:
    """Best-effort cancel of a Rublon transaction (the push is withdrawn)."""
    if not tid:
        return
    try:
        runtime.rublon.cancel_transaction(tid=tid)
    except RublonError as exc:
        log.info("could not cancel transaction %s (%s)", tid, type(exc).__name__)
