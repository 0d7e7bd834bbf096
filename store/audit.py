"""The audit chain: append-only events, each keyed with an HMAC over the previous link.

mac(n) = HMAC-SHA256(key, mac(n-1) || canonical JSON of event n). The sequence numbers
are contiguous from 1 and the head row records the last one, so an edit, a deletion, a
reordering or a truncation shows when the chain is recomputed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, update
from sqlmodel import Session, col, select

from store.models import AuditEvent, AuditHead, utcnow

GENESIS = "0" * 64
AUDIT_PAGE = 1000


def _canonical(seq: int, at: datetime, action_id: str | None, event: str, actor: str, data: dict[str, Any]) -> bytes:
    body = {
        "seq": seq,
        "at": at.isoformat(timespec="microseconds"),
        "action_id": action_id,
        "event": event,
        "actor": actor,
        "data": data,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def link_mac(key: bytes, previous: str, event: AuditEvent) -> str:
    """The MAC of ``event`` chained to the previous link's MAC."""
    message = previous.encode() + _canonical(event.seq, event.at, event.action_id, event.event, event.actor, event.data)
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def append(
    session: Session, key: bytes, *, event: str, actor: str, action_id: str | None = None, data: dict[str, Any] | None
) -> AuditEvent:
    """Append one event inside the caller's transaction; the head row is locked until it commits.

    Plain SQL statements, not the ORM's unit of work: this runs inside every move.
    """
    head_query = select(AuditHead.seq, AuditHead.mac).where(AuditHead.id == 1).with_for_update()
    head = session.execute(head_query).first()
    seq, previous = (head[0], head[1] or GENESIS) if head is not None else (0, GENESIS)
    # A round trip through JSON keeps what is hashed equal to what is read back.
    clean = json.loads(json.dumps(data or {}, default=str))
    record = AuditEvent(seq=seq + 1, at=utcnow(), action_id=action_id, event=event, actor=actor, data=clean, mac="")
    record.mac = link_mac(key, previous, record)
    session.execute(
        insert(AuditEvent).values(
            seq=record.seq, at=record.at, action_id=action_id, event=event, actor=actor, data=clean, mac=record.mac
        )
    )
    if head is None:
        session.execute(insert(AuditHead).values(id=1, seq=record.seq, mac=record.mac))
    else:
        session.execute(update(AuditHead).where(col(AuditHead.id) == 1).values(seq=record.seq, mac=record.mac))
    return record


@dataclass(frozen=True)
class ChainReport:
    """The outcome of recomputing the chain."""

    ok: bool
    events: int
    head_seq: int
    broken_at: int | None = None
    problem: str | None = None


def iter_events(session: Session, *, action_id: str | None = None) -> Iterator[AuditEvent]:
    """Every event in sequence order, read a page at a time."""
    last = 0
    while True:
        query = select(AuditEvent).where(AuditEvent.seq > last).order_by(col(AuditEvent.seq)).limit(AUDIT_PAGE)
        if action_id is not None:
            query = query.where(AuditEvent.action_id == action_id)
        page = list(session.exec(query))
        if not page:
            return
        yield from page
        last = page[-1].seq


def verify(session: Session, key: bytes) -> ChainReport:
    """Recompute the chain and name the first broken link, if any."""
    previous, expected_seq, count = GENESIS, 1, 0
    for record in iter_events(session):
        if record.seq != expected_seq:
            problem = f"event {expected_seq} is missing (next stored event is {record.seq}): deleted or reordered"
            return ChainReport(False, count, expected_seq - 1, expected_seq, problem)
        if not hmac.compare_digest(link_mac(key, previous, record), record.mac):
            problem = f"event {record.seq} ({record.event}) does not match its MAC: edited, reordered or wrong key"
            return ChainReport(False, count, record.seq - 1, record.seq, problem)
        previous, expected_seq, count = record.mac, expected_seq + 1, count + 1
    head = session.get(AuditHead, 1)
    head_seq = head.seq if head else 0
    if head is not None and (head.seq != count or (count and head.mac != previous)):
        problem = f"the chain ends at event {count} but its head names event {head.seq}: events were truncated"
        return ChainReport(False, count, head_seq, count + 1, problem)
    return ChainReport(True, count, head_seq)
