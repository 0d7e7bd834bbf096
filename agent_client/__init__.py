"""The Python client an agent uses to reach mfa-gate. Imports nothing of the server."""

from agent_client.client import ActionHandle, GateClient, GateError

__all__ = ["ActionHandle", "GateClient", "GateError"]
