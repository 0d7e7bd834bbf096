"""The confirmation channel (WebSocket) against the simulator over a real loopback port."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from rublon import errors
from rublon.client import RublonClient, ws_url
from rublon.confirmations import ConfirmationChannel, ConfirmationMessage
from rublon.signing import sign_message
from simulator.control import SimulatorControl
from simulator.server import SimulatorServer
from simulator.state import SimulatorState, SimUser

SYSTEM_TOKEN = "ABCDEF0123456789ABCDEF0123456789"
SECRET_KEY = "channel-secret-key"
WAIT = 5.0  # seconds; generous upper bound, the messages arrive in milliseconds


@pytest.fixture(scope="module")
def server() -> Iterator[SimulatorServer]:
    state = SimulatorState(
        apps={SYSTEM_TOKEN: SECRET_KEY}, users=[SimUser("alice", "alice@example.com")], decision="manual"
    )
    with SimulatorServer(state) as running:
        yield running


@pytest.fixture
def sim(server: SimulatorServer) -> Iterator[SimulatorControl]:
    with SimulatorControl(server.url) as control:
        yield control
        control.set_decision("manual")
        control.fail(None)


@pytest.fixture
def client(server: SimulatorServer) -> Iterator[RublonClient]:
    with RublonClient(api_server=server.url, system_token=SYSTEM_TOKEN, secret_key=SECRET_KEY) as c:
        yield c


def new_tid(client: RublonClient) -> str:
    return client.promptless_init(username="alice", user_email="alice@example.com", params={"n": "1"}).tid


def channel_for(url: str, secret_key: str = SECRET_KEY, system_token: str = SYSTEM_TOKEN) -> ConfirmationChannel:
    return ConfirmationChannel(url=ws_url(url, None), system_token=system_token, secret_key=secret_key)


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), timeout=20))


async def next_message(messages: AsyncIterator[ConfirmationMessage]) -> ConfirmationMessage:
    return await asyncio.wait_for(anext(messages), WAIT)


# ---------------------------------------------------------------------------- final messages


def test_subscribe_gets_pending_then_confirmed_with_an_exchangeable_token(
    server: SimulatorServer, client: RublonClient, sim: SimulatorControl
) -> None:
    tid = new_tid(client)
    sim.set_decision("approve", tid=tid)

    async def scenario() -> None:
        async with channel_for(server.url) as channel:
            messages = channel.messages()
            await channel.subscribe(tid)
            assert await next_message(messages) == ConfirmationMessage("pending", tid)

            await asyncio.to_thread(client.send_method, tid=tid)
            confirmed = await next_message(messages)

            assert (confirmed.type, confirmed.tid, confirmed.is_final) == ("confirmed", tid, True)
            assert confirmed.access_token is not None and confirmed.access_token not in repr(confirmed)
            credentials = await asyncio.to_thread(client.transaction_credentials, access_token=confirmed.access_token)
            assert credentials.tid == tid

    run(scenario)


@pytest.mark.parametrize(("decision", "final"), [("deny", "denied"), ("expire", "expired")])
def test_deny_and_expire_decisions_reach_subscribers(
    server: SimulatorServer, client: RublonClient, sim: SimulatorControl, decision: str, final: str
) -> None:
    tid = new_tid(client)
    sim.set_decision(decision, tid=tid)

    async def scenario() -> None:
        async with channel_for(server.url) as channel:
            messages = channel.messages()
            await channel.subscribe(tid)
            assert (await next_message(messages)).type == "pending"

            await asyncio.to_thread(client.send_method, tid=tid)

            assert await next_message(messages) == ConfirmationMessage(final, tid)

    run(scenario)


def test_delayed_approval_arrives_after_the_delay(
    server: SimulatorServer, client: RublonClient, sim: SimulatorControl
) -> None:
    tid = new_tid(client)
    sim.set_decision("approve:0.3", tid=tid)

    async def scenario() -> None:
        async with channel_for(server.url) as channel:
            messages = channel.messages()
            await channel.subscribe(tid)
            await next_message(messages)
            loop = asyncio.get_running_loop()
            await asyncio.to_thread(client.send_method, tid=tid)
            sent_at = loop.time()

            confirmed = await next_message(messages)

            assert confirmed.type == "confirmed"
            assert loop.time() - sent_at >= 0.25

    run(scenario)


def test_cancelled_transaction_is_reported_expired(server: SimulatorServer, client: RublonClient) -> None:
    tid = new_tid(client)

    async def scenario() -> None:
        async with channel_for(server.url) as channel:
            messages = channel.messages()
            await channel.subscribe(tid)
            await next_message(messages)

            await asyncio.to_thread(client.cancel_transaction, tid=tid)

            assert await next_message(messages) == ConfirmationMessage("expired", tid)

    run(scenario)


def test_unanswered_transaction_expires_on_time() -> None:
    users = [SimUser("alice", "alice@example.com")]
    state = SimulatorState(apps={SYSTEM_TOKEN: SECRET_KEY}, users=users, decision="manual", expires_in=0.3)
    with SimulatorServer(state) as server:
        tid = state.init_promptless(SYSTEM_TOKEN, username="alice", email="alice@example.com", params={}).tid

        async def scenario() -> None:
            async with channel_for(server.url) as channel:
                messages = channel.messages()
                await channel.subscribe(tid)
                assert (await next_message(messages)).type == "pending"
                assert await next_message(messages) == ConfirmationMessage("expired", tid)

        run(scenario)


def test_already_final_transaction_sends_its_final_message_at_once(
    server: SimulatorServer, client: RublonClient, sim: SimulatorControl
) -> None:
    tid = new_tid(client)
    token = sim.approve(tid)

    async def scenario() -> None:
        async with channel_for(server.url) as channel:
            messages = channel.messages()
            await channel.subscribe(tid)
            message = await next_message(messages)

            # The same single token as issued at approval: a restarted listener loses nothing,
            # and an approval is never worth two exchanges.
            assert (message.type, message.access_token) == ("confirmed", token)

    run(scenario)


def test_unknown_tid_gets_an_error_and_the_channel_stays_open(server: SimulatorServer, client: RublonClient) -> None:
    tid = new_tid(client)

    async def scenario() -> None:
        async with channel_for(server.url) as channel:
            messages = channel.messages()
            await channel.subscribe("no-such-tid")
            assert await next_message(messages) == ConfirmationMessage("error", "no-such-tid")

            await channel.subscribe(tid)
            assert await next_message(messages) == ConfirmationMessage("pending", tid)
            assert channel.is_open

    run(scenario)


def test_one_connection_carries_many_transactions(
    server: SimulatorServer, client: RublonClient, sim: SimulatorControl
) -> None:
    tids = [new_tid(client) for _ in range(3)]

    async def scenario() -> None:
        async with channel_for(server.url) as channel:
            messages = channel.messages()
            for tid in tids:
                await channel.subscribe(tid)
            pending = {(await next_message(messages)).tid for _ in tids}
            assert pending == set(tids)

            await asyncio.to_thread(sim.deny, tids[1])
            await asyncio.to_thread(sim.approve, tids[2])
            await asyncio.to_thread(sim.expire, tids[0])

            finals = {}
            for _ in tids:
                message = await next_message(messages)
                finals[message.tid] = message.type
            assert finals == {tids[0]: "expired", tids[1]: "denied", tids[2]: "confirmed"}

    run(scenario)


# ---------------------------------------------------------------------------- forged hints


def test_forged_confirmation_carries_a_token_that_releases_nothing(
    server: SimulatorServer, client: RublonClient, sim: SimulatorControl
) -> None:
    tid = new_tid(client)

    async def scenario() -> None:
        async with channel_for(server.url) as channel:
            messages = channel.messages()
            await channel.subscribe(tid)
            await next_message(messages)

            assert await asyncio.to_thread(sim.forge, tid, "f" * 60) == 1
            forged = await next_message(messages)

            assert (forged.type, forged.access_token) == ("confirmed", "f" * 60)
            with pytest.raises(errors.UnknownAccessToken):
                await asyncio.to_thread(client.transaction_credentials, access_token="f" * 60)

    run(scenario)
    assert sim.transaction(tid)["state"] == "pending"


# ---------------------------------------------------------------------------- authentication and drops


@pytest.mark.parametrize(
    ("system_token", "secret_key"), [(SYSTEM_TOKEN, "wrong key"), ("F" * 32, SECRET_KEY)], ids=["bad-sig", "bad-token"]
)
def test_bad_subscribe_closes_the_channel_with_4401(
    server: SimulatorServer, client: RublonClient, system_token: str, secret_key: str
) -> None:
    tid = new_tid(client)

    async def scenario() -> None:
        async with channel_for(server.url, secret_key=secret_key, system_token=system_token) as channel:
            await channel.subscribe(tid)

            with pytest.raises(errors.ChannelClosed) as closed:
                await next_message(channel.messages())

            assert closed.value.code == 4401

    run(scenario)


def test_tampered_subscribe_message_is_refused(server: SimulatorServer, client: RublonClient) -> None:
    tid = new_tid(client)

    async def scenario() -> None:
        message = {"type": "subscribe", "systemToken": SYSTEM_TOKEN, "tid": "some-other-tid"}
        message["signature"] = sign_message(SECRET_KEY, message)
        message["tid"] = tid  # the signature was made for another tid
        async with connect(ws_url(server.url, None), compression=None) as ws:
            await ws.send(json.dumps(message))

            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), WAIT)

            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401

    run(scenario)


def test_channel_can_connect_again_after_a_drop() -> None:
    state = SimulatorState(apps={SYSTEM_TOKEN: SECRET_KEY}, users=[SimUser("alice", "alice@example.com")])
    port = free_port()
    channel = channel_for(f"http://127.0.0.1:{port}")
    first_server = SimulatorServer(state, port=port).start()

    async def dropped() -> None:
        await channel.connect()
        messages = channel.messages()
        first_server.stop()
        with pytest.raises(errors.ChannelClosed):
            await next_message(messages)
        assert not channel.is_open

    run(dropped)

    with SimulatorServer(state, port=port):
        tid = state.init_promptless(SYSTEM_TOKEN, username="alice", email="alice@example.com", params={}).tid

        async def reconnected() -> None:
            await channel.connect()
            messages = channel.messages()
            await channel.subscribe(tid)
            assert await next_message(messages) == ConfirmationMessage("pending", tid)
            await channel.close()

        run(reconnected)


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port: int = probe.getsockname()[1]
    return port


def test_connect_to_nothing_raises_channel_closed_without_code() -> None:
    channel = channel_for(f"http://127.0.0.1:{free_port()}")

    async def scenario() -> None:
        with pytest.raises(errors.ChannelClosed) as closed:
            await channel.connect()
        assert closed.value.code is None

    run(scenario)


def test_unavailable_simulator_refuses_the_handshake(server: SimulatorServer, sim: SimulatorControl) -> None:
    sim.fail("unavailable")
    channel = channel_for(server.url)

    async def scenario() -> None:
        with pytest.raises(errors.ChannelClosed, match="HTTP 403") as closed:
            await channel.connect()
        assert closed.value.code is None

    run(scenario)


def test_messages_before_connect_raise_channel_closed() -> None:
    channel = channel_for("http://127.0.0.1:9")

    async def scenario() -> None:
        with pytest.raises(errors.ChannelClosed):
            await anext(channel.messages())

    run(scenario)


def test_close_ends_the_message_stream_quietly(server: SimulatorServer) -> None:
    async def scenario() -> None:
        channel = channel_for(server.url)
        await channel.connect()
        received: list[ConfirmationMessage] = []

        async def consume() -> None:
            async for message in channel.messages():
                received.append(message)

        consumer = asyncio.create_task(consume())
        await asyncio.sleep(0.05)
        await channel.close()

        await asyncio.wait_for(consumer, WAIT)  # returns instead of raising ChannelClosed
        assert received == [] and not channel.is_open

    run(scenario)


def test_channel_url_must_be_a_websocket_url() -> None:
    with pytest.raises(ValueError):
        ConfirmationChannel(url="http://127.0.0.1:1/api/promptless/ws", system_token="T", secret_key="K")


def test_simulator_stamps_when_it_sent_a_genuine_confirmed_and_nothing_else(
    server: SimulatorServer, client: RublonClient, sim: SimulatorControl
) -> None:
    # The benchmark's release latency starts at this stamp (confirmedSentAt).
    tid, forged, unheard = new_tid(client), new_tid(client), new_tid(client)

    async def scenario() -> None:
        async with channel_for(server.url) as channel:
            messages = channel.messages()
            for each in (tid, forged):
                await channel.subscribe(each)
                await next_message(messages)  # pending
            assert sim.transaction(tid)["confirmedSentAt"] is None
            assert await asyncio.to_thread(sim.forge, forged, "F" * 60) == 1
            assert (await next_message(messages)).type == "confirmed"
            before = time.time()
            await asyncio.to_thread(sim.approve, tid)
            assert (await next_message(messages)).type == "confirmed"
            received = time.time()
            sent = sim.transaction(tid)["confirmedSentAt"]
            assert sent is not None and before <= sent <= received
            assert sim.transaction(tid)["subscribersAtDecision"] == 1

    run(scenario)
    assert sim.transaction(forged)["confirmedSentAt"] is None  # a forged frame is not the person's answer
    sim.approve(unheard)  # nobody subscribed: nothing was sent
    assert sim.transaction(unheard)["confirmedSentAt"] is None
    assert sim.transaction(unheard)["subscribersAtDecision"] == 0
