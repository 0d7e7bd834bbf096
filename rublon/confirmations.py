"""Client of the confirmation channel: one multiplexed WebSocket for many transactions.

The channel and its message format are project-defined (see
`rublon.promptless_mapping`). A `confirmed` message is a hint, never proof: its
`access_token` must be exchanged at the signed transaction/credentials call, and only
an answer that matches the held action may release it.

This class does not reconnect: the listener owns reconnects, backoff and
re-subscribing. After `ChannelClosed`, call `connect()` again and re-subscribe.

Typical use::

    channel = ConfirmationChannel(url=ws_url(api, None), system_token=t, secret_key=k)
    await channel.connect()
    await channel.subscribe(tid)
    async for message in channel.messages():
        ...
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.protocol import State

from rublon import promptless_mapping as pm
from rublon.client import DEFAULT_USER_AGENT
from rublon.errors import ChannelClosed
from rublon.signing import canonical_message, sign_message

logger = logging.getLogger(__name__)

#: Seconds between keepalive pings; a dead peer is noticed within about twice this.
DEFAULT_PING_INTERVAL = 20.0
#: Seconds to wait for a pong before the connection counts as dropped.
DEFAULT_PING_TIMEOUT = 20.0
#: Seconds allowed for the TCP connect and the WebSocket handshake.
DEFAULT_OPEN_TIMEOUT = 10.0
#: Seconds allowed for the closing handshake before the TCP connection is dropped.
DEFAULT_CLOSE_TIMEOUT = 5.0

__all__ = ["ChannelClosed", "ConfirmationChannel", "ConfirmationMessage"]


@dataclass(frozen=True)
class ConfirmationMessage:
    """One server message: `type` is pending, confirmed, denied, expired or error.

    `access_token` is set on `confirmed` messages only; it is left out of the repr so a
    logged message never shows it.
    """

    type: str
    tid: str | None
    access_token: str | None = field(default=None, repr=False)

    @property
    def is_final(self) -> bool:
        """True for confirmed, denied and expired: the last message for this tid."""
        return self.type in pm.FINAL_TYPES


class ConfirmationChannel:
    """One WebSocket connection carrying the confirmations of many transactions.

    Args:
        url: the channel URL, see `rublon.client.ws_url`.
        system_token / secret_key: the app's credentials; the key signs each subscribe
            message and is never sent.
        ping_interval / ping_timeout: keepalive (``None`` disables it).
        open_timeout: seconds for connecting and the handshake.
        close_timeout: seconds for the closing handshake.
        user_agent: User-Agent header of the handshake.

    Raises:
        ValueError: `url` is not a ws:// or wss:// URL.
    """

    def __init__(
        self,
        *,
        url: str,
        system_token: str,
        secret_key: str,
        ping_interval: float | None = DEFAULT_PING_INTERVAL,
        ping_timeout: float | None = DEFAULT_PING_TIMEOUT,
        open_timeout: float = DEFAULT_OPEN_TIMEOUT,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
        user_agent: str = DEFAULT_USER_AGENT,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.netloc:
            raise ValueError(f"the confirmation channel needs a ws:// or wss:// URL, got {url!r}")
        self.url = url
        self._system_token = system_token
        self._secret_key = secret_key
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._open_timeout = open_timeout
        self._close_timeout = close_timeout
        self._user_agent = user_agent
        self._ws: ClientConnection | None = None

    def __repr__(self) -> str:
        return f"ConfirmationChannel(url={self.url!r}, open={self.is_open})"

    @property
    def is_open(self) -> bool:
        """True while the current connection is open."""
        return self._ws is not None and self._ws.state is State.OPEN

    async def connect(self) -> None:
        """Open the connection; a no-op when it is already open. Call it again after a
        drop to open a fresh one (subscriptions do not carry over: re-subscribe).

        Raises:
            ChannelClosed: with ``code=None`` when the connection or handshake failed
                (refused, timed out, HTTP status other than 101).
        """
        if self.is_open:
            return
        try:
            self._ws = await connect(
                self.url,
                # Off on purpose: per-connection memory matters more than bytes here.
                compression=None,
                ping_interval=self._ping_interval,
                ping_timeout=self._ping_timeout,
                open_timeout=self._open_timeout,
                close_timeout=self._close_timeout,
                user_agent_header=self._user_agent,
            )
        except InvalidStatus as exc:
            raise ChannelClosed(None, f"handshake refused with HTTP {exc.response.status_code}") from exc
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise ChannelClosed(None, f"could not open {self.url}: {type(exc).__name__}: {exc}") from exc

    async def subscribe(self, tid: str) -> None:
        """Ask for the confirmation messages of transaction `tid`.

        The server answers `pending` (then one final message later), the final message
        at once if the transaction is already final, or `error` for an unknown tid. A bad
        signature or unknown System Token makes the server close the channel (4401), which
        `messages()` reports as `ChannelClosed`.

        Raises:
            ChannelClosed: the channel is not open.
        """
        ws = self._open_connection()
        message: dict[str, Any] = {
            pm.MSG_TYPE: pm.TYPE_SUBSCRIBE,
            pm.MSG_SYSTEM_TOKEN: self._system_token,
            pm.MSG_TID: tid,
        }
        message[pm.MSG_SIGNATURE] = sign_message(self._secret_key, message)
        try:
            await ws.send(canonical_message(message).decode("utf-8"))
        except ConnectionClosed as exc:
            raise _closed(exc) from None

    async def messages(self) -> AsyncIterator[ConfirmationMessage]:
        """Yield server messages as they arrive, for every subscribed tid.

        Messages that are not JSON objects of a known type are logged and skipped. The
        iteration ends quietly when this side called `close()`.

        Raises:
            ChannelClosed: the server closed the connection (its close code, e.g. 4401)
                or it dropped (``code=None``), or the channel was never opened.
        """
        ws = self._open_connection()
        while True:
            try:
                raw = await ws.recv()
            except ConnectionClosed as exc:
                if ws is not self._ws:
                    return  # closed by close() on this side
                raise _closed(exc) from None
            message = _parse(raw)
            if message is not None:
                yield message

    async def close(self) -> None:
        """Close the connection (normal closure). Safe to call when not open."""
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.close()

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def _open_connection(self) -> ClientConnection:
        if self._ws is None:
            raise ChannelClosed(None, "not connected; call connect() first")
        return self._ws


def _closed(exc: ConnectionClosed) -> ChannelClosed:
    """The ChannelClosed for a websockets close, with the code the server sent (if any)."""
    if exc.rcvd is None:
        return ChannelClosed(None, "connection dropped without a close frame")
    return ChannelClosed(exc.rcvd.code, exc.rcvd.reason)


def _parse(raw: str | bytes) -> ConfirmationMessage | None:
    """Read one server message, or None (logged) when it is not a known message."""
    try:
        data = json.loads(raw)
    except ValueError:
        logger.warning("confirmation channel: skipped a message that is not JSON")
        return None
    if not isinstance(data, dict) or data.get(pm.MSG_TYPE) not in pm.SERVER_TYPES:
        # Only the type is logged: the message may carry an access token.
        kind = data.get(pm.MSG_TYPE) if isinstance(data, dict) else type(data).__name__
        logger.warning("confirmation channel: skipped a message of unknown type %r", kind)
        return None
    tid = data.get(pm.MSG_TID)
    token = data.get(pm.MSG_ACCESS_TOKEN)
    return ConfirmationMessage(
        type=data[pm.MSG_TYPE],
        tid=tid if isinstance(tid, str) else None,
        access_token=token if isinstance(token, str) and data[pm.MSG_TYPE] == pm.TYPE_CONFIRMED else None,
    )
