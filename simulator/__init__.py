"""A local stand-in for Rublon, for development, the demo and the tests. Never production.

It serves the documented API and this project's promptless mapping over real HTTP and
WebSocket on loopback, with the same signing, envelope and errors, and lets a person or
a test decide each transaction (see `simulator.state`). It refuses to start when
MFA_GATE_ENV=production (`simulator.guard`).

Run it with ``python -m simulator --help``; steer it with `SimulatorControl`.
"""

from simulator.control import SimulatorControl, SimulatorControlError
from simulator.guard import SimulatorRefused
from simulator.server import SimulatorServer, serve
from simulator.state import Decision, SimulatorState, SimUser

__all__ = [
    "Decision",
    "SimUser",
    "SimulatorControl",
    "SimulatorControlError",
    "SimulatorRefused",
    "SimulatorServer",
    "SimulatorState",
    "serve",
]
