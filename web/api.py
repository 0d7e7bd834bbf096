"""The REST API for agents: submit, read, wait for and cancel actions."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from store import Action
from store.transitions import FINAL
from tasks.submission import SubmissionError, cancel, parse_request, submit
from web.auth import authenticate
from web.state import runtime_of

router = APIRouter(prefix="/v1")
WAIT_POLL_SECONDS = 0.1
# A hard cap before parsing; params and context have their own, smaller limits named in errors.
MAX_BODY_BYTES = 1_048_576


def action_body(action: Action, *, replay: bool = False) -> dict[str, Any]:
    """The API's view of an action."""
    body = action.public()
    body["final"] = action.status in FINAL
    if replay:
        body["idempotent_replay"] = True
    return body


@router.post("/actions")
async def submit_action(request: Request) -> JSONResponse:
    """Submit a critical action; answers at once with its id, status and reason."""
    runtime = runtime_of(request)
    agent = await authenticate(runtime, request)
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise SubmissionError(413, "body", f"is larger than {MAX_BODY_BYTES} bytes; keep params and context small")
    try:
        payload = json.loads(raw)
    except ValueError:
        raise SubmissionError(400, "body", "is not valid JSON") from None
    submission = parse_request(payload)
    source_ip = request.client.host if request.client else None
    done = await run_in_threadpool(
        submit, runtime, submission, agent=agent.name, source_ip=source_ip, actor=f"agent:{agent.name}"
    )
    return JSONResponse(action_body(done.action, replay=not done.created), status_code=201 if done.created else 200)


async def _own(request: Request, action_id: str) -> Action:
    runtime = runtime_of(request)
    agent = await authenticate(runtime, request)
    action = await run_in_threadpool(runtime.store.get, action_id)
    if action is None or action.agent != agent.name:
        raise SubmissionError(404, "id", f"no action {action_id!r} for this agent")
    return action


@router.get("/actions/{action_id}")
async def get_action(request: Request, action_id: str) -> JSONResponse:
    """An action of the calling agent."""
    return JSONResponse(action_body(await _own(request, action_id)))


@router.get("/actions/{action_id}/wait")
async def wait_action(request: Request, action_id: str, timeout: float = 30.0) -> JSONResponse:
    """Wait until the action is final or ``timeout`` seconds pass (bounded by MFA_GATE_WAIT_MAX_SECONDS)."""
    runtime = runtime_of(request)
    if not 0 <= timeout <= runtime.settings.wait_max_seconds:
        raise SubmissionError(422, "timeout", f"must be between 0 and {runtime.settings.wait_max_seconds} seconds")
    action = await _own(request, action_id)
    deadline = time.monotonic() + timeout
    while action.status not in FINAL and time.monotonic() < deadline:
        await asyncio.sleep(WAIT_POLL_SECONDS)
        action = await run_in_threadpool(runtime.store.require, action_id)
    return JSONResponse(action_body(action))


@router.post("/actions/{action_id}/cancel")
async def cancel_action(request: Request, action_id: str) -> JSONResponse:
    """Withdraw an action that was not released; the push is withdrawn."""
    runtime = runtime_of(request)
    agent = await authenticate(runtime, request)
    cancelled = await run_in_threadpool(cancel, runtime, action_id, agent=agent.name, actor=f"agent:{agent.name}")
    return JSONResponse(action_body(cancelled))
