"""Running the chaos suite: the deployment, the agents, the people answering, the faults, the verdict.

``run(ChaosConfig(...))`` does everything and returns a :class:`ChaosResult`; ``main()`` is
the command line (``python -m chaos``). The run is bounded: submissions take a fixed
window, every fault is bounded, and waiting for the actions to settle has a deadline.
Every process is stopped at the end, also after an error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import psycopg

from chaos.faults import LISTENERS, FaultEvent, Faults, schedule
from chaos.report import ChaosResult, figures, format_table
from cli.stack import Stack, running_stack
from cli.target import CountingTarget
from config.settings import DEV_AUDIT_KEY
from policies import hash_credential
from policies.directory import Agent, Directory, User, render_directory
from simulator.control import SimulatorControl, SimulatorControlError
from store import ActionStatus, Store

log = logging.getLogger("chaos")
S = ActionStatus

DEFAULT_PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
AGENT = "chaos-agent"
USERS = ("alice", "bob")

# The deployment: two execute workers (prefork, two children each), the gate and
# maintenance queues on a third, beat, and two listeners.
PROCESSES = (
    "simulator",
    "web",
    "worker-gate+maintenance-1",
    "worker-execute-1",
    "worker-execute-2",
    "beat",
    *LISTENERS,
)

# Short timings so a stranded action is taken over within seconds (they still nest:
# handler < hard limit 15 s < executing lease 20 s < visibility timeout 60 s).
TIMING_ENV = {
    "MFA_GATE_MAINTENANCE_INTERVAL": "1",
    "MFA_GATE_LISTENER_POLL_INTERVAL": "1",
    "MFA_GATE_DISPATCH_GRACE_SECONDS": "4",
    "MFA_GATE_GATE_GRACE_SECONDS": "4",
    "MFA_GATE_CONFIRM_LEASE_SECONDS": "10",
    "MFA_GATE_EXECUTE_TIME_LIMIT": "15",
    "MFA_GATE_EXECUTE_LEASE_SECONDS": "20",
    "MFA_GATE_VISIBILITY_TIMEOUT": "60",
}

# What the simulated person does with each action, and how often.
PLANS: dict[str, int] = {
    "approve": 62,  # approved: must run exactly once (or end ambiguous)
    "deny": 12,  # rejected on the phone
    "expire": 6,  # Rublon reports the transaction expired
    "deadline": 8,  # nobody answers; the policy's 10 s deadline passes
    "forge": 6,  # a forged "confirmed" message with a token Rublon never issued
    "cancel": 6,  # the agent withdraws it through the API
}

POLICY = """
version = 1

[defaults]
methods = ["push"]
timeout_seconds = 60
on_unavailable = "block"
on_bypass = "block"
mode = "promptless"

[[rules]]
name = "payments"
action = "http.request"
when = ["params.method == 'POST'"]
outcome = "mfa"

[[rules]]
name = "short-deadline"
action = "http.request"
when = ["params.url matches '*/deadline/*'"]
outcome = "mfa"
timeout_seconds = 10

[limits]
max_pending_per_user = 100000
max_pending_per_agent = 100000
max_requests_per_agent_per_hour = 1000000
suspend_agent_after_refusals = 1000000

[http]
allowed_schemes = ["http"]
allowed_hosts = ["127.0.0.1"]
"""


@dataclass
class ChaosConfig:
    """What to run.

    Args:
        actions: how many gated actions to submit.
        database: ``sqlite`` or ``postgres`` (a fresh database on the local server, dropped after).
        quick: the short version: each fault once, a shorter window.
        output: where to write the JSON result (None: do not write).
        seed: the random seed (plans, think times, fault timing).
        workdir: where logs, Redis data and the SQLite file go (None: a new temporary folder,
            deleted after a passing run unless ``keep``).
        submit_seconds: the submission window (None: 0.5 s per action quick, 0.17 s full).
        settle_timeout: how long to wait for every action to settle after the last fault.
    """

    actions: int = 1000
    database: str = "sqlite"
    quick: bool = False
    output: Path | None = None
    seed: int = 4
    workdir: Path | None = None
    keep: bool = False
    pg_admin_url: str = DEFAULT_PG_ADMIN_URL
    submit_seconds: float | None = None
    settle_timeout: float = 240.0

    def window(self) -> float:
        if self.submit_seconds is not None:
            return self.submit_seconds
        return max(30.0, self.actions * (0.5 if self.quick else 0.17))


@dataclass
class Submission:
    """One action as the agent submitted it."""

    index: int
    key: str
    plan: str
    action_id: str | None = None
    status_code: int | None = None
    tries: int = 0
    error: str | None = None


@dataclass
class Decisions:
    """What the simulated people did, for the report."""

    done: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)  # the simulator or API said no (already final)


# -- setting up ------------------------------------------------------------------------------
def write_config(folder: Path, credential: str) -> tuple[Path, Path]:
    """The chaos policy and directory files; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    policy, directory = folder / "policy.toml", folder / "directory.toml"
    policy.write_text(POLICY)
    people = Directory(
        users=[User(name=user, email=f"{user}@example.com") for user in USERS],
        agents=[Agent(name=AGENT, credential_sha256=hash_credential(credential), users=USERS)],
    )
    directory.write_text(render_directory(people))
    return policy, directory


@contextmanager
def database(config: ChaosConfig, workdir: Path) -> Iterator[str]:
    """A database URL for the run: a SQLite file, or a fresh PostgreSQL database dropped afterwards."""
    if config.database == "sqlite":
        yield f"sqlite:///{workdir / 'store.db'}"
        return
    if config.database != "postgres":
        raise ValueError(f"--database must be sqlite or postgres, not {config.database!r}")
    name = f"mfagate_chaos_{secrets.token_hex(4)}"
    try:
        with psycopg.connect(config.pg_admin_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        raise RuntimeError(f"cannot create a database on {config.pg_admin_url}: {exc}") from exc
    try:
        yield f"{config.pg_admin_url.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(config.pg_admin_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def make_plans(count: int, rng: random.Random) -> list[str]:
    """``count`` plans drawn with the PLANS weights, each kind at least once when count allows."""
    kinds, weights = list(PLANS), list(PLANS.values())
    plans = rng.choices(kinds, weights=weights, k=count)
    if count >= len(kinds) * 3:
        for n, kind in enumerate(kinds):
            plans[n * 2] = kind  # every kind early on, so even a short run sees each
    return plans


# -- the run ---------------------------------------------------------------------------------
class ChaosRun:
    """One run: threads for the agent, the people and the faults, on one stack."""

    def __init__(self, config: ChaosConfig, stack: Stack, store: Store, target: CountingTarget, credential: str):
        self.config, self.stack, self.store, self.target = config, stack, store, target
        self.credential = credential
        self.rng = random.Random(config.seed)
        self.began = time.monotonic()
        self.stop = threading.Event()
        self.submitted_all = threading.Event()
        self.faults_done = threading.Event()
        plans = make_plans(config.actions, self.rng)
        self.submissions = [Submission(n, f"chaos-{config.seed}-{n}", plan) for n, plan in enumerate(plans)]
        self.by_key = {s.key: s for s in self.submissions}
        self.decisions = Decisions()
        self.events: list[FaultEvent] = []
        self.unexpected_exits: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.faults = Faults(stack, store, target, random.Random(config.seed + 1), self.clock)

    def clock(self) -> float:
        return time.monotonic() - self.began

    def run(self) -> ChaosResult:
        window = self.config.window()
        threads = [
            threading.Thread(target=self._guard(self._submit, window), name="agent", daemon=True),
            threading.Thread(target=self._guard(self._decide), name="people", daemon=True),
            threading.Thread(target=self._guard(self._inject, window), name="faults", daemon=True),
            threading.Thread(target=self._guard(self._supervise), name="supervisor", daemon=True),
        ]
        for thread in threads:
            thread.start()
        try:
            # Bounded: the window, plus the time a fault may take, plus the settle deadline.
            self.submitted_all.wait(window * 2 + 300)
            self.faults_done.wait(window + 600)
            last_fault = self.clock()  # the last submission and the last fault are behind us
            settled_at = self._settle(self.config.settle_timeout)
            quiet_hits = self.target.total()
            time.sleep(3.0)  # a late duplicate delivery would land now
            late_hits = self.target.total() - quiet_hits
        finally:
            self.stop.set()
            for thread in threads:
                thread.join(30)
        return figures(
            self,
            settle_seconds=None if settled_at is None else settled_at - last_fault,
            late_hits=late_hits,
        )

    def _guard(self, body: Any, *args: Any) -> Any:
        def run() -> None:
            try:
                body(*args)
            except Exception as exc:  # reported in the result; the run still ends and cleans up
                log.exception("chaos thread %s failed", threading.current_thread().name)
                self.errors.append(f"{threading.current_thread().name}: {type(exc).__name__}: {exc}")
            finally:
                if body == self._submit:
                    self.submitted_all.set()
                if body == self._inject:
                    self.faults_done.set()

        return run

    # -- the agent ---------------------------------------------------------------------------
    def _submit(self, window: float) -> None:
        rng = random.Random(self.config.seed + 2)
        start = time.monotonic()
        with httpx.Client(
            base_url=self.stack.web_url, headers={"Authorization": f"Bearer {self.credential}"}, timeout=30
        ) as api:
            for submission in self.submissions:
                due = start + window * submission.index / max(1, len(self.submissions))
                while not self.stop.is_set() and time.monotonic() < due:
                    time.sleep(min(0.05, due - time.monotonic()))
                if self.stop.is_set():
                    return
                self._post(api, submission, rng)

    def _post(self, api: httpx.Client, submission: Submission, rng: random.Random) -> None:
        delay = rng.randint(50, 800)
        kind = "deadline" if submission.plan == "deadline" else "pay"
        body = {
            "action": "http.request",
            "user": USERS[submission.index % len(USERS)],
            "params": {
                "method": "POST",
                "url": f"{self.target.url}/slow/{delay}/{kind}/{submission.index}",
                "json": {"amount": submission.index % 90 + 10, "recipient": f"chaos-{submission.index}"},
            },
            "idempotency_key": submission.key,
        }
        deadline = time.monotonic() + 120
        while not self.stop.is_set() and time.monotonic() < deadline:
            submission.tries += 1
            try:
                response = api.post("/v1/actions", json=body)
            except httpx.HTTPError as exc:  # the web process is down or restarting: retry, same key
                submission.error = type(exc).__name__
                time.sleep(0.3)
                continue
            submission.status_code = response.status_code
            if response.status_code >= 500:
                time.sleep(0.3)
                continue
            if response.status_code in (200, 201):
                submission.action_id = response.json()["id"]
                submission.error = None
            else:
                submission.error = response.text[:300]
            return

    # -- the people --------------------------------------------------------------------------
    def _decide(self) -> None:
        rng = random.Random(self.config.seed + 3)
        think = 3.0 if not self.config.quick else 2.0
        due: dict[str, float] = {}
        tries: Counter[str] = Counter()
        decided: set[str] = set()
        with (
            SimulatorControl(self.stack.simulator_url) as control,
            httpx.Client(
                base_url=self.stack.web_url, headers={"Authorization": f"Bearer {self.credential}"}, timeout=30
            ) as api,
        ):
            while not self.stop.is_set():
                now = time.monotonic()
                try:
                    waiting = self.store.awaiting()
                except Exception as exc:  # a busy store: look again next round
                    log.warning("people: cannot read the store (%s)", type(exc).__name__)
                    waiting = []
                for action in waiting:
                    submission = self.by_key.get(action.idempotency_key or "")
                    if submission is None or action.id in decided or action.tid is None:
                        continue
                    when = due.setdefault(action.id, now + rng.uniform(0.0, think))
                    if now < when:
                        continue
                    tries[action.id] += 1
                    if self._answer(control, api, submission.plan, action.id, action.tid) or tries[action.id] >= 10:
                        decided.add(action.id)
                    else:
                        due[action.id] = now + 1.0
                self.stop.wait(0.4)

    def _answer(self, control: SimulatorControl, api: httpx.Client, plan: str, action_id: str, tid: str) -> bool:
        """Do what ``plan`` says; True when done (or pointless to retry)."""
        try:
            if plan == "approve":
                control.approve(tid)
            elif plan == "deny":
                control.deny(tid)
            elif plan == "expire":
                control.expire(tid)
            elif plan == "forge":
                if control.forge(tid, secrets.token_hex(30)) == 0:
                    return False  # no listener subscribed yet (one was restarting): try again
            elif plan == "cancel":
                response = api.post(f"/v1/actions/{action_id}/cancel")
                if response.status_code >= 500:
                    return False
                if response.status_code != 200:
                    self.decisions.refused[plan] += 1
                    return True
        except SimulatorControlError as exc:
            if exc.status_code is None or exc.status_code >= 500:
                return False
            self.decisions.refused[plan] += 1  # already final (deadline passed, cancelled): fine
            return True
        except httpx.HTTPError:
            return False
        self.decisions.done[plan] += 1
        return True

    # -- the faults --------------------------------------------------------------------------
    def _inject(self, window: float) -> None:
        start = time.monotonic()
        for at, fault in schedule(quick=self.config.quick, window=window, rng=self.rng):
            while not self.stop.is_set() and time.monotonic() - start < at:
                time.sleep(0.1)
            if self.stop.is_set():
                return
            event = self.faults.inject(fault)
            log.info(
                "fault %s at %.1fs took %.1fs %s%s",
                fault,
                event.at,
                event.took,
                event.detail,
                f" ERROR {event.error}" if event.error else "",
            )
            self.events.append(event)

    # -- the supervisor ----------------------------------------------------------------------
    def _supervise(self) -> None:
        """Restart processes that died on their own (not by a fault), and note each one."""
        while not self.stop.wait(1.0):
            for record in self.faults.restart_dead():
                log.warning("%s exited on its own (code %s); restarted", record["process"], record["exit_code"])
                self.unexpected_exits.append(record)

    # -- settling ----------------------------------------------------------------------------
    def _settle(self, timeout: float) -> float | None:
        """Wait until no action is pending, queued or executing; the clock then, or None on timeout."""
        unsettled = {S.SUBMITTED, S.AWAITING_APPROVAL, S.QUEUED, S.EXECUTING}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                counts = self.store.count_by_status()
            except Exception:  # a busy store: ask again
                counts = {S.SUBMITTED.value: 1}
            if not any(counts.get(str(status), 0) for status in unsettled):
                return self.clock()
            time.sleep(1.0)
        return None


def run(config: ChaosConfig) -> ChaosResult:
    """Run the chaos suite once; every process it started is stopped before it returns."""
    workdir = config.workdir or Path(tempfile.mkdtemp(prefix="mfa-gate-chaos-"))
    workdir.mkdir(parents=True, exist_ok=True)
    credential = secrets.token_urlsafe(24)
    began = time.monotonic()
    with ExitStack() as cleanup:
        database_url = cleanup.enter_context(database(config, workdir))
        policy, directory = write_config(workdir / "config", credential)
        target = cleanup.enter_context(CountingTarget(max_delay=2.0))
        log.info("starting the deployment in %s (%s)", workdir, config.database)
        stack = cleanup.enter_context(
            running_stack(
                workdir / "run",
                database_url=database_url,
                policy_file=policy,
                directory_file=directory,
                processes=PROCESSES,
                extra_env=TIMING_ENV,
            )
        )
        store = Store(database_url, audit_key=stack.env.get("MFA_GATE_AUDIT_KEY", DEV_AUDIT_KEY).encode())
        cleanup.callback(store.dispose)
        started = time.monotonic() - began
        log.info("deployment up after %.1fs; submitting %s actions", started, config.actions)
        result = ChaosRun(config, stack, store, target, credential).run()
        result.timings["startup_seconds"] = round(started, 1)
    result.timings["total_seconds"] = round(time.monotonic() - began, 1)
    result.config = {
        "actions": config.actions,
        "database": config.database,
        "quick": config.quick,
        "seed": config.seed,
        "window_seconds": config.window(),
        "processes": list(PROCESSES),
        "timing": TIMING_ENV,
    }
    result.workdir = str(workdir)
    if config.output is not None:
        config.output.write_text(json.dumps(result.as_json(), indent=2, sort_keys=True) + "\n")
    if result.passed and config.workdir is None and not config.keep:
        shutil.rmtree(workdir, ignore_errors=True)
        result.workdir = None
    return result


# -- the command line ------------------------------------------------------------------------
def _stop_on_sigterm(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    """``python -m chaos``; exit code 0 only when nothing was lost, repeated, unreleased or refused-but-run."""
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    parser.add_argument("--actions", type=int, default=None, help="gated actions to submit (default 1000; quick 100)")
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--output", type=Path, default=Path("chaos-report.json"), help="JSON result file")
    parser.add_argument("--quick", action="store_true", help="the short version: ~100 actions, each fault once")
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--workdir", type=Path, default=None, help="keep logs and data here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder after a passing run")
    parser.add_argument("--pg-admin-url", default=DEFAULT_PG_ADMIN_URL)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    actions = args.actions if args.actions is not None else (100 if args.quick else 1000)
    if actions < 1:
        parser.error("--actions must be at least 1")
    config = ChaosConfig(
        actions=actions,
        database=args.database,
        quick=args.quick,
        output=args.output,
        seed=args.seed,
        workdir=args.workdir,
        keep=args.keep,
        pg_admin_url=args.pg_admin_url,
    )
    result = run(config)
    print(format_table(result))
    if config.output is not None:
        print(f"\nJSON written to {config.output}")
    if result.workdir:
        print(f"logs and data kept in {result.workdir}")
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
