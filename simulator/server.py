"""Serving the simulator with uvicorn: blocking (`serve`, used by the CLI) or in a
background thread (`SimulatorServer`, used by the demo and the unit tests).

Both bind the listening socket themselves before uvicorn starts, so port 0 gives a free
port whose number is known up front, and both refuse production and non-loopback hosts.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Self

import uvicorn

from simulator.app import create_app
from simulator.guard import refuse_in_production, refuse_non_loopback
from simulator.state import SimulatorState

#: Seconds uvicorn waits for open connections (WebSockets) when stopping.
GRACEFUL_SHUTDOWN_SECONDS = 2
#: Seconds `SimulatorServer.start` waits for uvicorn to be ready.
STARTUP_TIMEOUT = 10.0


class _AnnouncingServer(uvicorn.Server):
    """A uvicorn server that calls `on_ready` once it accepts connections."""

    def __init__(self, config: uvicorn.Config, on_ready: Callable[[], None] | None = None) -> None:
        super().__init__(config)
        self._on_ready = on_ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and self._on_ready is not None:
            self._on_ready()


def _bind(host: str, port: int) -> socket.socket:
    """A bound TCP socket for `host`:`port` (0 = any free port); uvicorn calls listen()."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _config(state: SimulatorState, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(
        create_app(state),
        log_level=log_level,
        lifespan="on",
        # The confirmation channel runs without compression on both ends.
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )


def serve(
    host: str,
    port: int,
    state: SimulatorState,
    *,
    log_level: str = "info",
    allow_non_loopback: bool = False,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve the simulator until SIGINT/SIGTERM (blocking).

    Args:
        host, port: where to listen; port 0 picks a free port.
        state: the simulator's state.
        log_level: uvicorn's log level.
        allow_non_loopback: permit a host that is not loopback (development containers).
        on_ready: called with the base URL (``http://HOST:PORT``) once connections are
            accepted.

    Raises:
        SimulatorRefused: MFA_GATE_ENV=production, or a non-loopback host not allowed.
        OSError: the address cannot be bound.
    """
    refuse_in_production()
    refuse_non_loopback(host, allow_non_loopback=allow_non_loopback)
    sock = _bind(host, port)
    url = _url(sock)
    server = _AnnouncingServer(_config(state, log_level), None if on_ready is None else lambda: on_ready(url))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


class SimulatorServer:
    """The simulator on a loopback port, served by uvicorn in a background thread.

    Use as a context manager::

        with SimulatorServer(state) as server:
            client = RublonClient(api_server=server.url, ...)

    Args:
        state: the simulator's state (tests may change it while serving).
        host: a loopback address.
        port: 0 (default) for a free port.
        log_level: uvicorn's log level.

    Raises (from `start`):
        SimulatorRefused: MFA_GATE_ENV=production or a non-loopback host.
        RuntimeError: uvicorn did not come up within `STARTUP_TIMEOUT` seconds.
    """

    def __init__(self, state: SimulatorState, *, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"):
        self.state = state
        self._host = host
        self._port = port
        self._log_level = log_level
        self._sock: socket.socket | None = None
        self._server: _AnnouncingServer | None = None
        self._thread: threading.Thread | None = None
        self._url: str | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:41234`` (only once started)."""
        if self._url is None:
            raise RuntimeError("the simulator server is not started")
        return self._url

    def start(self) -> Self:
        """Start serving; returns once connections are accepted."""
        refuse_in_production()
        refuse_non_loopback(self._host, allow_non_loopback=False)
        self._sock = _bind(self._host, self._port)
        self._server = _AnnouncingServer(_config(self.state, self._log_level))
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, name="rublon-simulator", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the Rublon simulator did not start")
            time.sleep(0.01)
        self._url = _url(self._sock)
        return self

    def stop(self) -> None:
        """Stop serving and wait for the thread (open WebSockets get a close frame)."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=GRACEFUL_SHUTDOWN_SECONDS + 5)
        if self._sock is not None:
            self._sock.close()
        self._server = self._thread = self._sock = None
        self._url = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
