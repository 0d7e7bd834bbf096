"""The confirmation listener, its own process (asyncio).

It keeps one WebSocket to Rublon for every pending promptless transaction, learns of new
ones from a Redis notification (and by polling the store, which also covers an embedded
broker and lost notifications), and turns each answer into a store move:
``confirmed`` -> verified release, ``denied`` -> ``rejected``, ``expired`` -> ``expired``.
A confirmation (lease, token exchange, checks, release, execute message) runs whole in
one thread of the listener's own pool, so the event loop stays free for the WebSocket.
On start, and after every reconnect, it re-subscribes every pending transaction from the
store, so a restart loses nothing. Several listeners may run at once: every move is a
compare-and-set and the token exchange sits behind a lease.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import random
import socket
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import redis.asyncio as aioredis

from rublon.client import RublonClient, ws_url
from rublon.confirmations import ChannelClosed, ConfirmationChannel, ConfirmationMessage
from store import ActionStatus
from store.models import utcnow
from tasks.confirmation import confirm, record_late_answer, refuse
from tasks.dispatch import AWAITING_CHANNEL
from tasks.maintenance import cancel_transaction
from tasks.runtime import Runtime

log = logging.getLogger(__name__)
S = ActionStatus

BACKOFF_START = 0.2
BACKOFF_MAX = 10.0
CONCURRENT_CONFIRMATIONS = 32
POLL_OVERLAP = timedelta(seconds=2)


class ConfirmationListener:
    """Watches the confirmation channel and releases, rejects or expires held actions.

    Args:
        runtime: the process's settings, store and keys.
        name: this listener's identity in leases and the audit trail.
    """

    def __init__(self, runtime: Runtime, *, name: str | None = None) -> None:
        self.runtime = runtime
        self.name = name or f"listener:{socket.gethostname()}:{os.getpid()}"
        self.pending: dict[str, str] = {}  # tid -> action id
        self.subscribed: set[str] = set()
        self.reconnects = 0
        self.connected = asyncio.Event()
        self._channel: ConfirmationChannel | None = None
        self._rublon: RublonClient | None = None
        self._confirmers: ThreadPoolExecutor | None = None
        self._slots = asyncio.Semaphore(CONCURRENT_CONFIRMATIONS)
        self._inflight: set[asyncio.Task[None]] = set()
        self._confirming: set[str] = set()
        self._last_poll = utcnow() - timedelta(days=3650)

    # -- running --------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set."""
        self._rublon = self.runtime.rublon  # thread-safe; built here, before any thread needs it
        self._confirmers = ThreadPoolExecutor(CONCURRENT_CONFIRMATIONS, thread_name_prefix="confirm")
        loops = [
            asyncio.create_task(self._channel_loop(), name="channel"),
            asyncio.create_task(self._poll_loop(), name="poll"),
        ]
        if self.runtime.settings.redis_url:
            loops.append(asyncio.create_task(self._notify_loop(self.runtime.settings.redis_url), name="notify"))
        log.info("%s started: %s pending from the store", self.name, len(self.pending))
        try:
            await stop.wait()
        finally:
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            try:
                if self._inflight:
                    await asyncio.gather(*self._inflight, return_exceptions=True)
                if self._channel is not None:
                    await self._channel.close()
            finally:
                # Off the event loop: a confirmation cut short may still be in its Rublon call.
                await asyncio.to_thread(self._confirmers.shutdown, True)

    async def _channel_loop(self) -> None:
        settings = self.runtime.settings
        url = ws_url(settings.rublon_api_server, settings.rublon_ws_server)
        backoff = BACKOFF_START
        while True:
            channel = ConfirmationChannel(
                url=url, system_token=settings.rublon_system_token, secret_key=self.runtime.rublon_secret
            )
            try:
                await channel.connect()
                self._channel, self.subscribed = channel, set()
                await self._load_pending(full=True)
                for tid in list(self.pending):
                    await self._subscribe(tid)
                self.connected.set()
                backoff = BACKOFF_START
                async for message in channel.messages():
                    await self._on_message(message)
            except ChannelClosed as exc:
                log.warning("%s: confirmation channel closed (%s); reconnecting in %.1fs", self.name, exc, backoff)
            except Exception as exc:  # a store or network hiccup must not end the channel loop for good
                log.warning(
                    "%s: %s while reading the channel (%s); reconnecting in %.1fs",
                    self.name,
                    type(exc).__name__,
                    exc,
                    backoff,
                )
            finally:
                self.connected.clear()
                self._channel = None
                await channel.close()
            self.reconnects += 1
            await asyncio.sleep(backoff * (1 + random.random() / 2))
            backoff = min(backoff * 2, BACKOFF_MAX)

    async def _poll_loop(self) -> None:
        interval = self.runtime.settings.listener_poll_interval
        while True:
            await asyncio.sleep(interval)
            try:
                await self._load_pending(full=False)
                await self._expire_overdue()
            except Exception:  # a store hiccup must not end the listener; the next poll retries
                log.exception("%s: poll failed", self.name)

    async def _notify_loop(self, url: str) -> None:
        backoff = BACKOFF_START
        while True:
            client = aioredis.Redis.from_url(url)
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(AWAITING_CHANNEL)
                    backoff = BACKOFF_START
                    async for item in pubsub.listen():
                        if item.get("type") == "message":
                            await self._learn(item["data"])
            except Exception as exc:  # Redis dropped (or the store failed on one notice): subscribe again
                log.warning(
                    "%s: Redis notifications dropped (%s); retrying in %.1fs", self.name, type(exc).__name__, backoff
                )
            finally:
                await client.aclose()
            self.reconnects += 1
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)

    # -- learning of pending transactions ---------------------------------------------------
    async def _learn(self, notice: bytes) -> None:
        """Subscribe to the transaction a gate task just opened (a hint: see ``notify_awaiting``)."""
        try:
            fields = json.loads(notice)
            action_id, tid = str(fields["id"]), str(fields["tid"])
        except (ValueError, TypeError, KeyError):
            log.warning("%s: ignored a malformed notice on the awaiting channel", self.name)
            return
        self.pending.setdefault(tid, action_id)
        await self._subscribe(tid)

    async def _subscribe(self, tid: str) -> None:
        channel = self._channel
        if channel is None or not channel.is_open or tid in self.subscribed:
            return  # the reconnect re-subscribes every pending tid
        self.subscribed.add(tid)
        try:
            await channel.subscribe(tid)
        except ChannelClosed:
            self.subscribed.discard(tid)

    async def _load_pending(self, *, full: bool) -> None:
        since = None if full else self._last_poll - POLL_OVERLAP
        started = utcnow()
        pairs = await asyncio.to_thread(self.runtime.store.awaiting_tids, updated_since=since)
        self._last_poll = started
        if full:
            # The store is the truth: forget transactions another process has settled meanwhile,
            # so a reconnect does not re-subscribe (and re-audit) every one of them.
            self.pending = {tid: action_id for tid, action_id in self.pending.items() if tid in self._confirming}
        for action_id, tid in pairs:
            self.pending[tid] = action_id  # the store's pairing wins over a notice's
            await self._subscribe(tid)

    async def _expire_overdue(self) -> None:
        overdue = await asyncio.to_thread(
            self.runtime.store.due, S.AWAITING_APPROVAL, column="expires_at", before=utcnow()
        )
        why = "nobody approved before the deadline"
        for action in overdue:
            outcome = await asyncio.to_thread(refuse, self.runtime, action, new=S.EXPIRED, reason=why, actor=self.name)
            self._forget(action.tid)
            if outcome.status == S.EXPIRED:
                await asyncio.to_thread(cancel_transaction, self.runtime, action.tid)

    def _forget(self, tid: str | None) -> None:
        if tid:
            self.pending.pop(tid, None)
            self.subscribed.discard(tid)

    # -- answers ---------------------------------------------------------------------------
    async def _on_message(self, message: ConfirmationMessage) -> None:
        if message.type == "pending" or message.tid is None:
            return
        if message.type == "confirmed":
            if message.tid in self._confirming:
                return  # the same answer twice (a re-subscribe): one exchange is enough
            self._confirming.add(message.tid)
            task = asyncio.create_task(self._confirmed(message.tid, message.access_token))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)
            return
        action = await asyncio.to_thread(self.runtime.store.find_by_tid, message.tid)
        self._forget(message.tid)
        if message.type == "error":
            await asyncio.to_thread(
                self.runtime.store.audit,
                "confirmation.error",
                actor=self.name,
                action_id=action.id if action else None,
                data={"tid": message.tid, "reason": "Rublon does not know this transaction"},
            )
            return
        if action is None:
            await asyncio.to_thread(
                record_late_answer, self.runtime, None, tid=message.tid, kind=message.type, actor=self.name
            )
            return
        # What is left is a final refusal: "denied" or "expired".
        new = S.REJECTED if message.type == "denied" else S.EXPIRED
        reason = f"{action.user} rejected it" if new == S.REJECTED else "nobody approved before the deadline"
        await asyncio.to_thread(refuse, self.runtime, action, new=new, reason=reason, actor=self.name)

    async def _confirmed(self, tid: str, token: str | None) -> None:
        try:
            await self._confirm_one(tid, token)
        finally:
            self._confirming.discard(tid)

    async def _confirm_one(self, tid: str, token: str | None) -> None:
        async with self._slots:
            action_id = self.pending.get(tid)
            if action_id is None or not token:
                action = await asyncio.to_thread(self.runtime.store.find_by_tid, tid)
                if action is None or not token:
                    await asyncio.to_thread(
                        record_late_answer, self.runtime, action, tid=tid, kind="confirmed", actor=self.name
                    )
                    return
                action_id = action.id
            assert self._rublon is not None and self._confirmers is not None
            # A lease owner per attempt: two attempts never share one lease.
            attempt = f"{self.name}:{uuid.uuid4().hex[:8]}"
            whole = functools.partial(
                confirm, self.runtime, self._rublon, action_id, token, tid=tid, actor=attempt, method=None
            )
            try:
                outcome = await asyncio.get_running_loop().run_in_executor(self._confirmers, whole)
            except Exception:  # never let one answer end the listener; the action stays held (fail closed)
                log.exception("%s: confirming action %s failed", self.name, action_id)
                return
            if outcome.status != S.AWAITING_APPROVAL:
                self._forget(tid)
            log.info("%s: action %s -> %s (%s)", self.name, action_id, outcome.status, outcome.detail)
