"""A whole mfa-gate deployment of real processes on loopback, for tests, the chaos suite and the benchmark.

Its own Redis on a free port, the simulator, the web process, Celery workers per queue,
beat, and listeners, all as child processes sharing one environment.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis

from cli.processes import Child, celery_worker, free_port, python, start, wait_http, wait_log

TEST_SYSTEM_TOKEN = "ABCDEF0123456789ABCDEF0123456789"
TEST_SECRET_KEY = "stack-secret-key"


def start_redis(port: int, workdir: Path, *, appendonly: bool = True) -> Child:
    """A private redis-server on 127.0.0.1:``port`` (AOF on, as in production)."""
    workdir.mkdir(parents=True, exist_ok=True)
    argv = [
        "redis-server",
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--dir",
        str(workdir),
        "--appendonly",
        "yes" if appendonly else "no",
        "--appendfsync",
        "everysec",
        "--maxmemory-policy",
        "noeviction",
    ]
    child = start(f"redis-{port}", argv, env=dict(os.environ), log_dir=workdir)
    client = redis.Redis(port=port, socket_connect_timeout=0.5)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            client.ping()
            return child
        except redis.RedisError:
            time.sleep(0.05)
    raise RuntimeError(f"redis-server on port {port} did not start; see {child.log_path}")


@dataclass
class Stack:
    """A running deployment. ``children`` maps process names to their Child."""

    workdir: Path
    env: dict[str, str]
    web_url: str
    simulator_url: str
    redis_port: int
    children: dict[str, Child] = field(default_factory=dict)

    def start_process(self, name: str) -> Child:
        """(Re)start one process type by name: web, listener-N, worker-gate-N, worker-execute-N, beat, simulator."""
        old = self.children.get(name)
        if old is not None:
            old.stop()  # also closes the log of a process that was killed
        argv, ready = self._command(name)
        child = start(name, argv, env=self.env, log_dir=self.workdir / "logs")
        self.children[name] = child
        ready(child)
        return child

    def _command(self, name: str) -> tuple[list[str], Callable[[Child], None]]:
        kind = name.rsplit("-", 1)[0] if name[-1].isdigit() else name
        if kind == "web":
            port = self.web_url.rsplit(":", 1)[1]
            return (
                python("-m", "cli", "web", "--port", port),
                lambda c: wait_http(f"{self.web_url}/healthz", child=c, timeout=60),
            )
        if kind == "simulator":
            port = self.simulator_url.rsplit(":", 1)[1]
            argv = simulator_command(port)
            return argv, lambda c: wait_http(f"{self.simulator_url}/_simulator/transactions", child=c)
        if kind == "listener":
            return python("-m", "cli", "listener", "--name", name), lambda c: wait_log(c, "started", timeout=60)
        if kind.startswith("worker-"):
            queues = kind.removeprefix("worker-").replace("+", ",")
            return celery_worker(queues, name=name, concurrency=2), lambda c: wait_log(c, "ready", timeout=90)
        if kind == "beat":
            schedule = self.workdir / "beat-schedule"
            argv = python("-m", "celery", "-A", "tasks", "beat", "-s", str(schedule), "-l", "INFO")
            return argv, lambda c: wait_log(c, "beat: Starting", timeout=60)
        raise ValueError(f"unknown process {name!r}")

    def stop(self) -> None:
        for child in reversed(list(self.children.values())):
            child.stop(timeout=15)

    def redis(self) -> redis.Redis:
        return redis.Redis(port=self.redis_port)

    def restart_redis(self, *, down_seconds: float = 0.5, crash: bool = False, wipe: bool = False) -> None:
        """Stop Redis, wait, and start it again on the same port.

        Args:
            crash: SIGKILL instead of SIGTERM (with ``appendfsync everysec`` up to a second
                of writes is lost); otherwise Redis writes its AOF before it exits.
            wipe: also delete its data files, as a Redis without persistence forgets every
                queued and un-acked message on restart.
        """
        child = self.children["redis"]
        if crash:
            child.kill()
        child.stop()
        if wipe:
            folder = self.workdir / "redis"
            shutil.rmtree(folder / "appendonlydir", ignore_errors=True)
            (folder / "dump.rdb").unlink(missing_ok=True)
        time.sleep(down_seconds)
        self.children["redis"] = start_redis(self.redis_port, self.workdir / "redis")

    def queue_length(self, queue: str) -> int:
        """Messages waiting in a Celery queue on Redis (kombu keeps one list per queue)."""
        with self.redis() as client:
            return int(client.llen(queue))

    def api(self, credential: str) -> httpx.Client:
        """An HTTP client for the REST API with an agent's bearer credential."""
        return httpx.Client(base_url=self.web_url, headers={"Authorization": f"Bearer {credential}"}, timeout=30)


def simulator_command(
    port: str, *, users: Iterable[str] = (), expires_in: float = 120, token_ttl: float | None = None
) -> list[str]:
    """The simulator's command line with the stack's app credentials and users (plus ``users``)."""
    argv = python(
        "-m",
        "simulator",
        "--port",
        port,
        "--decision",
        "manual",
        "--system-token",
        TEST_SYSTEM_TOKEN,
        "--secret-key",
        TEST_SECRET_KEY,
        "--expires-in",
        f"{expires_in:g}",
    )
    if token_ttl is not None:
        argv += ["--token-ttl", f"{token_ttl:g}"]
    return argv + [f"--user={spec}" for spec in (*SIM_USERS, *users)]


SIM_USERS = [
    "alice:alice@example.com:active",
    "bob:bob@example.com:active",
    "carol:carol@example.com:active",
    "dave:dave@example.com:bypass",
    "erin:erin@example.com:denied",
]


@contextmanager
def running_stack(
    workdir: Path,
    *,
    database_url: str,
    policy_file: Path,
    directory_file: Path,
    processes: tuple[str, ...] = (
        "simulator",
        "web",
        "worker-gate+maintenance-1",
        "worker-execute-1",
        "beat",
        "listener-1",
    ),
    extra_env: dict[str, str] | None = None,
) -> Iterator[Stack]:
    """Start a deployment; stop every process on exit."""
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    redis_port, web_port, sim_port = free_port(), free_port(), free_port()
    redis_child = start_redis(redis_port, workdir / "redis")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("MFA_GATE_", "RUBLON_"))}
    env.update(
        {
            "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            "DATABASE_URL": database_url,
            "RUBLON_API_SERVER": f"http://127.0.0.1:{sim_port}",
            "RUBLON_SYSTEM_TOKEN": TEST_SYSTEM_TOKEN,
            "RUBLON_SECRET_KEY": TEST_SECRET_KEY,
            "MFA_GATE_POLICY_FILE": str(policy_file),
            "MFA_GATE_DIRECTORY_FILE": str(directory_file),
            "MFA_GATE_PUBLIC_URL": f"http://127.0.0.1:{web_port}",
            "MFA_GATE_MAINTENANCE_INTERVAL": "1",
            "MFA_GATE_LISTENER_POLL_INTERVAL": "1",
            "MFA_GATE_DISPATCH_GRACE_SECONDS": "5",
            "MFA_GATE_GATE_GRACE_SECONDS": "5",
            "MFA_GATE_CONFIRM_LEASE_SECONDS": "5",
            "MFA_GATE_EXECUTE_TIME_LIMIT": "20",
            "MFA_GATE_EXECUTE_LEASE_SECONDS": "30",
            "MFA_GATE_VISIBILITY_TIMEOUT": "60",
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
        }
    )
    env.update(extra_env or {})
    stack = Stack(
        workdir=workdir,
        env=env,
        web_url=f"http://127.0.0.1:{web_port}",
        simulator_url=f"http://127.0.0.1:{sim_port}",
        redis_port=redis_port,
    )
    stack.children["redis"] = redis_child
    try:
        # The web process creates the schema; start it before the rest.
        ordered = sorted(processes, key=lambda name: (name != "simulator", name != "web"))
        for name in ordered:
            stack.start_process(name)
        yield stack
    finally:
        stack.stop()
