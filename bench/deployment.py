"""Starting the benchmark's deployment: mfa-gate's real processes plus a plain-Celery worker.

``cli.stack.running_stack`` starts Redis, web, the gate and execute workers and beat. The
benchmark starts the simulator itself (its transactions must outlive a 10,000-approval
run, so ``--expires-in`` is long, and it knows the benchmark's users), then the listener,
then the baseline worker with the execute worker's command line on queue ``bench``.

Settings are mfa-gate's production defaults for timing (maintenance every 5 s, listener
poll 2 s, 30 s dispatch grace), not the test suite's short ones.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import redis

from cli.processes import Child, celery_worker, start, wait_http, wait_log
from cli.stack import Stack, running_stack, simulator_command
from policies import hash_credential
from policies.directory import Agent, Directory, User, render_directory
from simulator.control import SimulatorControl

#: Users the benchmark's actions are for (in the directory and the simulator, all active).
USERS = tuple(f"bench-u{index:02d}" for index in range(20))
#: Agents submitting them; spreading 10,000 pending actions over agents and users is what
#: a real deployment sees, and keeps the per-user and per-agent pending counts realistic.
AGENTS = tuple(f"bench-agent-{index}" for index in range(10))
#: Seconds a simulator transaction, and the policy's approval deadline, stay open.
APPROVAL_WINDOW_SECONDS = 7200
#: The processes ``running_stack`` starts; the simulator and listener follow.
STACK_PROCESSES = ("web", "worker-gate+maintenance-1", "worker-execute-1", "beat")
#: mfa-gate's default timing settings (config/settings.py), in place of the test stack's.
PRODUCTION_TIMING = {
    "MFA_GATE_MAINTENANCE_INTERVAL": "5",
    "MFA_GATE_LISTENER_POLL_INTERVAL": "2",
    "MFA_GATE_DISPATCH_GRACE_SECONDS": "30",
    "MFA_GATE_GATE_GRACE_SECONDS": "60",
    "MFA_GATE_CONFIRM_LEASE_SECONDS": "30",
    "MFA_GATE_EXECUTE_TIME_LIMIT": "60",
    "MFA_GATE_EXECUTE_LEASE_SECONDS": "120",
    "MFA_GATE_VISIBILITY_TIMEOUT": "300",
}
PG_ADMIN_URL = os.environ.get("MFA_GATE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")

POLICY = f"""
version = 1

[defaults]
methods = ["push"]
timeout_seconds = {APPROVAL_WINDOW_SECONDS}
on_unavailable = "block"
on_bypass = "block"
mode = "promptless"

[[rules]]
name = "bench-allow"
action = "bench.noop"
when = ["params.gate == 'allow'"]
outcome = "allow"

[[rules]]
name = "bench-mfa"
action = "bench.noop"
when = ["params.gate == 'mfa'"]
outcome = "mfa"

[limits]
max_pending_per_user = 1000000
max_pending_per_agent = 1000000
max_requests_per_agent_per_hour = 1000000
suspend_agent_after_refusals = 1000000
"""


def credential(agent: str) -> str:
    """The bearer credential of a benchmark agent (a local, throwaway deployment)."""
    return f"bench-credential-of-{agent}-0123456789"


def write_config(folder: Path) -> tuple[Path, Path]:
    """Write the benchmark's policy and directory; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    people = Directory(
        users=[User(name=user, email=f"{user}@example.com") for user in USERS],
        agents=[
            Agent(name=agent, credential_sha256=hash_credential(credential(agent)), users=USERS) for agent in AGENTS
        ],
    )
    policy, directory = folder / "policy.toml", folder / "directory.toml"
    policy.write_text(POLICY)
    directory.write_text(render_directory(people))
    return policy, directory


@dataclass
class Deployment:
    """The running processes and the benchmark's handles on them."""

    stack: Stack
    workdir: Path
    database_url: str
    control: SimulatorControl
    redis: redis.Redis
    listener_name: str = "listener-1"
    _restarts: int = field(default=1, repr=False)

    @property
    def listener(self) -> Child:
        return self.stack.children[self.listener_name]

    def stop_listener(self) -> None:
        """Stop the listener (SIGTERM, as a deploy or a crash-restart would)."""
        self.listener.stop(timeout=30)

    def start_listener(self) -> Child:
        """Start a fresh listener under a new name (so its log, and its readiness, are its own)."""
        self._restarts += 1
        self.listener_name = f"listener-{self._restarts}"
        return self.stack.start_process(self.listener_name)


def _simulator(stack: Stack) -> Child:
    port = stack.simulator_url.rsplit(":", 1)[1]
    argv = simulator_command(
        port,
        users=[f"{user}:{user}@example.com:active" for user in USERS],
        expires_in=APPROVAL_WINDOW_SECONDS,
        token_ttl=600,
    )
    child = start("simulator", argv, env=stack.env, log_dir=stack.workdir / "logs")
    stack.children["simulator"] = child
    wait_http(f"{stack.simulator_url}/_simulator/health", child=child)
    return child


def _baseline_worker(stack: Stack) -> Child:
    from bench.baseline import BASELINE_QUEUE

    # The execute worker's own command line, pointed at the baseline app and queue.
    argv = celery_worker(BASELINE_QUEUE, name="baseline-1", concurrency=2)
    argv[argv.index("-A") + 1] = "bench.baseline"
    child = start("baseline-1", argv, env=stack.env, log_dir=stack.workdir / "logs")
    stack.children["baseline-1"] = child
    wait_log(child, "ready", timeout=90)
    return child


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh database on the local PostgreSQL server (``MFA_GATE_TEST_PG``), dropped afterwards."""
    name = f"mfagate_bench_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def database(choice: str, workdir: Path) -> Iterator[str]:
    """The database URL for ``choice``: ``sqlite`` (a file in ``workdir``), ``postgres`` (a fresh one), or a URL."""
    if choice == "sqlite":
        yield f"sqlite:///{workdir / 'store.db'}"
    elif choice == "postgres":
        with postgres_database() as url:
            yield url
    else:
        yield choice


@contextlib.contextmanager
def deployment(workdir: Path, *, database_url: str) -> Iterator[Deployment]:
    """Start everything; stop every process on exit.

    This process takes the deployment's environment (REDIS_URL, DATABASE_URL, RUBLON_*,
    MFA_GATE_*) while it runs, so the baseline producer and the in-process submissions
    talk to this deployment; the previous environment is restored on exit.

    Raises:
        RuntimeError: a process did not start (its log is named).
    """
    policy, directory = write_config(workdir / "config")
    extra = {**PRODUCTION_TIMING, "MFA_GATE_ACTION_MODULES": "bench.actions"}
    saved = dict(os.environ)
    with running_stack(
        workdir / "run",
        database_url=database_url,
        policy_file=policy,
        directory_file=directory,
        processes=STACK_PROCESSES,
        extra_env=extra,
    ) as stack:
        try:
            os.environ.update(stack.env)
            from config import get_settings

            get_settings.cache_clear()
            _simulator(stack)
            stack.start_process("listener-1")
            _baseline_worker(stack)
            with SimulatorControl(stack.simulator_url, timeout=30) as control:
                yield Deployment(
                    stack=stack, workdir=workdir, database_url=database_url, control=control, redis=stack.redis()
                )
        finally:
            os.environ.clear()
            os.environ.update(saved)
