"""A local HTTP target that counts what it receives, by ``Idempotency-Key`` (demo, tests, chaos)."""

from __future__ import annotations

import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class CountingTarget:
    """An HTTP server on 127.0.0.1 that records each request; ``/http503`` paths answer 503."""

    def __init__(self, port: int = 0) -> None:
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

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
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
