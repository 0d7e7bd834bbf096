"""The faults the chaos suite injects, each against the real processes of a running stack.

Every fault is bounded in time and touches only processes the stack started: a worker's
whole process group (SIGKILL), one pool child of a worker, a listener, the web process,
or the stack's own Redis (restarted with its AOF, or crashed and wiped).
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from cli.stack import Stack
from cli.target import CountingTarget
from store import Action, ActionStatus, Store

EXECUTE_WORKERS = ("worker-execute-1", "worker-execute-2")
GATE_WORKER = "worker-gate+maintenance-1"
LISTENERS = ("listener-1", "listener-2")
# A process that keeps dying is restarted this often, then left dead (and reported).
MAX_RESTARTS = 5

# What one fault name does; the part after ':' names the process it hits.
KINDS = (
    "kill-execute-worker",  # SIGKILL a worker's whole process group, then start it again
    "kill-pool-child",  # SIGKILL one pool process of a worker (as the OOM killer would)
    "kill-listener",  # SIGKILL a listener, start it again a little later
    "restart-redis",  # execute workers paused so work is queued; Redis restarted (SIGTERM, AOF kept)
    "crash-redis-wipe",  # the same, but Redis SIGKILLed and its data deleted: every queue is lost
    "kill-web",  # SIGKILL the web process (agents retry with their idempotency key)
    "kill-gate-worker",  # SIGKILL the gate+maintenance worker's process group
)


@dataclass
class FaultEvent:
    """One injected fault: when (seconds since the run began), how long it took, what it hit."""

    fault: str
    at: float
    took: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "fault": self.fault,
            "at": round(self.at, 2),
            "took": round(self.took, 2),
            "detail": self.detail,
            "error": self.error,
        }


class Faults:
    """Injects faults into ``stack``; uses the store and the target to aim kills mid-execution.

    Args:
        stack: the running deployment.
        store: its store (read only here).
        target: the counting target, to tell whether an executing action's request arrived.
        rng: the run's random source (the same seed gives the same choices).
        clock: seconds since the run began.
    """

    def __init__(
        self, stack: Stack, store: Store, target: CountingTarget, rng: random.Random, clock: Callable[[], float]
    ) -> None:
        self.stack, self.store, self.target, self.rng, self.clock = stack, store, target, rng, clock
        # Held while a fault kills and restarts processes, and by the supervisor while it
        # looks for processes that died on their own: it never mistakes a fault for a crash.
        self.lock = threading.RLock()
        self.restarts: Counter[str] = Counter()

    def inject(self, fault: str) -> FaultEvent:
        """Run one fault (``kind`` or ``kind:process``); never raises, the event carries any error."""
        with self.lock:
            return self._inject(fault)

    def _inject(self, fault: str) -> FaultEvent:
        kind, _, name = fault.partition(":")
        event = FaultEvent(fault, self.clock())
        started = time.monotonic()
        try:
            if kind == "kill-execute-worker":
                event.detail = self._kill_worker(name or EXECUTE_WORKERS[0], aim=True)
            elif kind == "kill-pool-child":
                event.detail = self._kill_pool_child(name or EXECUTE_WORKERS[0])
            elif kind == "kill-listener":
                event.detail = self._kill_and_restart(name or LISTENERS[0], down=self.rng.uniform(1.0, 3.0))
            elif kind == "restart-redis":
                event.detail = self._restart_redis(wipe=False)
            elif kind == "crash-redis-wipe":
                event.detail = self._restart_redis(wipe=True)
            elif kind == "kill-web":
                event.detail = self._kill_and_restart("web", down=self.rng.uniform(0.5, 1.5))
            elif kind == "kill-gate-worker":
                event.detail = self._kill_worker(GATE_WORKER, aim=False)
            else:
                raise ValueError(f"unknown fault {fault!r}; known: {', '.join(KINDS)}")
        except Exception as exc:  # a fault that could not be injected is reported, the run goes on
            event.error = f"{type(exc).__name__}: {exc}"
        event.took = time.monotonic() - started
        return event

    # -- the faults --------------------------------------------------------------------------
    def _kill_worker(self, name: str, *, aim: bool) -> dict[str, Any]:
        """SIGKILL the worker's process group, preferably while one of its actions is mid-request."""
        victim = self._executing_on(name) if aim else None
        child = self.stack.children[name]
        child.kill()
        down = self.rng.uniform(0.5, 2.0)
        time.sleep(down)
        self.stack.start_process(name)
        return {
            "process": name,
            "mid_execution": victim.id if victim else None,
            "down_seconds": round(down, 2),
        }

    def _kill_pool_child(self, name: str) -> dict[str, Any]:
        """SIGKILL one pool process of a worker; Celery starts a new one (and re-queues its message)."""
        child = self.stack.children[name]
        pool = set(child.descendants())
        victim = self._executing_on(name)
        pid: int | None = None
        if victim is not None and victim.lease_owner:
            owner_pid = int(victim.lease_owner.rsplit(":", 1)[1]) if victim.lease_owner[-1].isdigit() else None
            pid = owner_pid if owner_pid in pool else None
        if pid is None:
            if not pool:
                raise RuntimeError(f"{name} has no pool processes to kill")
            pid = self.rng.choice(sorted(pool))
            victim = None
        os.kill(pid, signal.SIGKILL)  # one of the stack's own processes, checked above
        return {"process": name, "pid": pid, "mid_execution": victim.id if victim else None}

    def _kill_and_restart(self, name: str, *, down: float) -> dict[str, Any]:
        self.stack.children[name].kill()
        time.sleep(down)
        self.stack.start_process(name)
        return {"process": name, "down_seconds": round(down, 2)}

    def _restart_redis(self, *, wipe: bool) -> dict[str, Any]:
        """Pause the execute workers until work queues up, then restart (or crash and wipe) Redis."""
        with self._paused(EXECUTE_WORKERS):
            deadline = time.monotonic() + 8.0
            while time.monotonic() < deadline and self.stack.queue_length("execute") < 5:
                time.sleep(0.2)
            before = {queue: self.stack.queue_length(queue) for queue in ("gate", "execute")}
            self.stack.restart_redis(down_seconds=self.rng.uniform(0.5, 1.5), crash=wipe, wipe=wipe)
            after = {queue: self.stack.queue_length(queue) for queue in ("gate", "execute")}
        return {"queued_before": before, "queued_after_restart": after, "wiped": wipe}

    def restart_dead(self) -> list[dict[str, Any]]:
        """Restart every process that exited on its own, as a supervisor (systemd, compose) would.

        Returns one record per restart: which process, its exit code and its last log lines.
        """
        found: list[dict[str, Any]] = []
        with self.lock:
            for name, child in list(self.stack.children.items()):
                if child.alive() or self.restarts[name] >= MAX_RESTARTS:
                    continue
                self.restarts[name] += 1
                tail = child.own_log_text().strip().splitlines()[-6:]
                found.append(
                    {"process": name, "at": round(self.clock(), 2), "exit_code": child.process.returncode, "log": tail}
                )
                try:
                    if name == "redis":
                        self.stack.restart_redis(down_seconds=0.0)
                    else:
                        self.stack.start_process(name)
                except Exception as exc:  # reported; the next round tries again
                    found[-1]["restart_error"] = f"{type(exc).__name__}: {exc}"
        return found

    # -- helpers -----------------------------------------------------------------------------
    def _executing_on(self, worker: str, *, wait: float = 8.0) -> Action | None:
        """An action this worker executes whose request reached the target (waits a little for one)."""
        prefix = f"execute:{worker}@"
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            for action in self.store.list_actions(statuses=[ActionStatus.EXECUTING], limit=100):
                if (action.lease_owner or "").startswith(prefix) and self.target.count(action.id) > 0:
                    return action
            time.sleep(0.1)
        return None

    @contextmanager
    def _paused(self, names: tuple[str, ...]) -> Iterator[None]:
        """SIGSTOP the process groups of ``names`` for the block, SIGCONT after (always)."""
        children = [self.stack.children[name] for name in names]
        try:
            for child in children:
                child.signal_group(signal.SIGSTOP)
            yield
        finally:
            for child in children:
                child.signal_group(signal.SIGCONT)


def schedule(*, quick: bool, window: float, rng: random.Random) -> list[tuple[float, str]]:
    """When to inject which fault, as (seconds after the first submission, fault) in order.

    The quick schedule injects each kind once; the full one kills an execute worker about
    every 15 s (every third time one pool child instead), a listener about every 35 s, and
    twice each restarts Redis with its AOF, crashes and wipes it, kills the web process and
    the gate worker.
    """
    if quick:
        faults = [
            "kill-execute-worker:worker-execute-1",
            "kill-listener:listener-1",
            "restart-redis",
            "kill-pool-child:worker-execute-2",
            "kill-web",
            "crash-redis-wipe",
            "kill-gate-worker",
        ]
    else:
        kills = max(4, int(window / 15))
        executes = [
            f"{'kill-pool-child' if n % 3 == 2 else 'kill-execute-worker'}:{EXECUTE_WORKERS[n % 2]}"
            for n in range(kills)
        ]
        listeners = [f"kill-listener:{LISTENERS[n % 2]}" for n in range(max(2, int(window / 35)))]
        singles = ["restart-redis", "kill-web", "crash-redis-wipe", "kill-gate-worker"] * 2
        faults = _interleave(executes, listeners, singles)
    start, end = 0.08 * window, 0.92 * window
    step = (end - start) / max(1, len(faults) - 1)
    return [(start + n * step + rng.uniform(-0.2, 0.2) * step, fault) for n, fault in enumerate(faults)]


def _interleave(*groups: list[str]) -> list[str]:
    """Spread each group evenly over the whole sequence (stable: no randomness)."""
    placed: list[tuple[float, int, str]] = []
    for rank, group in enumerate(groups):
        for n, item in enumerate(group):
            placed.append(((n + 0.5) / len(group), rank, item))
    return [item for _, _, item in sorted(placed)]
