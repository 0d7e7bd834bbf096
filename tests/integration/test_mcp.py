"""The MCP server through real MCP client sessions: streamable HTTP to the web process, and stdio
through ``mfa-gate mcp``; every tool against the simulator, and never a way around the gate."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from cli.stack import Stack, running_stack
from cli.target import CountingTarget
from simulator.control import SimulatorControl
from store import Store
from tests.fixtures import CRED_A, CRED_B, write_files
from tests.integration.conftest import post_action, wait_status, wait_tid

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
STRING = {"type": "string"}
PARAMS_OF_STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}
#: The seven tools of the product's source document, written out independently of web/mcp_server.py.
RUBLON_SCHEMAS: dict[str, dict[str, Any]] = {
    "rublon_mfa_required_for_action": {
        "type": "object",
        "properties": {"action": STRING, "context": {"type": "object"}},
        "required": ["action"],
    },
    "rublon_promptless_init_transaction": {
        "type": "object",
        "properties": {"username": STRING, "email": STRING, "params": PARAMS_OF_STRINGS},
        "required": ["username", "email"],
    },
    "rublon_promptless_send_method": {
        "type": "object",
        "properties": {"tid": STRING, "method": STRING},
        "required": ["tid"],
    },
    "rublon_promptless_wait_for_confirmation": {
        "type": "object",
        "properties": {"tid": STRING, "timeoutSeconds": {"type": "integer", "minimum": 1}},
        "required": ["tid"],
    },
    "rublon_promptless_verify_user_exists": {
        "type": "object",
        "properties": {"email": STRING},
        "required": ["email"],
    },
    "rublon_prompt_init_transaction": {
        "type": "object",
        "properties": {
            "username": STRING,
            "email": STRING,
            "callbackUrl": STRING,
            "logoutUrl": STRING,
            "params": PARAMS_OF_STRINGS,
        },
        "required": ["username", "email", "callbackUrl", "logoutUrl"],
    },
    "rublon_prompt_get_credentials": {
        "type": "object",
        "properties": {"accessToken": STRING},
        "required": ["accessToken"],
    },
}
GATE_TOOLS = {"mfa_gate_submit", "mfa_gate_status", "mfa_gate_wait", "mfa_gate_cancel"}
ALICE = {"username": "alice", "email": "alice@example.com"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One deployment on SQLite: what is tested here does not depend on the database."""
    workdir = tmp_path_factory.mktemp("stack-mcp")
    policy, directory = write_files(workdir / "config")
    with running_stack(
        workdir / "run", database_url=f"sqlite:///{workdir / 'store.db'}", policy_file=policy, directory_file=directory
    ) as running:
        yield running


# --------------------------------------------------------------------------- helpers


@asynccontextmanager
async def http_session(stack: Stack, credential: str = CRED_A, mode: str = "auto") -> AsyncIterator[Client]:
    """A real MCP client session over streamable HTTP, as the agent of ``credential``."""
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {credential}"}, timeout=httpx2.Timeout(30, read=120))
    transport = streamable_http_client(f"{stack.web_url}/mcp", http_client=http)
    async with http, Client(transport, cache=None, mode=mode) as client:
        yield client


def stdio_parameters(stack: Stack, credential: str) -> StdioServerParameters:
    """``python -m cli mcp --url ...`` with only the agent's credential in its environment."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(REPO),
        "MFA_GATE_AGENT_CREDENTIAL": credential,
    }
    return StdioServerParameters(
        command=sys.executable, args=["-m", "cli", "mcp", "--url", stack.web_url], env=env, cwd=str(REPO)
    )


async def ok(client: Client, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """Call a tool that must succeed; its structured result."""
    result = await client.call_tool(name, arguments)
    text = result.content[0].text if result.content else ""  # type: ignore[union-attr]
    assert not result.is_error, f"{name} failed: {text}"
    assert isinstance(result.structured_content, dict)
    assert json.loads(text) == result.structured_content
    return result.structured_content


async def refused(client: Client, name: str, arguments: dict[str, Any]) -> str:
    """Call a tool that must fail; its error message."""
    result = await client.call_tool(name, arguments)
    text: str = result.content[0].text  # type: ignore[union-attr]
    assert result.is_error, f"{name} should have failed: {text}"
    return text


async def in_thread(function: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a blocking helper (store polling, simulator control) off the event loop."""
    return await anyio.to_thread.run_sync(lambda: function(*args, **kwargs))


def held_action(store: Store, target: CountingTarget, api: httpx.Client) -> Any:
    """A POST held for alice's approval, with its Rublon transaction open."""
    body = api.post("/v1/actions", json=post_action(target)).json()
    return wait_tid(store, body["id"])


# --------------------------------------------------------------------------- listing and auth


@pytest.mark.parametrize("mode", ["auto", "legacy"])
def test_list_tools_serves_the_seven_schemas_verbatim_and_the_gate_tools(stack: Stack, mode: str) -> None:
    async def scenario() -> None:
        async with http_session(stack, mode=mode) as client:
            tools = {tool.name: tool for tool in (await client.list_tools()).tools}
            assert set(tools) == set(RUBLON_SCHEMAS) | GATE_TOOLS
            for name, schema in RUBLON_SCHEMAS.items():
                assert tools[name].input_schema == schema, name
                assert tools[name].description
            for name in GATE_TOOLS:
                assert tools[name].input_schema["type"] == "object" and tools[name].description

    anyio.run(scenario)


def test_mcp_without_a_valid_credential_is_refused_and_audited(stack: Stack, store: Store) -> None:
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    headers = {"Accept": "application/json, text/event-stream"}
    for auth in ({}, {"Authorization": "Bearer not-a-credential"}):
        response = httpx.post(f"{stack.web_url}/mcp", json=initialize, headers={**headers, **auth})
        assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    refusals = [e for e in store.events() if e.event == "auth.refused" and e.data.get("path") == "/mcp"]
    assert len(refusals) >= 2
    assert not any("not-a-credential" in json.dumps(e.data) for e in refusals)

    async def scenario() -> None:
        async with http_session(stack, credential="not-a-credential"):
            pass

    with pytest.raises(BaseException):  # noqa: B017 - the SDK raises its own error (group) for HTTP 401
        anyio.run(scenario)


def test_a_session_opened_by_one_agent_cannot_be_used_by_another(stack: Stack) -> None:
    headers = {"Accept": "application/json, text/event-stream", "Authorization": f"Bearer {CRED_A}"}
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }
    opened = httpx.post(f"{stack.web_url}/mcp", json=initialize, headers=headers)
    assert opened.status_code == 200
    session = opened.headers["mcp-session-id"]
    as_b = {**headers, "Authorization": f"Bearer {CRED_B}", "mcp-session-id": session}
    listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}
    assert httpx.post(f"{stack.web_url}/mcp", json=listing, headers=as_b).status_code == 404


# --------------------------------------------------------------------------- raw tools


def test_mfa_required_for_action_answers_from_the_policy(stack: Stack, target: CountingTarget) -> None:
    def ask(method: str, **extra: Any) -> dict[str, Any]:
        params = {"method": method, "url": f"{target.url}/x"}
        return {"action": "http.request", "context": {"params": params, "user": "alice", **extra}}

    async def scenario() -> None:
        async with http_session(stack) as client:
            tool = "rublon_mfa_required_for_action"
            write = await ok(client, tool, ask("POST"))
            assert write["mfaRequired"] is True and write["outcome"] == "mfa" and write["rule"] == "writes"
            read = await ok(client, tool, ask("GET"))
            assert read["mfaRequired"] is False and read["outcome"] == "allow"
            delete = await ok(client, tool, ask("DELETE"))
            assert delete["mfaRequired"] is True and delete["outcome"] == "deny" and "never runs" in delete["note"]
            assert (await ok(client, tool, {"action": "some.unknown"}))["mfaRequired"] is True
            assert "invalid arguments" in await refused(client, tool, {})
            assert "action: 5 is not of type 'string'" in await refused(client, tool, {"action": 5})
            assert "context: " in await refused(client, tool, {"action": "x", "context": []})
            assert "may not act for user 'carol'" in await refused(
                client, tool, {**ask("GET"), "context": {"user": "carol"}}
            )
            assert "not an argument" in await refused(client, tool, {"action": "x", "user": "alice"})

    anyio.run(scenario)


def test_promptless_raw_tools_against_the_simulator(stack: Stack, store: Store, control: SimulatorControl) -> None:
    async def scenario() -> None:
        async with http_session(stack) as client:
            verified = await ok(client, "rublon_promptless_verify_user_exists", {"email": "Alice@Example.com"})
            assert verified["exists"] is True and verified["status"] == "active" and "push" in verified["methods"]
            verify = "rublon_promptless_verify_user_exists"
            assert "may act for" in await refused(client, verify, {"email": "carol@example.com"})
            assert "may act for" in await refused(client, verify, {"email": "nobody@example.com"})
            assert "invalid arguments" in await refused(client, verify, {})

            init = "rublon_promptless_init_transaction"
            opened = await ok(client, init, {**ALICE, "params": {"purpose": "a check of my own"}})
            tid = opened["tid"]
            assert opened["expiresIn"] > 0 and "push" in opened["methods"]
            assert control.transaction(tid)["params"] == {"purpose": "a check of my own"}
            assert "may not act for user 'carol'" in await refused(client, init, {"username": "carol", "email": "c@x"})
            assert "email: does not match" in await refused(client, init, {"username": "alice", "email": "x@y.z"})
            reserved = {**ALICE, "params": {"mfaGateBindingTag": "00"}}
            assert "reserved for the gate" in await refused(client, init, reserved)
            assert "is not of type 'string'" in await refused(client, init, {**ALICE, "params": {"n": 1}})
            assert "'email' is a required property" in await refused(client, init, {"username": "alice"})

            send = "rublon_promptless_send_method"
            assert (await ok(client, send, {"tid": tid})) == {"tid": tid, "method": "push", "sent": True}
            assert "already sent" in await refused(client, send, {"tid": tid})
            assert "unknown TID" in await refused(client, send, {"tid": "no-such-tid"})
            assert "unknown method" in await refused(client, send, {"tid": tid, "method": "carrier-pigeon"})
            assert "invalid arguments" in await refused(client, send, {"tid": 7})

            wait = "rublon_promptless_wait_for_confirmation"
            started = time.monotonic()
            assert (await ok(client, wait, {"tid": tid, "timeoutSeconds": 1}))["status"] == "pending"
            assert 0.9 < time.monotonic() - started < 10
            token = await in_thread(control.approve, tid)
            confirmed = await ok(client, wait, {"tid": tid, "timeoutSeconds": 10})
            assert confirmed["status"] == "confirmed"
            assert confirmed["credentials"]["username"] == "alice" and confirmed["credentials"]["tid"] == tid
            assert confirmed["credentials"]["params"] == {"purpose": "a check of my own"}
            assert token not in json.dumps(confirmed)
            again = await ok(client, wait, {"tid": tid, "timeoutSeconds": 1})
            assert again["status"] == "confirmed" and again["verifiedEarlier"] is True
            assert "minimum of 1" in await refused(client, wait, {"tid": tid, "timeoutSeconds": 0})
            assert "at most" in await refused(client, wait, {"tid": tid, "timeoutSeconds": 100_000})
            assert "unknown TID" in await refused(client, wait, {"tid": "no-such-tid"})

            for decide, status in ((control.deny, "denied"), (control.expire, "expired")):
                other = (await ok(client, init, ALICE))["tid"]
                await in_thread(decide, other)
                assert (await ok(client, wait, {"tid": other, "timeoutSeconds": 10}))["status"] == status

    anyio.run(scenario)
    calls = [e for e in store.events() if e.event == "mcp.rublon_call" and e.actor == "agent:agent-a"]
    assert {e.data["tool"] for e in calls} >= {
        "rublon_promptless_verify_user_exists",
        "rublon_promptless_init_transaction",
        "rublon_promptless_send_method",
        "rublon_promptless_wait_for_confirmation",
    }
    refusals = [e for e in store.events() if e.event == "mcp.refused" and e.actor == "agent:agent-a"]
    assert any("reserved for the gate" in e.data["reason"] for e in refusals)
    trail = json.dumps([e.data for e in store.events()])
    assert "accessToken" not in trail


def test_prompt_raw_tools_follow_the_simulator_page(stack: Stack, target: CountingTarget) -> None:
    def approve_on_page(web_uri: str) -> str:
        """Press Approve on the simulator's page; the access token the browser is sent on with."""
        with httpx.Client(timeout=10) as browser:
            page = browser.get(web_uri).text
            action = page.split('action="', 2)[1].split('"', 1)[0]  # the first form: Approve
            assert action.endswith("/approve")
            answer = browser.post(httpx.URL(web_uri).join(action), follow_redirects=False)
        assert answer.status_code == 303
        location = httpx.URL(answer.headers["location"])
        assert location.params["rublonState"] == "ok"
        return location.params["rublonToken"]

    async def scenario() -> None:
        init, get = "rublon_prompt_init_transaction", "rublon_prompt_get_credentials"
        urls = {"callbackUrl": f"{target.url}/agent-callback", "logoutUrl": f"{target.url}/bye"}
        async with http_session(stack) as client:
            opened = await ok(client, init, {**ALICE, **urls, "params": {"lang": "en"}})
            assert opened["webURI"].endswith(opened["tid"])
            token = await in_thread(approve_on_page, opened["webURI"])
            credentials = await ok(client, get, {"accessToken": token})
            assert credentials["username"] == "alice" and credentials["tid"] == opened["tid"]
            assert credentials["params"]["lang"] == "en" and credentials["params"]["logoutUrl"] == urls["logoutUrl"]
            assert "already used" in await refused(client, get, {"accessToken": token})
            assert "already used" in await refused(client, get, {"accessToken": "f" * 60})
            own_callback = {**urls, "callbackUrl": f"{stack.web_url}/rublon/callback/x"}
            assert "gate's own callback" in await refused(client, init, {**ALICE, **own_callback})
            assert "absolute http(s) URL" in await refused(client, init, {**ALICE, **urls, "logoutUrl": "bye"})
            assert "'callbackUrl' is a required property" in await refused(
                client, init, {**ALICE, "logoutUrl": urls["logoutUrl"]}
            )
            assert "invalid arguments" in await refused(client, get, {"accessToken": None})

        # A token of a transaction another agent opened is exchanged, and shown to nobody.
        async with http_session(stack, CRED_B) as other:
            carol = {"username": "carol", "email": "carol@example.com"}
            theirs = await ok(other, init, {**carol, **urls})
        token = await in_thread(approve_on_page, theirs["webURI"])
        async with http_session(stack) as client:
            message = await refused(client, get, {"accessToken": token})
            assert "unknown TID" in message and "carol" not in message

    anyio.run(scenario)


def test_raw_tools_say_when_rublon_is_unavailable(stack: Stack, control: SimulatorControl) -> None:
    async def scenario() -> None:
        async with http_session(stack) as client:
            message = await refused(client, "rublon_promptless_verify_user_exists", {"email": "alice@example.com"})
            assert message.startswith("Rublon unavailable")
            assert (await ok(client, "rublon_mfa_required_for_action", {"action": "x"}))["mfaRequired"] is True

    control.fail("unavailable")
    try:
        anyio.run(scenario)
    finally:
        control.fail(None)


# --------------------------------------------------------------------------- never around the gate


def test_an_agents_own_transaction_with_a_copy_of_a_held_actions_params_releases_nothing(
    stack: Stack, store: Store, control: SimulatorControl, target: CountingTarget, api: httpx.Client
) -> None:
    held = held_action(store, target, api)
    shown = control.transaction(held.tid)["params"]  # what the person sees, the gate's keys included
    copied = {key: value if isinstance(value, str) else json.dumps(value) for key, value in held.params.items()}

    async def scenario() -> None:
        init = "rublon_promptless_init_transaction"
        async with http_session(stack) as client:
            # The gate's own keys, even copied exactly, are refused.
            assert "reserved for the gate" in await refused(client, init, {**ALICE, "params": shown})
            # The held action's tid is out of reach of every raw tool.
            for tool in ("rublon_promptless_send_method", "rublon_promptless_wait_for_confirmation"):
                assert "held by the gate" in await refused(client, tool, {"tid": held.tid})
            # Its own transaction, approved by the person, is verified and releases nothing.
            mine = (await ok(client, init, {**ALICE, "params": copied}))["tid"]
            await ok(client, "rublon_promptless_send_method", {"tid": mine})
            await in_thread(control.approve, mine)
            confirmed = await ok(client, "rublon_promptless_wait_for_confirmation", {"tid": mine, "timeoutSeconds": 10})
            assert confirmed["status"] == "confirmed"
            assert not {"mfaGateActionId", "mfaGateBindingTag"} & set(confirmed["credentials"]["params"])
            # A second one, whose fresh token is slipped to the listener as if it were the held action's.
            second = (await ok(client, init, {**ALICE, "params": copied}))["tid"]
        token = control.approve(second)
        control.forge(held.tid, token)

    anyio.run(scenario)
    done = wait_status(store, held.id, "blocked")
    assert "does not match" in done.reason
    time.sleep(0.5)
    assert target.count(held.id) == 0 and store.release_of(held.id) is None


# --------------------------------------------------------------------------- gate tools


def test_gate_tools_submit_approve_succeed(
    stack: Stack, store: Store, control: SimulatorControl, target: CountingTarget
) -> None:
    async def scenario() -> str:
        async with http_session(stack) as client:
            submitted = await ok(client, "mfa_gate_submit", post_action(target, "/mcp-pay", idempotency_key="mcp-1"))
            assert submitted["status"] == "submitted" and "writes" in submitted["reason"] and submitted["id"]
            replay = await ok(client, "mfa_gate_submit", post_action(target, "/mcp-pay", idempotency_key="mcp-1"))
            assert replay["id"] == submitted["id"] and replay["idempotent_replay"] is True
            action = await in_thread(wait_tid, store, submitted["id"])
            assert (await ok(client, "mfa_gate_status", {"id": action.id}))["status"] == "awaiting_approval"
            pending = await ok(client, "mfa_gate_wait", {"id": action.id, "timeoutSeconds": 0.2})
            assert pending["status"] == "awaiting_approval" and pending["final"] is False
            await in_thread(control.approve, action.tid)
            final = await ok(client, "mfa_gate_wait", {"id": action.id, "timeoutSeconds": 30})
            assert final["status"] == "succeeded" and final["final"] is True
            assert (await ok(client, "mfa_gate_status", {"id": action.id}))["status"] == "succeeded"
            assert "at most" in await refused(client, "mfa_gate_wait", {"id": action.id, "timeoutSeconds": 10_000})
            assert "'user' is a required property" in await refused(
                client, "mfa_gate_submit", {"action": "http.request"}
            )
            assert "user: agent 'agent-a' may not act for user 'carol'" in await refused(
                client, "mfa_gate_submit", post_action(target, user="carol")
            )
            assert "params.url" in await refused(
                client, "mfa_gate_submit", post_action(target) | {"params": {"method": "POST", "url": "ftp://x"}}
            )
            assert "not your action" in await refused(client, "mfa_gate_status", {"id": "no-such-id"})
        async with http_session(stack, CRED_B) as other:
            assert "not your action" in await refused(other, "mfa_gate_status", {"id": action.id})
            assert "not your action" in await refused(other, "mfa_gate_cancel", {"id": action.id})
        return action.id

    action_id = anyio.run(scenario)
    assert target.count(action_id) == 1


def test_gate_cancel_withdraws_the_push(
    stack: Stack, store: Store, control: SimulatorControl, target: CountingTarget
) -> None:
    async def scenario() -> str:
        async with http_session(stack) as client:
            submitted = await ok(client, "mfa_gate_submit", post_action(target))
            action = await in_thread(wait_tid, store, submitted["id"])
            assert (await ok(client, "mfa_gate_cancel", {"id": action.id}))["status"] == "cancelled"
            assert control.transaction(action.tid)["state"] == "cancelled"
            assert "only submitted or awaiting_approval" in await refused(client, "mfa_gate_cancel", {"id": action.id})
            return str(action.id)

    action_id = anyio.run(scenario)
    assert target.count(action_id) == 0


# --------------------------------------------------------------------------- stdio


def test_stdio_relay_serves_the_same_tools_and_the_whole_flow(
    stack: Stack, store: Store, control: SimulatorControl, target: CountingTarget
) -> None:
    async def scenario() -> str:
        async with http_session(stack) as direct:
            over_http = {tool.name: tool.input_schema for tool in (await direct.list_tools()).tools}
        async with Client(stdio_parameters(stack, CRED_A), cache=None) as client:
            over_stdio = {tool.name: tool.input_schema for tool in (await client.list_tools()).tools}
            assert over_stdio == over_http
            for name, schema in RUBLON_SCHEMAS.items():
                assert over_stdio[name] == schema
            for name in over_stdio:  # every tool refuses an argument it does not take
                assert "invalid arguments" in await refused(client, name, {"bogus": 1})
            answer = await ok(client, "rublon_mfa_required_for_action", {"action": "http.request"})
            assert answer["mfaRequired"] is True
            found = await ok(client, "rublon_promptless_verify_user_exists", {"email": "bob@example.com"})
            assert found["exists"] is True
            submitted = await ok(client, "mfa_gate_submit", post_action(target, "/stdio-pay"))
            action = await in_thread(wait_tid, store, submitted["id"])
            await in_thread(control.approve, action.tid)
            final = await ok(client, "mfa_gate_wait", {"id": action.id, "timeoutSeconds": 30})
            assert final["status"] == "succeeded"
            return str(action.id)

    action_id = anyio.run(scenario)
    assert target.count(action_id) == 1


def test_stdio_relay_with_a_wrong_credential_exits_with_a_clear_error(stack: Stack) -> None:
    import subprocess

    env = dict(stdio_parameters(stack, "not-a-credential").env or {})
    done = subprocess.run(
        [sys.executable, "-m", "cli", "mcp", "--url", stack.web_url],
        env=env,
        cwd=REPO,
        input=b"",
        capture_output=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert b"refused the agent credential (401)" in done.stderr
    assert b"not-a-credential" not in done.stderr + done.stdout
