"""The four measurements, each against its plain-Celery counterpart.

Every latency is ``time.time()`` wall clock, taken in different processes of one machine:

- plain Celery: from just before ``send_task`` (this process) to the no-op task's first
  line (the worker's pool process);
- release: from the simulator sending ``confirmed`` on the listener's WebSocket (it stamps
  ``time.time()`` just before writing the frame, reported as the transaction's
  ``confirmedSentAt``) to the execute task's claim, the store's ``started_at`` (taken by the
  execute task after it has read the action and its release record, as the
  ``queued -> executing`` move begins); the control ``approve`` call that makes the
  simulator send it, and how long after that call began the frame went out, are reported;
- allow path: from just before the REST ``POST /v1/actions`` to ``started_at``.

Import this module only once the deployment's environment is in place (``bench.main``
does): it imports mfa-gate's tasks, whose Celery app reads the settings at import.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from http.client import HTTPConnection
from typing import NamedTuple
from urllib.parse import urlsplit

import redis

from bench import baseline
from bench.actions import NOOP_ACTION
from bench.deployment import AGENTS, USERS, Deployment, credential
from bench.probes import ActionTimes, StoreReader, memory_mb, tree_cpu_seconds, wait_subscribed
from bench.report import RateRun, ReleaseRun, ScaleRun

#: A kept-alive connection idle longer than this is replaced before the next request.
IDLE_RECONNECT_SECONDS = 2.0
#: Statuses that mean an action will never start: the benchmark is broken, not slow.
NEVER_STARTS = frozenset({"denied", "rejected", "expired", "cancelled", "blocked", "failed", "ambiguous"})


class Pacer:
    """Spaces events ``1/rate`` seconds apart from the first call, without drifting."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self.start = time.monotonic()

    def wait(self, index: float) -> None:
        delay = self.start + index * self.interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)


class RestSubmitter:
    """Submits ``bench.noop`` actions over the REST API, spread over the benchmark's agents and users.

    It is the load generator, and it shares the machine's two cores with the deployment, so
    it is kept lean: the standard library's ``http.client``, one kept-alive connection per
    thread and agent (as an agent's SDK would keep one). With httpx the submitting threads
    used 2.3 ms (4 threads) to 3.8 ms (8 threads) of CPU per submission, as much as a fifth
    of what the deployment spends on a gated action; the throughput table reports it.
    """

    def __init__(self, deployment: Deployment) -> None:
        address = urlsplit(deployment.stack.web_url)
        self.host, self.port = address.hostname or "127.0.0.1", address.port or 80
        self._numbers = itertools.count()
        self._local = threading.local()
        self._connections: list[HTTPConnection] = []
        self._lock = threading.Lock()

    def submit(self, gate: str) -> str:
        """Submit one action; returns its id. Raises RuntimeError on any answer but 201."""
        n = next(self._numbers)
        agent, user = AGENTS[n % len(AGENTS)], USERS[n % len(USERS)]
        body = json.dumps({"action": NOOP_ACTION, "user": user, "params": {"gate": gate, "n": n}})
        headers = {"Authorization": f"Bearer {credential(agent)}", "Content-Type": "application/json"}
        connection = self._connection(agent)
        try:
            connection.request("POST", "/v1/actions", body=body, headers=headers)
            response = connection.getresponse()
            text = response.read()
        except Exception:
            self._local.connections.pop(agent)[0].close()  # never reuse a connection in an unknown state
            raise
        if response.status != 201:
            raise RuntimeError(f"POST /v1/actions answered {response.status}: {text[:300]!r}")
        action_id: str = json.loads(text)["id"]
        return action_id

    def submit_many(self, gate: str, count: int, *, concurrency: int) -> list[str]:
        """Submit ``count`` actions from ``concurrency`` threads; returns their ids in submission order."""
        with ThreadPoolExecutor(concurrency) as pool:
            return list(pool.map(lambda _: self.submit(gate), range(count)))

    def _connection(self, agent: str) -> HTTPConnection:
        """This thread's connection for ``agent``, opened afresh after a pause.

        The web server closes a keep-alive connection idle for 5 s (uvicorn's default); a
        POST is never retried, so a connection idle for a while is replaced before use.
        """
        held: dict[str, tuple[HTTPConnection, float]] = self._local.__dict__.setdefault("connections", {})
        now = time.monotonic()
        if agent in held and now - held[agent][1] > IDLE_RECONNECT_SECONDS:
            held.pop(agent)[0].close()
        if agent not in held:
            connection = HTTPConnection(self.host, self.port, timeout=30)
            with self._lock:
                self._connections.append(connection)
            held[agent] = (connection, now)
        connection = held[agent][0]
        held[agent] = (connection, now)
        return connection

    def close(self) -> None:
        for connection in self._connections:
            connection.close()


def cpu_snapshot(deployment: Deployment) -> dict[str, float]:
    """CPU seconds used so far by each of the deployment's processes (with its pool processes)."""
    return {
        name: tree_cpu_seconds(child.process.pid) for name, child in deployment.stack.children.items() if child.alive()
    }


def cpu_per_item(before: dict[str, float], after: dict[str, float], count: int) -> dict[str, float]:
    """CPU milliseconds per item by process, between two snapshots (processes that used next to none left out)."""
    spent = {name: (after[name] - before[name]) * 1000 / count for name in before if name in after}
    return {name: round(value, 3) for name, value in sorted(spent.items()) if value >= 0.005}


def _own_ms_per_item(since: float, count: int) -> float:
    """CPU milliseconds per item this process (the load generator and its store polling) used since ``since``."""
    return round((time.process_time() - since) * 1000 / count, 3)


def wait_until_started(reader: StoreReader, ids: Sequence[str], *, done: str, timeout: float) -> dict[str, ActionTimes]:
    """``reader.wait`` that fails at once, naming it, when an action ended where it will never run."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            times = reader.wait(ids, done, timeout=min(5.0, max(0.0, deadline - time.monotonic())))
        except TimeoutError:
            if time.monotonic() > deadline:
                raise
            times = reader.times(ids)
        broken = [t for t in times.values() if t.status in NEVER_STARTS]
        if broken:
            raise RuntimeError(f"{len(broken)} actions ended {broken[0].status} (e.g. {broken[0].id}); see the logs")
        if all(i in times and _reached(times[i], done) for i in ids):
            return times


def _reached(times: ActionTimes, done: str) -> bool:
    return {"tid": times.tid, "started": times.started_at, "finished": times.finished_at}[done] is not None


def prime(reader: StoreReader, submitter: RestSubmitter) -> None:
    """Run one allowed action through alone before anything runs concurrently.

    On a fresh PostgreSQL database the first audit append creates the chain's head row,
    and concurrent first appends collide on it (a duplicate key; see the closing note of
    issue 7); one action first sidesteps that and shows the deployment works.
    """
    action_id = submitter.submit("allow")
    wait_until_started(reader, [action_id], done="finished", timeout=60)


# -- plain Celery ------------------------------------------------------------------------------
def wait_stamps(client: redis.Redis, key: str, count: int, *, timeout: float) -> dict[str, float]:
    """Poll until ``count`` stamps are recorded under ``key``. Raises TimeoutError."""
    deadline = time.monotonic() + timeout
    while client.hlen(key) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {client.hlen(key)} of {count} baseline tasks ran within {timeout}s")
        time.sleep(0.1)
    return baseline.read_stamps(client, key)


def baseline_latency(deployment: Deployment, *, count: int, rate: float, warmup: int) -> list[float]:
    """Send -> start of plain no-op tasks sent ``rate`` per second (seconds)."""
    client = deployment.redis
    client.delete(baseline.STARTED_KEY)
    sent: dict[str, float] = {}
    pacer = Pacer(rate)
    for index in range(warmup + count):
        pacer.wait(index)
        token = f"noop-{index}"
        before = time.time()
        baseline.send_noop(token)
        if index >= warmup:
            sent[token] = before
    stamps = wait_stamps(client, baseline.STARTED_KEY, warmup + count, timeout=60 + count / rate)
    return [stamps[token] - before for token, before in sent.items()]


def chain_rate(deployment: Deployment, *, count: int, warmup: int) -> RateRun:
    """Plain two-task chains, all sent at once: first sent -> last chain done."""
    client = deployment.redis
    client.delete(baseline.CHAIN_DONE_KEY)
    for index in range(warmup):
        baseline.send_chain(f"warm-{index}")
    wait_stamps(client, baseline.CHAIN_DONE_KEY, warmup, timeout=60)
    client.delete(baseline.CHAIN_DONE_KEY)
    cpu, own = cpu_snapshot(deployment), time.process_time()
    first = time.time()
    for index in range(count):
        baseline.send_chain(f"chain-{index}")
    stamps = wait_stamps(client, baseline.CHAIN_DONE_KEY, count, timeout=120 + count / 10)
    used = cpu_per_item(cpu, cpu_snapshot(deployment), count)
    return RateRun(count, max(stamps.values()) - first, used, client_cpu_ms=_own_ms_per_item(own, count))


# -- mfa-gate ----------------------------------------------------------------------------------
def release_latency(
    deployment: Deployment,
    reader: StoreReader,
    submitter: RestSubmitter,
    *,
    approvals: int,
    pending: int,
    rate: float,
    warmup: int,
) -> ReleaseRun:
    """Approve ``approvals`` actions, ``rate`` per second, while ``pending`` stay held.

    Each approval is replaced by a new REST submission half an interval later, so the
    listener holds ``pending`` open transactions throughout; what is left is approved
    (unmeasured) at the end. Half an interval, not at once: submissions arrive
    independently of approvals in a real deployment, and one sent right after each
    approval would put a whole submission and gate task inside every measured window.
    """
    pool = deque(submitter.submit_many("mfa", pending, concurrency=4))
    wait_until_started(reader, list(pool), done="tid", timeout=120)
    wait_subscribed(deployment.control, pending, timeout=60)
    tids: dict[str, str] = {}
    records: list[Approval] = []
    pacer = Pacer(rate)
    for index in range(warmup + approvals):
        pacer.wait(index)
        action_id = pool.popleft()
        tid = _tid_of(reader, action_id, pool, tids)
        before = time.time()
        deployment.control.approve(tid)
        after = time.time()
        if index >= warmup:
            records.append(Approval(action_id, tid, before, after))
        pacer.wait(index + 0.5)
        pool.append(submitter.submit("mfa"))
    _approve_rest(deployment, reader, list(pool))
    run = ReleaseRun(pending=pending, rate=rate)
    times = wait_until_started(reader, [r.action_id for r in records], done="finished", timeout=120 + approvals / rate)
    _fill(run, records, times, confirmed_sent(deployment))
    return run


def _tid_of(reader: StoreReader, action_id: str, pool: deque[str], tids: dict[str, str]) -> str:
    """The tid of ``action_id``; one query refreshes the tids of the whole pool when it is not known yet."""
    if action_id not in tids:
        for found in reader.times([action_id, *pool]).values():
            if found.tid:
                tids[found.id] = found.tid
    if action_id not in tids:
        times = wait_until_started(reader, [action_id], done="tid", timeout=60)
        tids[action_id] = times[action_id].tid or ""
    return tids.pop(action_id)


def _approve_rest(deployment: Deployment, reader: StoreReader, ids: list[str]) -> None:
    """Approve, unmeasured, actions left pending, and wait until they ran."""
    times = wait_until_started(reader, ids, done="tid", timeout=120)
    for action_id in ids:
        tid = times[action_id].tid
        assert tid is not None
        deployment.control.approve(tid)
    wait_until_started(reader, ids, done="finished", timeout=120)


class Approval(NamedTuple):
    """One measured approval: the control ``approve`` call on ``tid`` ran from ``called`` to ``answered``."""

    action_id: str
    tid: str
    called: float
    answered: float


def confirmed_sent(deployment: Deployment) -> dict[str, float | None]:
    """When the simulator wrote each transaction's ``confirmed`` frame to the listener's WebSocket, by tid.

    None for a transaction nobody was subscribed to when it was approved: its frame went
    out only when the listener subscribed, a wait that is mfa-gate's own, so such an
    approval is timed from the control call instead (see ``_fill``).
    """
    return {
        found["tid"]: float(found["confirmedSentAt"]) if found.get("subscribersAtDecision") else None
        for found in deployment.control.transactions()
        if found.get("confirmedSentAt") is not None
    }


def _fill(
    run: ReleaseRun, records: list[Approval], times: dict[str, ActionTimes], sent: dict[str, float | None]
) -> None:
    """Each approval's latency from the simulator sending ``confirmed``, split at ``released_at``.

    An approval the listener was not yet subscribed to is timed from the control call.
    """
    for record in records:
        found = times[record.action_id]
        assert found.started_at is not None and found.released_at is not None
        if record.tid not in sent:
            raise RuntimeError(f"the simulator never sent 'confirmed' for transaction {record.tid}")
        pushed = sent[record.tid]
        if pushed is None:
            run.unsubscribed += 1
        else:
            run.push.append(pushed - record.called)
        start = record.called if pushed is None else pushed
        run.latency.append(found.started_at - start)
        run.listener.append(found.released_at - start)
        run.queue.append(found.started_at - found.released_at)
        run.approve_call.append(record.answered - record.called)
    if records and not run.push:
        raise RuntimeError("the listener had subscribed to none of the approved transactions; see its log")


def allow_path(reader: StoreReader, submitter: RestSubmitter, *, count: int, rate: float, warmup: int) -> list[float]:
    """REST submit -> execute start of actions the policy allows, ``rate`` per second (seconds)."""
    sent: dict[str, float] = {}
    pacer = Pacer(rate)
    for index in range(warmup + count):
        pacer.wait(index)
        before = time.time()
        action_id = submitter.submit("allow")
        if index >= warmup:
            sent[action_id] = before
    times = wait_until_started(reader, list(sent), done="finished", timeout=60 + count / rate)
    return [(times[i].started_at or 0.0) - before for i, before in sent.items()]


def gated_rate(
    deployment: Deployment, reader: StoreReader, submitter: RestSubmitter, *, count: int, concurrency: int, warmup: int
) -> RateRun:
    """Gated actions end to end with the simulator approving at once: first REST submit -> last finished."""
    deployment.control.set_decision("approve")
    try:
        warm = submitter.submit_many("mfa", warmup, concurrency=concurrency)
        wait_until_started(reader, warm, done="finished", timeout=60)
        cpu, own = cpu_snapshot(deployment), time.process_time()
        first = time.time()
        ids = submitter.submit_many("mfa", count, concurrency=concurrency)
        times = wait_until_started(reader, ids, done="finished", timeout=120 + count / 5)
        used = cpu_per_item(cpu, cpu_snapshot(deployment), count)
        client = _own_ms_per_item(own, count)
    finally:
        deployment.control.set_decision("manual")
    return RateRun(count, max(t.finished_at or 0.0 for t in times.values()) - first, used, client_cpu_ms=client)


def scale(
    deployment: Deployment,
    reader: StoreReader,
    *,
    pending: int,
    approvals: int,
    rate: float,
    create_concurrency: int,
    log: Callable[[str], None],
    stage: Callable[[str], AbstractContextManager[None]] = lambda _: nullcontext(),
) -> ScaleRun:
    """One listener holding ``pending`` approvals: memory, resume after a restart, release latency.

    ``approvals`` of them, spread evenly over the creation order, are approved ``rate`` per
    second while the others stay pending (all of them when ``approvals >= pending``).
    ``stage(name)`` wraps each stage (``create``, ``resume``, ``release``), e.g. to profile it.

    The actions are created through mfa-gate's submission path in this process
    (``tasks.submission.submit``: validation, policy, store row, gate message), skipping
    only the HTTP hop; the real gate workers open a real simulator transaction for each
    and the listener subscribes to every one on its WebSocket.
    """
    started = time.time()
    with stage("create"):
        ids = bulk_submit(reader, pending, concurrency=create_concurrency)
        log(f"  {pending} submitted in {time.time() - started:.1f}s; waiting for the gate and the listener")
        wait_until_started(reader, ids, done="tid", timeout=600)
        seen = wait_subscribed(deployment.control, pending, timeout=300, poll=0.5)
    create_seconds = seen - started
    learning_peak, _ = memory_mb(deployment.listener.process.pid)
    log(f"  {pending} pending and subscribed after {create_seconds:.1f}s; restarting the listener")

    deployment.stop_listener()
    wait_subscribed(deployment.control, 0, at_least=False, timeout=60)
    spawned = time.time()
    deployment.start_listener()
    with stage("resume"):
        resumed = wait_subscribed(deployment.control, pending, timeout=300, poll=0.1)
    chosen = ids[:: max(1, len(ids) // approvals)][:approvals]
    log(f"  resumed in {resumed - spawned:.1f}s; approving {len(chosen)} of them at {rate:g}/s")

    times = reader.times(chosen)
    run = ReleaseRun(pending=pending, rate=rate)
    records: list[Approval] = []
    with stage("release"):
        pacer = Pacer(rate)
        for index, action_id in enumerate(chosen):
            pacer.wait(index)
            tid = times[action_id].tid
            assert tid is not None
            before = time.time()
            deployment.control.approve(tid)
            records.append(Approval(action_id, tid, before, time.time()))
        done = wait_until_started(reader, chosen, done="finished", timeout=300 + len(chosen) / rate)
    _fill(run, records, done, confirmed_sent(deployment))
    resumed_peak, _ = memory_mb(deployment.listener.process.pid)
    return ScaleRun(
        pending=pending,
        create_seconds=create_seconds,
        peak_rss_mb_learning=learning_peak,
        peak_rss_mb_resumed=resumed_peak,
        resume_seconds=resumed - spawned,
        release=run,
    )


def bulk_submit(reader: StoreReader, count: int, *, concurrency: int, batch: int = 250) -> list[str]:
    """Submit ``count`` gated actions in this process through ``tasks.submission.submit``.

    Batches wait for the gate workers to catch up, so no gate message waits past the
    maintenance grace period (which would send it again and measure the re-sends).
    """
    from tasks.runtime import get_runtime
    from tasks.submission import SubmitRequest, submit

    runtime = get_runtime()

    def one(n: int) -> str:
        agent, user = AGENTS[n % len(AGENTS)], USERS[n % len(USERS)]
        request = SubmitRequest(action=NOOP_ACTION, user=user, params={"gate": "mfa", "n": n})
        return submit(runtime, request, agent=agent, source_ip="127.0.0.1", actor=f"agent:{agent}").action.id

    ids: list[str] = []
    with ThreadPoolExecutor(concurrency) as pool:
        for first in range(0, count, batch):
            ids += pool.map(one, range(first, min(count, first + batch)))
            while reader.count(["submitted"]) > batch:
                time.sleep(0.1)
    return ids
