"""A small client of the simulator's `/_simulator/` control endpoints (not Rublon's API).

Used by tests and the operator CLI to approve, deny or expire transactions, forge
confirmation messages, change the decision policy, users and fail mode, and read
statistics.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self

import httpx


class SimulatorControlError(RuntimeError):
    """A control call failed; `status_code` is the HTTP status (None: no answer)."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class SimulatorControl:
    """Steer a running simulator.

    Args:
        base_url: the simulator's base URL, e.g. ``http://127.0.0.1:8765``.
        timeout: seconds per call.
        transport: an httpx transport to use instead of the network.

    Every method raises `SimulatorControlError` when the simulator cannot be reached
    or answers with an error (404 unknown tid, 409 already final, 400 bad input).
    """

    def __init__(self, base_url: str, *, timeout: float = 10.0, transport: httpx.BaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url + "/_simulator", timeout=timeout, transport=transport)

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            response = self._http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise SimulatorControlError(f"simulator at {self.base_url} did not answer: {exc}") from exc
        if response.status_code >= 400:
            try:
                detail = response.json().get("error", response.text)
            except ValueError:
                detail = response.text
            raise SimulatorControlError(f"{method} /_simulator{path}: {detail}", response.status_code)
        return response.json()

    def health(self) -> bool:
        """True when the simulator answers."""
        return bool(self._call("GET", "/health").get("ok"))

    def transactions(self) -> list[dict[str, Any]]:
        """Every transaction with its state (pending, confirmed, denied, expired, cancelled)."""
        result: list[dict[str, Any]] = self._call("GET", "/transactions")["transactions"]
        return result

    def transaction(self, tid: str) -> dict[str, Any]:
        """One transaction as JSON (see `transactions`)."""
        result: dict[str, Any] = self._call("GET", f"/transactions/{tid}")
        return result

    def approve(self, tid: str) -> str:
        """Approve `tid` as the person would; returns the access token it was given."""
        token: str = self._call("POST", f"/transactions/{tid}/approve")["accessToken"]
        return token

    def deny(self, tid: str) -> None:
        """Deny `tid` as the person would."""
        self._call("POST", f"/transactions/{tid}/deny")

    def expire(self, tid: str) -> None:
        """Let `tid` expire now."""
        self._call("POST", f"/transactions/{tid}/expire")

    def forge(self, tid: str, token: str) -> int:
        """Push a `confirmed` message with a token never issued; returns subscribers reached."""
        reached: int = self._call("POST", f"/transactions/{tid}/forge", {"accessToken": token})["subscribers"]
        return reached

    def set_decision(self, decision: str, tid: str | None = None) -> str:
        """Set the default decision (or one transaction's): approve, deny, expire,
        manual, approve:SECONDS, deny:SECONDS. Returns the decision as understood.
        """
        body: dict[str, Any] = {"decision": decision}
        if tid is not None:
            body["tid"] = tid
        result: str = self._call("POST", "/decision", body)["decision"]
        return result

    def set_user(
        self, username: str, *, email: str, status: str = "active", methods: list[str] | None = None
    ) -> dict[str, Any]:
        """Add or replace a user; status is active, bypass or denied."""
        body: dict[str, Any] = {"email": email, "status": status}
        if methods is not None:
            body["methods"] = methods
        result: dict[str, Any] = self._call("PUT", f"/users/{username}", body)
        return result

    def stats(self) -> dict[str, Any]:
        """Calls per endpoint, pushes per tid, token counts, subscribers per tid."""
        result: dict[str, Any] = self._call("GET", "/stats")
        return result

    def fail(self, mode: str | None) -> None:
        """Make the API answer 503 (`unavailable`), sign wrongly (`bad_signature`), or
        behave again (None).
        """
        self._call("POST", "/fail", {"mode": mode})

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
