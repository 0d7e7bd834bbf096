"""The audit chain: append-only events, each keyed with an HMAC over the previous link.

mac(n) = HMAC-SHA256(key, mac(n-1) || canonical JSON of event n). The sequence numbers
are contiguous from 1 and the head row records the last one, so an edit, a deletion, a
reordering or a truncation shows when the chain is recomputed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, bindparam, insert, update
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


def _mac(key: bytes, previous: str, body: bytes) -> str:
    return hmac.new(key, previous.encode() + body, hashlib.sha256).hexdigest()


def link_mac(key: bytes, previous: str, event: AuditEvent) -> str:
    """The MAC of ``event`` chained to the previous link's MAC."""
    return _mac(key, previous, _canonical(event.seq, event.at, event.action_id, event.event, event.actor, event.data))


# Built once: append() runs inside every move, and rebuilding statements costs more than running them.
_EVENTS = cast(Table, AuditEvent.__table__)  # type: ignore[attr-defined]
_HEAD = cast(Table, AuditHead.__table__)  # type: ignore[attr-defined]
_READ_HEAD = select(_HEAD.c.seq, _HEAD.c.mac).where(_HEAD.c.id == 1).with_for_update()
_INSERT_EVENT = insert(_EVENTS)
_INSERT_HEAD = insert(_HEAD)
_UPDATE_HEAD = update(_HEAD).where(_HEAD.c.id == 1).values(seq=bindparam("new_seq"), mac=bindparam("new_mac"))


@dataclass(frozen=True)
class Entry:
    """One event to append: what happened, who did it, to which action, and its details."""

    event: str
    actor: str
    action_id: str | None = None
    data: dict[str, Any] | None = None


def append(
    conn: Connection, key: bytes, *, event: str, actor: str, action_id: str | None = None, data: dict[str, Any] | None
) -> int:
    """Append one event inside the caller's transaction; returns its sequence number.

    The head row is locked (``FOR UPDATE`` on PostgreSQL; SQLite's write lock is already
    held) until the caller commits, so appends are serialised and the chain has no fork.
    """
    return append_all(conn, key, [Entry(event, actor, action_id, data)])


def append_all(conn: Connection, key: bytes, entries: Sequence[Entry]) -> int:
    """Append events in order inside the caller's transaction, reading and writing the head
    once for all of them; returns the last sequence number."""
    head = conn.execute(_READ_HEAD).first()
    seq, previous = (head[0], head[1] or GENESIS) if head is not None else (0, GENESIS)
    rows = []
    for entry in entries:
        seq += 1
        # A round trip through JSON keeps what is hashed equal to what is read back.
        clean = json.loads(json.dumps(entry.data or {}, default=str))
        at = utcnow()
        previous = _mac(key, previous, _canonical(seq, at, entry.action_id, entry.event, entry.actor, clean))
        rows.append(
            {
                "seq": seq,
                "at": at,
                "action_id": entry.action_id,
                "event": entry.event,
                "actor": entry.actor,
                "data": clean,
                "mac": previous,
            }
        )
    conn.execute(_INSERT_EVENT, rows)
    if head is None:
        conn.execute(_INSERT_HEAD, {"id": 1, "seq": seq, "mac": previous})
    else:
        conn.execute(_UPDATE_HEAD, {"new_seq": seq, "new_mac": previous})
    return seq


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
