"""A small client for the mfa-gate REST API, for agent services.

    from agent_client import GateClient

    gate = GateClient("https://gate.internal", credential=os.environ["MFA_GATE_AGENT_CREDENTIAL"])
    handle = gate.submit("http.request", params={...}, user="alice", idempotency_key="order-42")
    print(handle.status()["status"])          # submitted, awaiting_approval, queued, ...
    final = handle.wait(timeout=300)           # returns when final or after the timeout
    handle.cancel()                            # before release only

It holds only the agent's credential and the gate's URL: no database, Redis or Rublon access.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

FINAL = frozenset({"succeeded", "failed", "denied", "rejected", "expired", "cancelled", "blocked"})
SERVER_WAIT_MAX = 60.0


class GateError(Exception):
    """The gate refused a call: ``status_code``, the ``field`` at fault and the gate's message."""

    def __init__(self, status_code: int, field: str | None, message: str) -> None:
        super().__init__(f"HTTP {status_code}: {field + ': ' if field else ''}{message}")
        self.status_code = status_code
        self.field = field
        self.message = message


class GateClient:
    """The REST API of one mfa-gate web process, as one agent.

    Args:
        base_url: the web process, e.g. ``http://127.0.0.1:8000``.
        credential: the agent's bearer credential.
        timeout: seconds for each HTTP call (waits add their own bound).
    """

    def __init__(
        self, base_url: str, *, credential: str, timeout: float = 30.0, transport: httpx.BaseTransport | None = None
    ) -> None:
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            timeout=timeout,
            transport=transport,
            headers={"Authorization": f"Bearer {credential}"},
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> GateClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def submit(
        self,
        action: str,
        *,
        params: dict[str, Any],
        user: str,
        context: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> ActionHandle:
        """Submit an action; returns at once with a handle (the gate never blocks on a person here).

        Raises:
            GateError: bad input (4xx naming the field), no right to act for ``user``, bad credential.
        """
        body: dict[str, Any] = {"action": action, "params": params, "user": user, "context": context or {}}
        if idempotency_key is not None:
            body["idempotency_key"] = idempotency_key
        data = self._call("POST", "/v1/actions", json=body)
        return ActionHandle(self, data["id"], data)

    def get(self, action_id: str) -> dict[str, Any]:
        """The current state of one of this agent's actions."""
        return self._call("GET", f"/v1/actions/{action_id}")

    def wait(self, action_id: str, timeout: float) -> dict[str, Any]:
        """Wait until the action is final or ``timeout`` seconds pass; returns its state either way."""
        deadline = time.monotonic() + timeout
        while True:
            left = max(0.0, deadline - time.monotonic())
            chunk = min(left, SERVER_WAIT_MAX)
            data = self._call("GET", f"/v1/actions/{action_id}/wait", params={"timeout": chunk}, timeout=chunk + 30.0)
            if data["status"] in FINAL or left <= chunk:
                return data

    def cancel(self, action_id: str) -> dict[str, Any]:
        """Withdraw an action that was not released yet (409 once it was)."""
        return self._call("POST", f"/v1/actions/{action_id}/cancel")

    def _call(self, method: str, path: str, *, timeout: float | None = None, **kwargs: Any) -> dict[str, Any]:
        extra: dict[str, Any] = {"timeout": timeout} if timeout is not None else {}
        response = self._http.request(method, path, **kwargs, **extra)
        if response.status_code >= 400:
            try:
                error = response.json().get("error", {})
            except ValueError:
                error = {}
            raise GateError(response.status_code, error.get("field"), error.get("message", response.text[:200]))
        result: dict[str, Any] = response.json()
        return result


class ActionHandle:
    """One submitted action: its id, the answer to the submission, and calls on it."""

    def __init__(self, client: GateClient, action_id: str, submitted: dict[str, Any]) -> None:
        self.client = client
        self.id = action_id
        self.submitted = submitted

    def __repr__(self) -> str:
        return f"ActionHandle(id={self.id!r}, submitted_status={self.submitted.get('status')!r})"

    def status(self) -> dict[str, Any]:
        """The action's current state (``status``, ``reason``, ``result``, ...)."""
        return self.client.get(self.id)

    def wait(self, timeout: float) -> dict[str, Any]:
        """Block up to ``timeout`` seconds for a final state; returns the state either way."""
        return self.client.wait(self.id, timeout)

    def cancel(self) -> dict[str, Any]:
        """Withdraw the action (the push is withdrawn); raises GateError 409 once released."""
        return self.client.cancel(self.id)
