"""The listener under faults, in-process: a real SQLite store and the simulator in-thread.

A dropped WebSocket must be reopened with every pending transaction subscribed again, so
an approval given while it was down still releases the action; a store error while a
message is handled must not end the channel loop.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from sqlalchemy.exc import OperationalError

from config import get_settings
from listener.service import ConfirmationListener
from simulator.control import SimulatorControl
from simulator.server import SimulatorServer
from store import Action, ActionStatus
from tasks import dispatch
from tasks.gate import open_transaction
from tasks.runtime import Runtime
from tasks.submission import SubmitRequest, submit
from tests.unit.conftest import make_runtime

S = ActionStatus
REDIS_URL = os.environ.get("MFA_GATE_TEST_REDIS", "redis://127.0.0.1:6379/15")


def awaiting(runtime: Runtime) -> Action:
    request = SubmitRequest(
        action="http.request",
        user="alice",
        params={"method": "POST", "url": "http://127.0.0.1/pay", "json": {"amount": 5}},
    )
    action = submit(runtime, request, agent="agent-a", source_ip=None, actor="test").action
    assert open_transaction(runtime, action.id, worker="gate").startswith("asked alice")
    return runtime.store.require(action.id)


async def until(check: Any, timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await asyncio.to_thread(check):
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


def test_approval_given_while_the_websocket_was_down_still_releases(tmp_path: Path, simulator: SimulatorServer) -> None:
    runtime = make_runtime(tmp_path, simulator)
    action = awaiting(runtime)

    async def scenario() -> None:
        listener = ConfirmationListener(runtime, name="listener-test")
        stop = asyncio.Event()
        running = asyncio.create_task(listener.run(stop))
        try:
            await until(lambda: action.tid in listener.subscribed)
            channel = listener._channel
            assert channel is not None and channel._ws is not None
            channel._ws.transport.abort()  # the network drops the connection
            with SimulatorControl(simulator.url) as control:
                await asyncio.to_thread(control.approve, action.tid or "")
            await until(lambda: runtime.store.require(action.id).status == S.QUEUED)
            assert listener.reconnects >= 1
        finally:
            stop.set()
            await running

    asyncio.run(scenario())
    release = runtime.store.release_of(action.id)
    assert release is not None and release.kind == "approval"


def test_store_error_while_handling_a_message_does_not_end_the_listener(
    tmp_path: Path, simulator: SimulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = make_runtime(tmp_path, simulator)
    action = awaiting(runtime)
    real = runtime.store.find_by_tid
    failures = {"left": 1}

    def flaky(tid: str) -> Action | None:
        if failures["left"]:
            failures["left"] -= 1
            raise OperationalError("SELECT", {}, Exception("database is locked"))
        return real(tid)

    monkeypatch.setattr(runtime.store, "find_by_tid", flaky)

    async def scenario() -> None:
        listener = ConfirmationListener(runtime, name="listener-test")
        stop = asyncio.Event()
        running = asyncio.create_task(listener.run(stop))
        try:
            await until(lambda: action.tid in listener.subscribed)
            with SimulatorControl(simulator.url) as control:
                await asyncio.to_thread(control.deny, action.tid or "")
            # The first attempt fails in the store; the reconnect's re-subscribe brings the answer again.
            await until(lambda: runtime.store.require(action.id).status == S.REJECTED)
            assert failures["left"] == 0
        finally:
            stop.set()
            await running

    asyncio.run(scenario())


def test_listener_learns_a_new_transaction_from_the_redis_notice_alone(
    tmp_path: Path, simulator: SimulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With store polling too slow to matter, the gate task's notice (action id and tid) is what subscribes."""
    runtime = make_runtime(tmp_path, simulator)
    runtime.settings = runtime.settings.model_copy(update={"redis_url": REDIS_URL, "listener_poll_interval": 600.0})
    monkeypatch.setenv("REDIS_URL", REDIS_URL)  # the gate task's notice goes through the process settings
    get_settings.cache_clear()
    dispatch._redis.cache_clear()

    async def scenario() -> None:
        listener = ConfirmationListener(runtime, name="listener-notice")
        stop = asyncio.Event()
        running = asyncio.create_task(listener.run(stop))
        try:
            await asyncio.wait_for(listener.connected.wait(), 15)
            await asyncio.sleep(0.3)  # the notice loop's SUBSCRIBE
            publisher = aioredis.Redis.from_url(REDIS_URL)
            await publisher.publish(dispatch.AWAITING_CHANNEL, b"not json")  # ignored; the loop goes on
            await publisher.aclose()
            action = await asyncio.to_thread(awaiting, runtime)
            await until(lambda: action.tid in listener.subscribed, timeout=5)
            assert listener.pending[action.tid or ""] == action.id
            with SimulatorControl(simulator.url) as control:
                await asyncio.to_thread(control.approve, action.tid or "")
            await until(lambda: runtime.store.require(action.id).status == S.QUEUED, timeout=10)
        finally:
            stop.set()
            await running

    try:
        asyncio.run(scenario())
    finally:
        monkeypatch.delenv("REDIS_URL")
        get_settings.cache_clear()
        dispatch._redis.cache_clear()
