"""Reading what happened: action timestamps from the store, subscriptions from the simulator, memory from /proc.

The store is read through a plain engine of its own, not ``store.Store``: mfa-gate's
SQLite engine opens every transaction with ``BEGIN IMMEDIATE`` (the write lock), and a
benchmark that polled that way would hold up the very processes it measures. Plain
SELECTs under WAL take no lock.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine, func, select
from sqlalchemy.engine import Engine
from sqlmodel import col

from simulator.control import SimulatorControl
from store.engine import normalise_url
from store.models import Action

#: Kernel clock ticks per second, the unit of /proc/PID/stat's CPU times.
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
#: Ids per query, well under SQLite's bound-parameter limit.
CHUNK = 500


def stamp(value: datetime | None) -> float | None:
    """Seconds since the epoch of a stored timestamp (UTC; SQLite hands it back without a zone)."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


@dataclass(frozen=True)
class ActionTimes:
    """The moments the store recorded for one action (wall-clock seconds, None when not reached)."""

    id: str
    status: str
    tid: str | None
    released_at: float | None
    started_at: float | None
    finished_at: float | None


class StoreReader:
    """Read-only queries on the deployment's store.

    Args:
        url: the store's SQLAlchemy URL.
    """

    def __init__(self, url: str) -> None:
        self.engine: Engine = create_engine(normalise_url(url))

    def times(self, ids: Sequence[str]) -> dict[str, ActionTimes]:
        """The recorded moments of these actions, by id (missing ids are left out)."""
        found: dict[str, ActionTimes] = {}
        with self.engine.connect() as conn:
            for offset in range(0, len(ids), CHUNK):
                query = select(
                    col(Action.id),
                    col(Action.status),
                    col(Action.tid),
                    col(Action.released_at),
                    col(Action.started_at),
                    col(Action.finished_at),
                ).where(col(Action.id).in_(ids[offset : offset + CHUNK]))
                for row in conn.execute(query):
                    found[row[0]] = ActionTimes(
                        id=row[0],
                        status=str(row[1]),
                        tid=row[2],
                        released_at=stamp(row[3]),
                        started_at=stamp(row[4]),
                        finished_at=stamp(row[5]),
                    )
        return found

    def count(self, statuses: Iterable[str]) -> int:
        """How many actions are in any of ``statuses``."""
        query = select(func.count()).select_from(Action).where(col(Action.status).in_(list(statuses)))
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def wait(self, ids: Sequence[str], done: str, *, timeout: float, poll: float = 0.25) -> dict[str, ActionTimes]:
        """Poll until every action has reached ``done`` (``tid``, ``started`` or ``finished``).

        Raises:
            TimeoutError: some did not within ``timeout`` seconds (how many, and their statuses).
        """
        deadline = time.monotonic() + timeout
        while True:
            times = self.times(ids)
            missing = [i for i in ids if i not in times or _value(times[i], done) is None]
            if not missing:
                return times
            if time.monotonic() > deadline:
                statuses = sorted({times[i].status if i in times else "absent" for i in missing})
                raise TimeoutError(f"{len(missing)} of {len(ids)} actions did not reach {done} ({statuses})")
            time.sleep(poll)

    def dispose(self) -> None:
        self.engine.dispose()


def _value(times: ActionTimes, done: str) -> str | float | None:
    return {"tid": times.tid, "started": times.started_at, "finished": times.finished_at}[done]


def subscribed(control: SimulatorControl) -> int:
    """How many transactions have at least one confirmation-channel subscriber right now."""
    return len(control.stats()["subscribers"])


def wait_subscribed(
    control: SimulatorControl, predicate_count: int, *, at_least: bool = True, timeout: float, poll: float = 0.25
) -> float:
    """Poll the simulator until the subscribed count is >= (or, ``at_least=False``, <=) ``predicate_count``.

    Returns the wall-clock moment it was seen. Raises TimeoutError with the last count.
    """
    deadline = time.monotonic() + timeout
    while True:
        count = subscribed(control)
        seen = time.time()
        if (count >= predicate_count) if at_least else (count <= predicate_count):
            return seen
        if time.monotonic() > deadline:
            raise TimeoutError(f"the simulator shows {count} subscribed transactions, waiting for {predicate_count}")
        time.sleep(poll)


def memory_mb(pid: int) -> tuple[float, float]:
    """(peak resident set ``VmHWM``, current ``VmRSS``) of a live process, in MiB, from /proc."""
    fields: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmHWM", "VmRSS"):
                fields[name] = float(value.split()[0]) / 1024  # kB -> MiB
    return fields["VmHWM"], fields["VmRSS"]


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            found += [int(child) for child in task.read_text().split()]
    return found


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by a live process and its live descendants (/proc)."""
    total, pending = 0.0, [pid]
    while pending:
        current = pending.pop()
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime
            pending += _children(current)
    return total
