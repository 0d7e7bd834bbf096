"""Rublon API client: signed HTTP calls (sync and async) and the confirmation channel.

This package knows nothing of the store, the tasks or the web process. See
`rublon.client` for the calls, `rublon.confirmations` for the WebSocket, `rublon.errors`
for what can go wrong, and `rublon.promptless_mapping` for the project-defined wire
names of the promptless mode.
"""

from rublon.client import (
    AsyncRublonClient,
    Credentials,
    MethodSent,
    PromptlessTransaction,
    PromptTransaction,
    RublonClient,
    UserStatus,
    ws_url,
)
from rublon.confirmations import ConfirmationChannel, ConfirmationMessage
from rublon.errors import (
    ChannelClosed,
    RublonApiError,
    RublonBadSignature,
    RublonError,
    RublonMalformedResponse,
    RublonUnavailable,
)

__all__ = [
    "AsyncRublonClient",
    "ChannelClosed",
    "ConfirmationChannel",
    "ConfirmationMessage",
    "Credentials",
    "MethodSent",
    "PromptTransaction",
    "PromptlessTransaction",
    "RublonApiError",
    "RublonBadSignature",
    "RublonClient",
    "RublonError",
    "RublonMalformedResponse",
    "RublonUnavailable",
    "UserStatus",
    "ws_url",
]
