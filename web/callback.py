"""The prompt-mode callback: where Rublon sends the person's browser after the prompt page.

``GET /rublon/callback/{action_id}?rublonState=ok|cancel|error&rublonToken=T``. The action
id is in the path because the callback URL is fixed when the transaction is opened, before
any token exists, and the lease must be taken before the token is exchanged.

- ``ok`` with a token: ``tasks.confirmation.confirm``, the listener's path: take the lease,
  exchange the token at ``transaction/credentials``, check tid, user, action id, payload
  hash and binding tag against the held action, release it once. A reused token, or one for
  another transaction, releases nothing (a token that cannot be verified blocks the action:
  it fails closed).
- ``cancel`` (the person declined; any unknown state counts as cancel) moves the action to
  ``rejected``; ``error`` (Rublon could not ask the person, e.g. a denied user) to ``blocked``.
- Only prompt-mode actions are handled here; every refusal is audited.

The answer is a small HTML page saying what happened; it never shows the token, and the
access log records the path only.
"""

from __future__ import annotations

import html
import uuid

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from rublon.errors import RublonError
from store import Action, ActionStatus
from tasks.confirmation import Outcome, confirm, confirm_exchanged, refuse
from tasks.runtime import Runtime
from web.state import runtime_of

router = APIRouter()
S = ActionStatus
CALLBACK_PATH = "/rublon/callback"

_STYLE = "body{font-family:sans-serif;max-width:36em;margin:3em auto;line-height:1.4}"


def page(title: str, text: str, status_code: int = 200) -> HTMLResponse:
    """A small HTML page: a heading and one paragraph, both escaped."""
    document = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{html.escape(title)}</h1><p>{html.escape(text)}</p></body></html>"
    )
    # The page must not be cached, nor leak the address (with its token) to anything it links.
    headers = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
    return HTMLResponse(document, status_code=status_code, headers=headers)


async def _refused(runtime: Runtime, action_id: str | None, reason: str, state: str | None, source: str | None) -> None:
    await run_in_threadpool(
        runtime.store.audit,
        "callback.refused",
        actor="callback",
        action_id=action_id,
        data={"reason": reason, "state": state, "source_ip": source},
    )


@router.get(CALLBACK_PATH)
async def callback_without_action(request: Request) -> HTMLResponse:
    """A callback that names no action: an ``ok`` token is exchanged and its echoed action id decides.

    The token is single use at Rublon, so exchanging it before the lease cannot let two
    callbacks both release; every check of ``confirm`` still applies after the exchange.
    """
    runtime = runtime_of(request)
    state = request.query_params.get("rublonState")
    token = request.query_params.get("rublonToken")
    source = request.client.host if request.client else None
    if state != "ok" or not token:
        await _refused(runtime, None, "the callback names no action", state, source)
        return page("Nothing was approved", "This link does not name a request of mfa-gate.", 404)
    try:
        creds = await run_in_threadpool(runtime.rublon.transaction_credentials, access_token=token)
    except RublonError as exc:
        await _refused(runtime, None, f"the token could not be exchanged ({type(exc).__name__})", state, source)
        return page("Nothing was approved", "The answer could not be verified; nothing was changed.", 409)
    actor = f"callback:{uuid.uuid4().hex[:8]}"
    outcome = await run_in_threadpool(confirm_exchanged, runtime, creds, actor=actor, method="prompt")
    action = await run_in_threadpool(runtime.store.get, outcome.action_id) if outcome.action_id else None
    if action is None:
        return page("Nothing was approved", "This approval does not belong to a request of mfa-gate.", 404)
    return _approval_page(action, outcome)


@router.get(CALLBACK_PATH + "/{action_id}")
async def rublon_callback(request: Request, action_id: str) -> HTMLResponse:
    """Turn the person's answer on the prompt page into a release, a rejection or nothing."""
    runtime = runtime_of(request)
    state = request.query_params.get("rublonState")
    token = request.query_params.get("rublonToken")
    source = request.client.host if request.client else None
    action = await run_in_threadpool(runtime.store.get, action_id)
    if action is None:
        await _refused(runtime, None, f"no action {action_id[:64]!r}", state, source)
        return page("Nothing was approved", "mfa-gate knows no such request.", 404)
    if action.mode != "prompt":
        await _refused(runtime, action.id, "the action is not in prompt mode", state, source)
        return page("Nothing was approved", "This request is not approved through this page.", 409)
    actor = f"callback:{uuid.uuid4().hex[:8]}"
    if state == "ok":
        if not token:
            await _refused(runtime, action.id, "rublonState=ok without rublonToken", state, source)
            return page("Nothing was approved", "The answer carried no token; nothing was changed.", 400)
        outcome = await run_in_threadpool(
            confirm, runtime, runtime.rublon, action.id, token, tid=None, actor=actor, method="prompt"
        )
        return _approval_page(action, outcome)
    if state == "error":
        why = "Rublon could not ask the person (rublonState=error)"
        outcome = await run_in_threadpool(refuse, runtime, action, new=S.BLOCKED, reason=why, actor=actor)
        return _answer_page(outcome, S.BLOCKED, "Not approved", "Rublon could not ask you; the request is blocked.")
    why = f"{action.user} declined on the Rublon page"
    outcome = await run_in_threadpool(refuse, runtime, action, new=S.REJECTED, reason=why, actor=actor)
    return _answer_page(outcome, S.REJECTED, "Declined", "You declined; the request will not run.")


def _approval_page(action: Action, outcome: Outcome) -> HTMLResponse:
    if outcome.status == S.QUEUED:
        return page("Approved", f"Thank you. The request ({action.action}) is released and will run once.")
    if outcome.status == S.AWAITING_APPROVAL:
        return page(
            "Not yet approved",
            f"The approval could not be checked right now ({outcome.detail}). Reload this page to try again.",
            503,
        )
    if outcome.status == S.BLOCKED:
        return page(
            "Not approved", f"The approval could not be verified, so the request is blocked ({outcome.detail}).", 409
        )
    return page("Nothing changed", f"This request is already {outcome.status}; this answer changed nothing.", 409)


def _answer_page(outcome: Outcome, wanted: ActionStatus, title: str, text: str) -> HTMLResponse:
    if outcome.status == wanted:
        return page(title, text)
    return page("Nothing changed", f"This request is already {outcome.status}; this answer changed nothing.", 409)
