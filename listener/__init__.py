"""The confirmation listener: one multiplexed WebSocket for every pending transaction."""

from listener.service import ConfirmationListener

__all__ = ["ConfirmationListener"]
