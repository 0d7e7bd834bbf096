"""A local HTTP target that counts what it receives, by ``Idempotency-Key`` (demo, tests, chaos)."""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _QuietServer(ThreadingHTTPServer):
    """Threading server that takes a client hanging up mid-answer (a killed worker) in its stride."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


SLOW_PATH = re.compile(r"^/slow/(\d{1,6})(?:/|$)")


def requested_delay(path: str, max_delay: float) -> float:
    """Seconds to hold the answer for ``path``: ``/slow/<milliseconds>/...`` asks for a delay."""
    match = SLOW_PATH.match(path)
    return 0.0 if match is None else min(int(match.group(1)) / 1000, max_delay)


class CountingTarget:
    """An HTTP server on 127.0.0.1 that records each request; ``/http503`` paths answer 503.

    A path ``/slow/<milliseconds>/...`` is counted at once and answered after that delay
    (at most ``max_delay`` seconds): a worker killed meanwhile has executed the action
    without learning the outcome, as with a slow real target.
    """

    def __init__(self, port: int = 0, *, max_delay: float = 5.0) -> None:
        self.received: Counter[str] = Counter()
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        target = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode(errors="replace") if length else ""
                key = self.headers.get("Idempotency-Key", "")
                with target._lock:
                    target.received[key] += 1
                    target.requests.append(
                        {
                            "method": self.command,
                            "path": self.path,
                            "key": key,
                            "body": body,
                            "headers": dict(self.headers),
                        }
                    )
                delay = requested_delay(self.path, max_delay)
                if delay:
                    time.sleep(delay)
                status = 503 if self.path.startswith("/http503") else 200
                payload = json.dumps({"ok": status == 200, "key": key}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

            def log_message(self, *_: Any) -> None:
                return

        self.server = _QuietServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="counting-target", daemon=True)

    def __enter__(self) -> CountingTarget:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def count(self, key: str) -> int:
        """How many requests carried ``Idempotency-Key: key``."""
        with self._lock:
            return self.received[key]

    def total(self) -> int:
        with self._lock:
            return sum(self.received.values())
