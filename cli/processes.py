"""Starting the real processes of mfa-gate as children: for the demo, the tests and the chaos suite."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Child:
    """One child process with its log file."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    _log: IO[bytes] = field(repr=False)
    # Where this run's output starts in the log: a restarted process appends to the same
    # file, and readiness checks must not be fooled by the previous run's lines.
    log_offset: int = 0

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        # Stragglers of the group (a pool child whose parent died first) go too.
        self.signal_group(signal.SIGKILL)
        self._log.close()

    def signal_group(self, sig: int) -> None:
        """Send ``sig`` to this child's process group (quietly, when the group is gone)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)

    def descendants(self) -> list[int]:
        """Pids of the processes this child started (a Celery worker's pool), read from /proc."""
        found: list[int] = []
        todo = [self.process.pid]
        while todo:
            pid = todo.pop()
            try:
                text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
            except OSError:
                continue
            for part in text.split():
                found.append(int(part))
                todo.append(int(part))
        return found

    def kill(self) -> None:
        """SIGKILL the whole process group (the worker and its pool children)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)

    def log_text(self) -> str:
        """The whole log file, earlier runs of the same name included."""
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def own_log_text(self) -> str:
        """What this run of the process wrote (not earlier runs logged to the same file)."""
        if not self._log.closed:
            self._log.flush()
        with self.log_path.open("rb") as handle:
            handle.seek(self.log_offset)
            return handle.read().decode(errors="replace")


def start(name: str, argv: Sequence[str], *, env: Mapping[str, str], log_dir: Path) -> Child:
    """Start ``argv`` in its own process group, output to ``log_dir/name.log``."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    log = log_path.open("ab")
    offset = log.tell()
    process = subprocess.Popen(
        list(argv),
        env=dict(env),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    return Child(name, process, log_path, log, offset)


def python(*args: str) -> list[str]:
    """A command line running this interpreter."""
    return [sys.executable, *args]


def celery_worker(queues: str, *, name: str, concurrency: int = 2, pool: str = "prefork") -> list[str]:
    """The command line of a Celery worker on ``queues``."""
    return python(
        "-m",
        "celery",
        "-A",
        "tasks",
        "worker",
        "-Q",
        queues,
        "-n",
        f"{name}@%h",
        "-P",
        pool,
        "-c",
        str(concurrency),
        "--without-gossip",
        "--without-mingle",
        "-l",
        "INFO",
    )


def wait_http(url: str, *, timeout: float = 20.0, child: Child | None = None) -> None:
    """Wait until ``url`` answers; raises RuntimeError naming the child's log when it does not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child is not None and not child.alive():
            raise RuntimeError(f"{child.name} exited early; see {child.log_path}:\n{child.log_text()[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(url, timeout=1.0)
            return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout}s" + (f"; see {child.log_path}" if child else ""))


def wait_log(child: Child, text: str, *, timeout: float = 30.0) -> None:
    """Wait until ``text`` shows in what this run of the child logged."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in child.own_log_text():
            return
        if not child.alive():
            raise RuntimeError(f"{child.name} exited early; see {child.log_path}:\n{child.log_text()[-2000:]}")
        time.sleep(0.1)
    raise RuntimeError(f"{child.name} did not log {text!r} within {timeout}s; see {child.log_path}")
