"""The simulator must be impossible to turn on by accident in production.

It approves on request and hands out access tokens to anyone who asks its control
endpoints, so every way of starting it (the CLI, `serve`, `SimulatorServer`,
`create_app`) first calls `refuse_in_production()`.
"""

from __future__ import annotations

import ipaddress
import os
import socket

#: The environment variable that names the deployment environment.
ENV_VARIABLE = "MFA_GATE_ENV"
PRODUCTION = "production"


class SimulatorRefused(RuntimeError):
    """The simulator refuses to start in this environment or on this address."""


def refuse_in_production() -> None:
    """Raise `SimulatorRefused` when MFA_GATE_ENV is `production` (any case, spaces ignored)."""
    if os.environ.get(ENV_VARIABLE, "").strip().lower() == PRODUCTION:
        raise SimulatorRefused(
            f"the Rublon simulator refuses to run with {ENV_VARIABLE}=production: it approves on request. "
            "Point RUBLON_API_SERVER at Rublon instead, or unset MFA_GATE_ENV for development."
        )


def is_loopback(host: str) -> bool:
    """True when `host` (a name or an address) resolves only to loopback addresses."""
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror:
        return False
    addresses = {info[4][0] for info in infos}
    return bool(addresses) and all(ipaddress.ip_address(str(a).split("%")[0]).is_loopback for a in addresses)


def refuse_non_loopback(host: str, *, allow_non_loopback: bool) -> None:
    """Raise `SimulatorRefused` when `host` is not loopback, unless explicitly allowed
    (e.g. inside a development container).
    """
    if not allow_non_loopback and not is_loopback(host):
        raise SimulatorRefused(
            f"the Rublon simulator listens on loopback only; {host!r} is not. "
            "Pass --allow-non-loopback if this really is a development network."
        )
