"""The MCP server of the web process: the seven Rublon tools and the gate tools, at ``/mcp``.

Built on the low-level ``Server`` of the official ``mcp`` SDK, so every tool's input schema
is served exactly as written in ``TOOLS`` (the SDK's decorator API would infer schemas from
Python signatures, adding titles, defaults and null unions). Streamable HTTP, both the
handshake era (stateful sessions) and the 2026-07-28 era (one request at a time).

Who calls: every request to ``/mcp`` carries the agent's own bearer credential, checked by
``web.auth.authenticate`` exactly as for the REST API (refusals are audited, 401). The agent
a tool acts as comes from that credential, never from the arguments.

The raw Rublon tools are never a way around the gate (ARCHITECTURE.md, trust boundaries):

- each call is attributed to the agent and audited (``mcp.rublon_call`` when it is charged,
  ``mcp.rublon_result`` with its outcome, ``mcp.refused`` when refused before that);
- it is counted against the policy's ``[limits]``, the same ones as submissions: the agent's
  calls of the last hour plus its submissions of the last hour stay under
  ``max_requests_per_agent_per_hour``; a call that asks a person (opening a transaction)
  also counts, for ``timeout_seconds`` of ``[defaults]``, as a pending request of the agent
  and of the user. The counts come from the audit events in the store, so they hold across
  web processes and restarts;
- it names only users the agent may act for, and refuses the gate's reserved param keys;
- a TID is usable only by the agent that opened it with a raw tool, and never one of a
  held action; tokens are exchanged by the server, never handed to the agent;
- nothing here moves an action: the listener and the callback release only actions whose
  stored tid, user, action id, payload hash and binding tag match a signed answer, and a
  transaction an agent opened has none of them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import anyio
import mcp.types as types
from fastapi import FastAPI
from jsonschema import Draft202012Validator
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from starlette.authentication import AuthCredentials
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from policies import Agent, Facts, evaluate
from rublon import promptless_mapping as pm
from rublon.client import Credentials, ws_url
from rublon.confirmations import ChannelClosed, ConfirmationChannel, ConfirmationMessage
from rublon.errors import (
    AccessTokenExpired,
    ForbiddenMethod,
    RublonApiError,
    RublonBadSignature,
    RublonError,
    RublonUnavailable,
    TransactionLocked,
    UnknownAccessToken,
    UserNotFound,
)
from store import Action, AuditEvent, Store
from store.models import utcnow
from store.transitions import FINAL
from tasks.binding import RESERVED_PARAMS
from tasks.runtime import Runtime
from tasks.submission import RAW_RUBLON_CALL_EVENT, SubmissionError, parse_request, submit
from tasks.submission import cancel as cancel_action
from web.api import action_body
from web.auth import Unauthenticated, authenticate

log = logging.getLogger(__name__)

MCP_PATH = "/mcp"
SERVER_NAME = "mfa-gate"
SERVER_VERSION = "0.1.0"
#: Where the authenticated agent travels from the ASGI layer to the tool handlers.
AGENT_SCOPE_KEY = "mfa_gate.agent"

#: Audit events of the raw tools. CALL_EVENT is what the rate limits count.
CALL_EVENT = RAW_RUBLON_CALL_EVENT
RESULT_EVENT = "mcp.rublon_result"
REFUSED_EVENT = "mcp.refused"
#: How long a TID an agent opened stays usable by its tid-taking tools.
OWNERSHIP_WINDOW = timedelta(hours=24)
#: The window of max_requests_per_agent_per_hour.
RATE_WINDOW = timedelta(hours=1)
#: timeoutSeconds of the wait tools when the agent leaves it out.
DEFAULT_WAIT_SECONDS = 30
#: Seconds between store reads while mfa_gate_wait waits.
WAIT_POLL_SECONDS = 0.1
#: How many times one TID may be sent a method: once is a push, more is push fatigue.
MAX_SENDS_PER_TID = 1

_PARAMS_OF_STRINGS: dict[str, Any] = {"type": "object", "additionalProperties": {"type": "string"}}


class ToolError(Exception):
    """A refusal or failure the agent sees as the tool's error message."""


@dataclass
class Call:
    """One tool call: who makes it, and what the audit trail records about it."""

    runtime: Runtime
    agent: Agent
    source_ip: str | None
    tool: str
    #: True once the call passed the limits and was counted (CALL_EVENT written).
    charged: bool = False
    #: What RESULT_EVENT records: user, tid, status ... never a token.
    audit: dict[str, Any] = field(default_factory=dict)

    @property
    def actor(self) -> str:
        return f"agent:{self.agent.name}"

    @property
    def store(self) -> Store:
        return self.runtime.store


ToolRun = Callable[[Call, dict[str, Any]], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class ToolSpec:
    """A tool as listed (name, description, input schema) and the function that runs it."""

    name: str
    description: str
    input_schema: dict[str, Any]
    run: ToolRun
    raw: bool

    def listed(self) -> types.Tool:
        # A deep copy through JSON: nothing a caller does to the listing reaches TOOLS.
        return types.Tool(name=self.name, description=self.description, input_schema=_copy(self.input_schema))


def _copy(value: dict[str, Any]) -> dict[str, Any]:
    copied: dict[str, Any] = json.loads(json.dumps(value))
    return copied


# --------------------------------------------------------------------------- the limits


def _since(store: Store, *, event: str, since: datetime, actor: str | None = None) -> list[AuditEvent]:
    """Audit events of one kind since a moment: the store's record is what the limits count."""
    return store.events_since(event, since, actor=actor)


def limit_refusal(runtime: Runtime, *, agent: str, user: str | None, asks_person: bool) -> str | None:
    """Why a raw tool call must not go ahead under the policy's ``[limits]``, or None.

    In: the agent; the user the call concerns (None when it names none); whether it asks a
    person (opens a transaction). Out: a sentence for the agent, or None.
    """
    store, limits = runtime.store, runtime.policy.limits
    now = utcnow()
    # The same figures as a submission's push-fatigue check (tasks/submission.py), one query.
    load = store.request_load(agent=agent, user=user or "", since=now - RATE_WINDOW, raw_call_event=CALL_EVENT)
    if load.suspended or not _agent_active(runtime, agent):
        return f"agent {agent!r} is suspended; a person lifts it with 'mfa-gate agents lift'"
    actor = f"agent:{agent}"
    if load.requests_by_agent >= limits.max_requests_per_agent_per_hour:
        return (
            f"agent {agent!r} made {load.raw_calls_by_agent} Rublon tool calls and {load.actions_by_agent} "
            f"submissions in the last hour; the limit is {limits.max_requests_per_agent_per_hour}"
        )
    if not asks_person:
        return None
    # A transaction opened with a raw tool counts as pending for as long as the policy's default deadline.
    open_since = now - timedelta(seconds=runtime.policy.defaults.timeout_seconds)
    opened = [event for event in _since(store, event=RESULT_EVENT, since=open_since) if event.data.get("opened")]
    by_agent = sum(1 for event in opened if event.actor == actor)
    if load.pending_for_agent + by_agent >= limits.max_pending_per_agent:
        return f"agent {agent!r} already has {limits.max_pending_per_agent} pending approval requests"
    if user is not None:
        for_user = sum(1 for event in opened if event.data.get("user") == user)
        if load.pending_for_user + for_user >= limits.max_pending_per_user:
            return f"user {user!r} already has {limits.max_pending_per_user} pending approval requests"
    return None


def _agent_active(runtime: Runtime, agent: str) -> bool:
    found = runtime.directory.agent(agent)
    return found is not None and not found.suspended


async def charge(call: Call, *, user: str | None, asks_person: bool, tid: str | None = None) -> None:
    """Check the limits and count the call (CALL_EVENT); raises ToolError when over a limit."""
    refusal = await asyncio.to_thread(
        limit_refusal, call.runtime, agent=call.agent.name, user=user, asks_person=asks_person
    )
    if refusal is not None:
        raise ToolError(f"refused by the limits: {refusal}")
    data = {"tool": call.tool, "user": user, "tid": tid, "source_ip": call.source_ip}
    await asyncio.to_thread(call.store.audit, CALL_EVENT, actor=call.actor, data=data)
    call.charged = True
    call.audit.update({key: value for key, value in data.items() if value is not None and key != "source_ip"})


# --------------------------------------------------------------------------- shared checks


def _user_for(call: Call, username: str, email: str | None) -> str:
    """The directory user ``username`` if the agent may act for them; ``email`` must be theirs."""
    directory = call.runtime.directory
    user = directory.user(username)
    if user is None or not directory.may_act_for(call.agent.name, username):
        raise ToolError(f"username: agent {call.agent.name!r} may not act for user {username!r}")
    if email is not None and email.strip().lower() != user.email.lower():
        raise ToolError(f"email: does not match the directory's email for user {username!r}")
    return user.email


def _string_params(call: Call, params: Mapping[str, str]) -> dict[str, str]:
    """Agent params for a transaction: the gate's reserved keys refused, size bounded."""
    reserved = {name.lower() for name in RESERVED_PARAMS}
    taken = sorted(key for key in params if key.lower() in reserved)
    if taken:
        raise ToolError(f"params: {', '.join(taken)} {'is' if len(taken) == 1 else 'are'} reserved for the gate")
    limit = call.runtime.settings.max_params_bytes
    if len(json.dumps(params).encode()) > limit:
        raise ToolError(f"params: larger than {limit} bytes")
    return dict(params)


async def _opened(call: Call, tid: str, *, tools: tuple[str, ...]) -> dict[str, Any]:
    """What the audit trail says about the transaction ``tid`` this agent opened with ``tools``.

    Raises ToolError: the tid belongs to a held action, or this agent did not open it.
    """
    if not tid.strip():
        raise ToolError("tid: must not be empty")
    held = await asyncio.to_thread(call.store.find_by_tid, tid)
    if held is not None:
        raise ToolError(f"tid: {tid!r} belongs to an action held by the gate; the raw tools cannot touch it")
    since = utcnow() - OWNERSHIP_WINDOW
    events = await asyncio.to_thread(_since, call.store, event=RESULT_EVENT, since=since, actor=call.actor)
    for event in events:
        data = event.data
        if data.get("tid") == tid and data.get("tool") in tools and data.get("outcome") == "ok":
            return data
    raise ToolError(f"tid: unknown TID {tid!r}; use a TID you opened with {' or '.join(tools)}")


def _credentials(creds: Credentials) -> dict[str, Any]:
    """The verified credentials an agent may see: never the System Token, never a token."""
    return {"username": creds.username, "email": creds.email, "tid": creds.tid, "params": dict(creds.params)}


def _rublon_message(exc: RublonError) -> str:
    """A clear sentence for a Rublon failure, naming what to do next."""
    if isinstance(exc, RublonUnavailable):
        return "Rublon unavailable: it did not answer properly; nothing was done, try again later"
    if isinstance(exc, RublonBadSignature):
        return "Rublon's answer had a bad signature; nothing in it was used"
    if isinstance(exc, UserNotFound):
        return "Rublon knows no such user"
    if isinstance(exc, UnknownAccessToken):
        return "accessToken: unknown or already used (tokens are single use)"
    if isinstance(exc, AccessTokenExpired):
        return "accessToken: expired"
    if isinstance(exc, TransactionLocked):
        return "tid: the transaction is already final"
    if isinstance(exc, ForbiddenMethod):
        return f"method: not allowed for this transaction ({exc.message})"
    if isinstance(exc, RublonApiError):
        if exc.exception == "TransactionNotFoundException":
            return "tid: unknown TID; Rublon knows no such transaction"
        return f"Rublon refused: {exc.exception}" + (f" ({exc.message})" if exc.message else "")
    return f"Rublon error: {type(exc).__name__}"


# --------------------------------------------------------------------------- raw tools


async def mfa_required_for_action(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    """The policy's answer for an action, from server-known facts about the calling agent."""
    runtime = call.runtime
    context = dict(args.get("context") or {})
    limit = runtime.settings.max_context_bytes + runtime.settings.max_params_bytes
    if len(json.dumps(context, default=str).encode()) > limit:
        raise ToolError(f"context: larger than {limit} bytes")
    params = context.pop("params", {})
    if not isinstance(params, dict):
        raise ToolError("context.params: must be an object (the action's params)")
    username = context.pop("user", None)
    groups: tuple[str, ...] = ()
    if username is not None:
        if not isinstance(username, str):
            raise ToolError("context.user: must be a string (the user the action is for)")
        _user_for(call, username, None)
        found = runtime.directory.user(username)
        groups = tuple(found.groups) if found else ()
    await charge(call, user=username, asks_person=False)
    facts = Facts(agent=call.agent.name, user=username or "", groups=groups, source_ip=call.source_ip, now=utcnow())
    decision = evaluate(runtime.policy, action=args["action"], params=params, facts=facts, context=context)
    result: dict[str, Any] = {
        "mfaRequired": decision.outcome != "allow",
        "outcome": decision.outcome,
        "rule": decision.rule,
        "reason": decision.reason,
        "policyHash": decision.policy_hash,
    }
    if decision.outcome == "mfa":
        result.update({"methods": list(decision.methods), "mode": decision.mode})
    if decision.outcome == "deny":
        result["note"] = "the policy denies this action: it never runs, with or without a person's approval"
    call.audit.update({"action": args["action"], "outcome": decision.outcome, "rule": decision.rule})
    return result


async def promptless_init_transaction(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    """Open a promptless transaction for a user the agent acts for; returns its TID."""
    username, email = args["username"], args["email"]
    user_email = _user_for(call, username, email)
    params = _string_params(call, args.get("params") or {})
    await charge(call, user=username, asks_person=True)
    call.audit["param_keys"] = sorted(params)
    async with call.runtime.async_rublon() as rublon:
        transaction = await rublon.promptless_init(username=username, user_email=user_email, params=params)
    call.audit.update({"tid": transaction.tid, "opened": True})
    return {"tid": transaction.tid, "methods": transaction.methods, "expiresIn": transaction.expires_in}


async def promptless_send_method(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    """Send a method (push by default) for a TID the agent opened, once."""
    tid = args["tid"]
    method = args.get("method") or pm.DEFAULT_METHOD
    if method not in pm.ALL_METHODS:
        raise ToolError(f"method: unknown method {method!r}; use one of {', '.join(sorted(pm.ALL_METHODS))}")
    opened = await _opened(call, tid, tools=("rublon_promptless_init_transaction",))
    since = utcnow() - OWNERSHIP_WINDOW
    calls = await asyncio.to_thread(_since, call.store, event=CALL_EVENT, since=since, actor=call.actor)
    sent = sum(1 for event in calls if event.data.get("tool") == call.tool and event.data.get("tid") == tid)
    if sent >= MAX_SENDS_PER_TID:
        raise ToolError(f"tid: a method was already sent for {tid!r}; open a new transaction to ask again")
    await charge(call, user=opened.get("user"), asks_person=False, tid=tid)
    call.audit["method"] = method
    async with call.runtime.async_rublon() as rublon:
        answer = await rublon.send_method(tid=tid, method=method)
    return {"tid": answer.tid, "method": answer.method, "sent": answer.sent}


async def promptless_wait_for_confirmation(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    """Wait on the confirmation channel for one TID; exchange the token here, never hand it out."""
    tid = args["tid"]
    timeout = _wait_seconds(call, args)
    opened = await _opened(call, tid, tools=("rublon_promptless_init_transaction",))
    username = opened.get("user")
    earlier = await _earlier_confirmation(call, tid)
    if earlier is not None:
        return earlier
    await charge(call, user=username, asks_person=False, tid=tid)
    message = await _final_message(call, tid, timeout)
    if message is None:
        call.audit["status"] = "pending"
        return {"tid": tid, "status": "pending"}
    if message.type == pm.TYPE_ERROR:
        raise ToolError(f"tid: unknown TID {tid!r}; Rublon knows no such transaction")
    if message.type != pm.TYPE_CONFIRMED:
        call.audit["status"] = message.type
        return {"tid": tid, "status": message.type}
    if not message.access_token:
        raise ToolError("Rublon confirmed without an access token; nothing could be verified")
    try:
        async with call.runtime.async_rublon() as rublon:
            creds = await rublon.transaction_credentials(access_token=message.access_token)
    except (UnknownAccessToken, AccessTokenExpired):
        raise ToolError("the confirmation could not be verified: its token can no longer be exchanged") from None
    if creds.tid != tid or creds.username != username:
        raise ToolError("the confirmation could not be verified: the signed answer names another transaction or user")
    credentials = _credentials(creds)
    call.audit.update({"status": "confirmed", "credentials": credentials})
    return {"tid": tid, "status": "confirmed", "credentials": credentials}


def _wait_seconds(call: Call, args: dict[str, Any]) -> float:
    """timeoutSeconds, within the server's bound (MFA_GATE_WAIT_MAX_SECONDS)."""
    bound = call.runtime.settings.wait_max_seconds
    timeout: float = args.get("timeoutSeconds", min(DEFAULT_WAIT_SECONDS, bound))
    if timeout > bound:
        raise ToolError(f"timeoutSeconds: at most {bound:g}; call again to wait longer")
    return timeout


async def _earlier_confirmation(call: Call, tid: str) -> dict[str, Any] | None:
    """The verified answer an earlier wait already got for ``tid`` (tokens are single use)."""
    since = utcnow() - OWNERSHIP_WINDOW
    events = await asyncio.to_thread(_since, call.store, event=RESULT_EVENT, since=since, actor=call.actor)
    for event in events:
        data = event.data
        if data.get("tool") == call.tool and data.get("tid") == tid and data.get("status") == "confirmed":
            return {"tid": tid, "status": "confirmed", "credentials": data.get("credentials"), "verifiedEarlier": True}
    return None


async def _final_message(call: Call, tid: str, timeout: float) -> ConfirmationMessage | None:
    """The first final (or error) message for ``tid`` within ``timeout`` seconds, else None."""
    settings = call.runtime.settings
    channel = ConfirmationChannel(
        url=ws_url(settings.rublon_api_server, settings.rublon_ws_server),
        system_token=settings.rublon_system_token,
        secret_key=call.runtime.rublon_secret,
    )
    found: ConfirmationMessage | None = None
    try:
        async with channel:
            await channel.subscribe(tid)
            with anyio.move_on_after(timeout):
                async for message in channel.messages():
                    if message.tid == tid and (message.is_final or message.type == pm.TYPE_ERROR):
                        found = message
                        break
    except ChannelClosed as exc:
        raise ToolError(f"Rublon unavailable: the confirmation channel failed ({exc}); try again later") from None
    return found


async def promptless_verify_user_exists(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    """Ask Rublon whether a user the agent acts for exists, without sending anything."""
    email = args["email"].strip().lower()
    directory = call.runtime.directory
    user = next((u for u in directory.users if u.email.lower() == email), None)
    if user is None or not directory.may_act_for(call.agent.name, user.name):
        raise ToolError(f"email: not the email of a user agent {call.agent.name!r} may act for")
    await charge(call, user=user.name, asks_person=False)
    async with call.runtime.async_rublon() as rublon:
        status = await rublon.verify_user(user_email=user.email)
    call.audit["status"] = status.status
    return {"email": user.email, "exists": status.exists, "status": status.status, "methods": status.methods}


async def prompt_init_transaction(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    """Open a prompt-mode transaction; returns the webURI the person opens."""
    username, email = args["username"], args["email"]
    user_email = _user_for(call, username, email)
    callback_url, logout_url = _web_url(args["callbackUrl"], "callbackUrl"), _web_url(args["logoutUrl"], "logoutUrl")
    # By path, whatever the host is spelt like: the gate's callback takes only the gate's transactions.
    if urlsplit(callback_url).path.rstrip("/").startswith("/rublon/callback"):
        raise ToolError("callbackUrl: must not be the gate's own callback; use an address of your own")
    params = _string_params(call, args.get("params") or {})
    if "logoutUrl" in params:
        raise ToolError("params: logoutUrl is given by its own argument; remove it from params")
    await charge(call, user=username, asks_person=True)
    call.audit["param_keys"] = sorted(params)
    async with call.runtime.async_rublon() as rublon:
        transaction = await rublon.transaction_init(
            username=username,
            callback_url=callback_url,
            user_email=user_email,
            params={**params, "logoutUrl": logout_url},
        )
    call.audit.update({"tid": transaction.tid, "opened": True})
    return {"webURI": transaction.web_uri, "tid": transaction.tid}


def _web_url(value: str, name: str) -> str:
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ToolError(f"{name}: must be an absolute http(s) URL")
    return value.strip()


async def prompt_get_credentials(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    """Exchange an access token of a prompt transaction the agent opened; returns its credentials."""
    token = args["accessToken"].strip()
    if not token:
        raise ToolError("accessToken: must not be empty")
    await charge(call, user=None, asks_person=False)
    async with call.runtime.async_rublon() as rublon:
        creds = await rublon.transaction_credentials(access_token=token)
    call.audit.update({"tid": creds.tid, "user": creds.username})
    if creds.tid is None:
        raise ToolError("the credentials name no transaction; they cannot be checked and are not shown")
    # The token was exchanged either way; for anything but the agent's own transaction it only ends here.
    await _opened(call, creds.tid, tools=("rublon_prompt_init_transaction",))
    credentials = _credentials(creds)
    call.audit["status"] = "exchanged"
    return credentials


# --------------------------------------------------------------------------- gate tools


async def gate_submit(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    """Submit a critical action; answers at once with its id, status and reason."""
    request = parse_request(args)
    done = await asyncio.to_thread(
        submit, call.runtime, request, agent=call.agent.name, source_ip=call.source_ip, actor=call.actor
    )
    return action_body(done.action, replay=not done.created)


async def _own(call: Call, action_id: str) -> Action:
    action = await asyncio.to_thread(call.store.get, action_id)
    if action is None or action.agent != call.agent.name:
        raise ToolError(f"id: not your action: no action {action_id!r} for agent {call.agent.name!r}")
    return action


async def gate_status(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    """One of the agent's actions."""
    return action_body(await _own(call, args["id"]))


async def gate_wait(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    """Wait until the action is final or timeoutSeconds pass (bounded by MFA_GATE_WAIT_MAX_SECONDS)."""
    timeout = _wait_seconds(call, args)
    action = await _own(call, args["id"])
    deadline = time.monotonic() + timeout
    while action.status not in FINAL and time.monotonic() < deadline:
        await anyio.sleep(WAIT_POLL_SECONDS)
        action = await asyncio.to_thread(call.store.require, action.id)
    return action_body(action)


async def gate_cancel(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    """Withdraw one of the agent's actions that was not released; the push is withdrawn."""
    await _own(call, args["id"])
    cancelled = await asyncio.to_thread(
        cancel_action, call.runtime, args["id"], agent=call.agent.name, actor=call.actor
    )
    return action_body(cancelled)


# --------------------------------------------------------------------------- the tool table

_RAW_NOTE = " Raw Rublon tool: audited and counted against the gate's limits; it can never release a held action."

TOOLS: tuple[ToolSpec, ...] = (
    ToolSpec(
        "rublon_mfa_required_for_action",
        "Policy gate: returns true (mfaRequired) when the action needs a person's MFA approval or is denied, "
        "false when the policy allows it outright. Put the action's params in context.params and the user it is "
        "for in context.user." + _RAW_NOTE,
        {
            "type": "object",
            "properties": {"action": {"type": "string"}, "context": {"type": "object"}},
            "required": ["action"],
        },
        mfa_required_for_action,
        raw=True,
    ),
    ToolSpec(
        "rublon_promptless_init_transaction",
        "Initialize a promptless transaction for a user you act for and return its TID." + _RAW_NOTE,
        {
            "type": "object",
            "properties": {"username": {"type": "string"}, "email": {"type": "string"}, "params": _PARAMS_OF_STRINGS},
            "required": ["username", "email"],
        },
        promptless_init_transaction,
        raw=True,
    ),
    ToolSpec(
        "rublon_promptless_send_method",
        "Send a promptless method (e.g. push, the default) for a TID you opened." + _RAW_NOTE,
        {
            "type": "object",
            "properties": {"tid": {"type": "string"}, "method": {"type": "string"}},
            "required": ["tid"],
        },
        promptless_send_method,
        raw=True,
    ),
    ToolSpec(
        "rublon_promptless_wait_for_confirmation",
        "Wait for the promptless confirmation over WebSocket: returns status confirmed (with the verified "
        "credentials; the access token is exchanged by the server), denied, expired, or pending when "
        "timeoutSeconds pass." + _RAW_NOTE,
        {
            "type": "object",
            "properties": {"tid": {"type": "string"}, "timeoutSeconds": {"type": "integer", "minimum": 1}},
            "required": ["tid"],
        },
        promptless_wait_for_confirmation,
        raw=True,
    ),
    ToolSpec(
        "rublon_promptless_verify_user_exists",
        "Verify that a user you act for exists at Rublon (status, methods) without sending a push." + _RAW_NOTE,
        {"type": "object", "properties": {"email": {"type": "string"}}, "required": ["email"]},
        promptless_verify_user_exists,
        raw=True,
    ),
    ToolSpec(
        "rublon_prompt_init_transaction",
        "Initialize a prompt-mode transaction for a user you act for and return its webURI, the page the person "
        "opens; Rublon then sends the browser to callbackUrl with rublonToken." + _RAW_NOTE,
        {
            "type": "object",
            "properties": {
                "username": {"type": "string"},
                "email": {"type": "string"},
                "callbackUrl": {"type": "string"},
                "logoutUrl": {"type": "string"},
                "params": _PARAMS_OF_STRINGS,
            },
            "required": ["username", "email", "callbackUrl", "logoutUrl"],
        },
        prompt_init_transaction,
        raw=True,
    ),
    ToolSpec(
        "rublon_prompt_get_credentials",
        "Validate an access token of a prompt transaction you opened and return the credentials JSON." + _RAW_NOTE,
        {"type": "object", "properties": {"accessToken": {"type": "string"}}, "required": ["accessToken"]},
        prompt_get_credentials,
        raw=True,
    ),
    ToolSpec(
        "mfa_gate_submit",
        "Submit a critical action through the gate. Answers at once with its id, status and reason: queued "
        "(allowed), submitted/awaiting_approval (a person is asked), denied or blocked. Never blocks on a person; "
        "use mfa_gate_wait.",
        {
            "type": "object",
            "properties": {
                "action": {"type": "string", "description": "the registered action, e.g. http.request"},
                "params": {"type": "object", "description": "the action's params"},
                "user": {"type": "string", "description": "the user you act for, who approves"},
                "email": {"type": "string", "description": "optional; checked against the directory"},
                "context": {"type": "object", "description": "context for the policy and a note for the person"},
                "idempotency_key": {"type": "string", "description": "the same key twice gives one action"},
            },
            "required": ["action", "user"],
        },
        gate_submit,
        raw=False,
    ),
    ToolSpec(
        "mfa_gate_status",
        "Read one of your actions: status, reason, result.",
        {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]},
        gate_status,
        raw=False,
    ),
    ToolSpec(
        "mfa_gate_wait",
        "Wait until one of your actions is final or timeoutSeconds pass (bounded by the server), then read it.",
        {
            "type": "object",
            "properties": {"id": {"type": "string"}, "timeoutSeconds": {"type": "number", "minimum": 0}},
            "required": ["id"],
        },
        gate_wait,
        raw=False,
    ),
    ToolSpec(
        "mfa_gate_cancel",
        "Cancel one of your actions that was not released; its Rublon transaction is cancelled and the push withdrawn.",
        {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]},
        gate_cancel,
        raw=False,
    ),
)
TOOLS_BY_NAME = {tool.name: tool for tool in TOOLS}
_VALIDATORS = {tool.name: Draft202012Validator(tool.input_schema) for tool in TOOLS}


# --------------------------------------------------------------------------- dispatch


def check_arguments(tool: ToolSpec, arguments: Mapping[str, Any]) -> None:
    """Validate ``arguments`` against the tool's schema; unknown names are refused too.

    Raises ToolError: ``invalid arguments: <field>: <what is wrong>``.
    """
    known = tool.input_schema.get("properties", {})
    unknown = sorted(set(arguments) - set(known))
    if unknown:
        raise ToolError(
            f"invalid arguments: {', '.join(unknown)}: not an argument of {tool.name}; it takes {', '.join(known)}"
        )
    error = next(iter(sorted(_VALIDATORS[tool.name].iter_errors(arguments), key=lambda e: list(e.path))), None)
    if error is not None:
        where = ".".join(str(part) for part in error.path) or "arguments"
        raise ToolError(f"invalid arguments: {where}: {error.message}")


def _result(body: dict[str, Any]) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=json.dumps(body, sort_keys=True))], structured_content=body
    )


def _failure(message: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=message)], is_error=True)


async def call_tool(
    runtime: Runtime, agent: Agent, source_ip: str | None, name: str, arguments: Any
) -> types.CallToolResult:
    """Run tool ``name`` for ``agent``; every failure is a tool error, never an exception."""
    tool = TOOLS_BY_NAME.get(name)
    if tool is None:
        return _failure(f"unknown tool {name!r}; the tools are {', '.join(TOOLS_BY_NAME)}")
    call = Call(runtime=runtime, agent=agent, source_ip=source_ip, tool=name)
    message: str
    try:
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            raise ToolError("invalid arguments: must be an object")
        check_arguments(tool, arguments)
        body = await tool.run(call, arguments)
    except ToolError as exc:
        message = str(exc)
    except SubmissionError as exc:
        message = f"{exc.field}: {exc.message}"
    except RublonError as exc:
        message = _rublon_message(exc)
    except Exception:  # a bug or a store outage: the agent gets an error, the server goes on
        log.exception("MCP tool %s failed for agent %s", name, agent.name)
        message = "internal error in the gate (logged on the server); try again later"
    else:
        await _record(call, outcome="ok", error=None)
        return _result(body)
    await _record(call, outcome="error", error=message)
    return _failure(message)


async def _record(call: Call, *, outcome: str, error: str | None) -> None:
    """The audit event of a finished call: RESULT_EVENT once charged, REFUSED_EVENT for a refusal."""
    if call.charged:
        event, data = RESULT_EVENT, {**call.audit, "tool": call.tool, "outcome": outcome}
    elif error is not None:
        event, data = REFUSED_EVENT, {"tool": call.tool, "reason": error, "source_ip": call.source_ip}
    else:
        return
    if error is not None:
        data["error"] = error
    try:
        await asyncio.to_thread(call.store.audit, event, actor=call.actor, data=data)
    except Exception:  # the answer still goes out; the log says what the trail misses
        log.exception("could not audit MCP call %s of agent %s", call.tool, call.agent.name)


# --------------------------------------------------------------------------- the server


def _caller(ctx: ServerRequestContext[Any, Any]) -> tuple[Agent, str | None]:
    request = ctx.request
    agent = request.scope.get(AGENT_SCOPE_KEY) if isinstance(request, Request) else None
    if not isinstance(agent, Agent):
        # Only reachable if the server were served without McpEndpoint in front of it.
        raise ToolError("not authenticated: send 'Authorization: Bearer <credential>'")
    return agent, request.client.host if isinstance(request, Request) and request.client else None


def build_server(runtime: Runtime) -> Server[Any]:
    """The low-level MCP server with the tools of ``TOOLS``."""

    async def list_tools(
        ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[tool.listed() for tool in TOOLS])

    async def on_call_tool(
        ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        try:
            agent, source_ip = _caller(ctx)
        except ToolError as exc:
            return _failure(str(exc))
        return await call_tool(runtime, agent, source_ip, params.name, params.arguments)

    def input_schema(name: str) -> dict[str, Any] | None:
        tool = TOOLS_BY_NAME.get(name)
        return _copy(tool.input_schema) if tool else None

    return Server(
        SERVER_NAME,
        version=SERVER_VERSION,
        instructions=(
            "mfa-gate holds critical actions until a person approves them with Rublon MFA. Submit with "
            "mfa_gate_submit, then mfa_gate_wait. The rublon_* tools talk to Rublon directly and can never "
            "release an action."
        ),
        get_tool_input_schema=input_schema,
        on_list_tools=list_tools,
        on_call_tool=on_call_tool,
    )


class McpEndpoint:
    """ASGI app at ``/mcp``: authenticates the agent, then hands the request to the SDK.

    The agent is put in the ASGI scope for the tool handlers, and as the scope's user, which
    the SDK uses to bind a stateful session to the credential that opened it.
    """

    def __init__(self, runtime: Runtime, manager: StreamableHTTPSessionManager) -> None:
        self.runtime = runtime
        self.manager = manager

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        try:
            agent = await authenticate(self.runtime, Request(scope, receive))
        except Unauthenticated as exc:
            body = {"error": {"field": "authorization", "message": f"{exc}; send 'Authorization: Bearer <credential>'"}}
            response = JSONResponse(body, status_code=401, headers={"WWW-Authenticate": "Bearer"})
            await response(scope, receive, send)
            return
        scope[AGENT_SCOPE_KEY] = agent
        # The token field stays empty: the SDK only compares client ids, and the credential is kept nowhere.
        scope["user"] = AuthenticatedUser(AccessToken(token="", client_id=f"agent:{agent.name}", scopes=[]))
        scope["auth"] = AuthCredentials([])
        await self.manager.handle_request(scope, receive, send)


def mount_mcp(app: FastAPI, runtime: Runtime) -> StreamableHTTPSessionManager:
    """Serve the MCP server at ``/mcp`` of ``app``; its session manager runs in the app's lifespan."""
    server = build_server(runtime)
    # No DNS-rebinding Host check: every request needs the agent's bearer credential, which a
    # browser tricked into calling us does not hold.
    manager = StreamableHTTPSessionManager(app=server)
    app.router.routes.append(Route(MCP_PATH, endpoint=McpEndpoint(runtime, manager)))
    outer = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(target: Any) -> AsyncIterator[Any]:
        async with manager.run(), outer(target) as state:
            yield state

    app.router.lifespan_context = lifespan
    return manager


__all__ = [
    "MCP_PATH",
    "TOOLS",
    "McpEndpoint",
    "ToolError",
    "build_server",
    "call_tool",
    "check_arguments",
    "limit_refusal",
    "mount_mcp",
]
