"""The simulator's ASGI app: Rublon's API (RUBLON_API.md sections 2 and 3), the prompt
page, the confirmation WebSocket, and the `/_simulator/` control endpoints.

Everything under `/api/` behaves like Rublon: POST with a JSON body signed in
`X-Rublon-Signature`, the `{"status": "OK", "result": ...}` envelope with a signed body,
or HTTP 400 with the error envelope. Everything under `/_simulator/` is NOT Rublon: plain
unsigned JSON for tests and the CLI to steer the simulator.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

from rublon import promptless_mapping as pm
from rublon.client import APP_INIT_PATH, TRANSACTION_CREDENTIALS_PATH, TRANSACTION_INIT_PATH
from rublon.signing import SIGNATURE_HEADER, sign, verify, verify_message
from simulator.guard import refuse_in_production
from simulator.state import (
    ApiRefusal,
    SimTransaction,
    SimulatorState,
    TransactionNotPending,
    TransactionState,
    UnknownTransaction,
)

#: Seconds between the ticker's passes over delayed decisions and expiries.
TICK_INTERVAL = 0.05
#: Close code for a WebSocket refused while the fail mode is `unavailable` ("try again later").
#: Sent before the handshake is accepted, so clients see the handshake refused (HTTP 403).
CLOSE_TRY_AGAIN_LATER = 1013
#: Signing key used in `bad_signature` fail mode: any key but the app's.
_WRONG_KEY = "not-the-secret-key"

PROCESS_PATH = "/api/transaction/process"
DENY_PATH = "/api/transaction/deny"


# ---------------------------------------------------------------------------- envelope


def _json_bytes(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode("utf-8")


def ok_response(result: dict[str, Any], secret_key: str, fail_mode: str | None) -> Response:
    """HTTP 200 with the OK envelope, its body signed (wrongly in `bad_signature` mode)."""
    body = _json_bytes({"status": "OK", "result": result})
    key = _WRONG_KEY if fail_mode == "bad_signature" else secret_key
    return Response(body, media_type="application/json", headers={SIGNATURE_HEADER: sign(key, body)})


def error_response(refusal: ApiRefusal) -> Response:
    """HTTP 400 with Rublon's error envelope (unsigned, as Rublon's are)."""
    result: dict[str, Any] = {
        "exception": refusal.exception,
        "code": refusal.code,
        "errorMessage": refusal.message,
        "details": None,
    }
    if refusal.field is not None:
        result["name"] = refusal.field
    return Response(_json_bytes({"status": "ERROR", "code": 400, "result": result}), 400, media_type="application/json")


@dataclass(frozen=True)
class ApiRequest:
    """An authenticated API call: the app it came from and its JSON body."""

    system_token: str
    secret_key: str
    body: dict[str, Any]

    def text(self, name: str) -> str:
        """The non-empty string field `name`.

        Raises ApiRefusal: MissingFieldException (absent or null), EmptyInputException
        (empty), InvalidJSONException (not a string).
        """
        value = self.body.get(name)
        if value is None:
            raise ApiRefusal("MissingFieldException", f"field {name} is required", field=name)
        if not isinstance(value, str):
            raise ApiRefusal("InvalidJSONException", f"field {name} must be a string", field=name)
        if not value.strip():
            raise ApiRefusal("EmptyInputException", f"field {name} is empty", field=name)
        return value

    def optional_text(self, name: str) -> str | None:
        value = self.body.get(name)
        if value is None or value == "":
            return None
        return self.text(name)

    def params(self, name: str, *, required: bool) -> dict[str, str]:
        """The object-of-strings field `name` (``{}`` when optional and absent)."""
        value = self.body.get(name)
        if value is None:
            if required:
                raise ApiRefusal("MissingFieldException", f"field {name} is required", field=name)
            return {}
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise ApiRefusal("InvalidJSONException", f"field {name} must be an object of strings", field=name)
        return dict(value)


def authenticate(state: SimulatorState, raw: bytes, signature: str | None) -> ApiRequest:
    """Check a call as Rublon does: JSON object, known System Token, valid signature.

    Raises ApiRefusal: InvalidJSONException, MissingFieldException (systemToken),
    ApplicationNotFoundException, MissingHeaderException, InvalidSignatureException.
    """
    try:
        body = json.loads(raw)
    except ValueError:
        raise ApiRefusal("InvalidJSONException", "the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiRefusal("InvalidJSONException", "the request body must be a JSON object")
    system_token = body.get(pm.FIELD_SYSTEM_TOKEN)
    if not isinstance(system_token, str) or not system_token:
        raise ApiRefusal("MissingFieldException", "field systemToken is required", field=pm.FIELD_SYSTEM_TOKEN)
    secret_key = state.secret_for(system_token)
    if secret_key is None:
        raise ApiRefusal("ApplicationNotFoundException", "no application has this system token")
    if not signature:
        raise ApiRefusal("MissingHeaderException", f"header {SIGNATURE_HEADER} is required", field=SIGNATURE_HEADER)
    if not verify(secret_key, raw, signature):
        raise ApiRefusal("InvalidSignatureException", "the request signature is not valid")
    return ApiRequest(system_token=system_token, secret_key=secret_key, body=body)


ApiHandler = Callable[[SimulatorState, ApiRequest, Request], dict[str, Any]]


def api_route(path: str, handler: ApiHandler) -> Route:
    """A POST route that authenticates the call, runs `handler` and wraps its result or
    refusal in Rublon's envelope; honours the fail mode.
    """

    async def endpoint(request: Request) -> Response:
        state: SimulatorState = request.app.state.simulator
        state.record_call(path)
        raw = await request.body()
        fail_mode = state.fail_mode
        if fail_mode == "unavailable":
            return JSONResponse({"error": "simulated outage"}, status_code=503)
        try:
            call = authenticate(state, raw, request.headers.get(SIGNATURE_HEADER))
            result = handler(state, call, request)
        except ApiRefusal as refusal:
            return error_response(refusal)
        return ok_response(result, call.secret_key, fail_mode)

    return Route(path, endpoint, methods=["POST"])


# ---------------------------------------------------------------------------- API handlers


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def handle_app_init(state: SimulatorState, call: ApiRequest, request: Request) -> dict[str, Any]:
    call.text("appVer")
    call.params("params", required=False)
    return state.app_info(call.system_token)


def handle_transaction_init(state: SimulatorState, call: ApiRequest, request: Request) -> dict[str, Any]:
    transaction = state.init_prompt(
        call.system_token,
        username=call.text("username"),
        callback_url=call.text("callbackUrl"),
        email=call.optional_text("userEmail"),
        params=call.params("params", required=False),
    )
    prefix = DENY_PATH if transaction.state is TransactionState.DENIED else PROCESS_PATH
    return {"webURI": f"{_base_url(request)}{prefix}/{transaction.tid}"}


def handle_transaction_credentials(state: SimulatorState, call: ApiRequest, request: Request) -> dict[str, Any]:
    return state.exchange_token(call.system_token, call.text("accessToken"))


def handle_user_verify(state: SimulatorState, call: ApiRequest, request: Request) -> dict[str, Any]:
    return state.verify_user(call.system_token, call.text(pm.FIELD_USER_EMAIL))


def handle_promptless_init(state: SimulatorState, call: ApiRequest, request: Request) -> dict[str, Any]:
    transaction = state.init_promptless(
        call.system_token,
        username=call.text(pm.FIELD_USERNAME),
        email=call.text(pm.FIELD_USER_EMAIL),
        params=call.params(pm.FIELD_PARAMS, required=True),
    )
    return {
        pm.RESULT_TID: transaction.tid,
        pm.RESULT_METHODS: list(transaction.methods),
        pm.RESULT_EXPIRES_IN: round(state.expires_in),
    }


def handle_send_method(state: SimulatorState, call: ApiRequest, request: Request) -> dict[str, Any]:
    method = call.optional_text(pm.FIELD_METHOD) or pm.DEFAULT_METHOD
    return state.send_method(call.system_token, call.text(pm.FIELD_TID), method)


def handle_submit_code(state: SimulatorState, call: ApiRequest, request: Request) -> dict[str, Any]:
    return state.submit_code(
        call.system_token, call.text(pm.FIELD_TID), call.text(pm.FIELD_METHOD), call.text(pm.FIELD_CODE)
    )


def handle_cancel(state: SimulatorState, call: ApiRequest, request: Request) -> dict[str, Any]:
    return state.cancel(call.system_token, call.text(pm.FIELD_TID))


# ---------------------------------------------------------------------------- prompt page


def with_query(url: str, params: dict[str, str]) -> str:
    """`url` with `params` added to (not replacing) its query string."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))


def _page(title: str, body: str, status_code: int = 200) -> HTMLResponse:
    document = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;max-width:36em;margin:3em auto}"
        "form{display:inline;margin-right:1em}button{font-size:1.2em;padding:.4em 1.2em}</style>"
        f"</head><body><p><small>Rublon simulator: a development tool, not Rublon.</small></p>{body}</body></html>"
    )
    return HTMLResponse(document, status_code=status_code)


def _lookup(state: SimulatorState, request: Request) -> SimTransaction | None:
    try:
        return state.transaction(request.path_params["tid"])
    except UnknownTransaction:
        return None


async def prompt_page(request: Request) -> Response:
    """The page at webURI: what is asked, with Approve and Deny buttons."""
    state: SimulatorState = request.app.state.simulator
    transaction = _lookup(state, request)
    if transaction is None or transaction.mode != "prompt":
        return _page("Unknown transaction", "<h1>Unknown transaction</h1>", 404)
    tid = html.escape(transaction.tid)
    if transaction.state is not TransactionState.PENDING:
        return _page("Transaction closed", f"<h1>This transaction is {html.escape(transaction.state)}</h1>", 409)
    rows = "".join(
        f"<tr><th>{html.escape(key)}</th><td>{html.escape(value)}</td></tr>"
        for key, value in transaction.params.items()
    )
    body = (
        f"<h1>Approve this request?</h1><p>User <b>{html.escape(transaction.username)}</b>"
        f" ({html.escape(transaction.email or '')})</p><table>{rows}</table>"
        f'<form method=post action="{PROCESS_PATH}/{tid}/approve"><button id=approve>Approve</button></form>'
        f'<form method=post action="{PROCESS_PATH}/{tid}/deny"><button id=deny>Deny</button></form>'
    )
    return _page("Rublon simulator: approve?", body)


async def prompt_decide(request: Request) -> Response:
    """The buttons: 303 to callbackUrl with rublonState=ok&rublonToken=T, or cancel."""
    state: SimulatorState = request.app.state.simulator
    transaction = _lookup(state, request)
    decision = request.path_params["decision"]
    if transaction is None or transaction.mode != "prompt" or transaction.callback_url is None:
        return _page("Unknown transaction", "<h1>Unknown transaction</h1>", 404)
    if decision not in ("approve", "deny"):
        return _page("Unknown decision", "<h1>Unknown decision</h1>", 404)
    try:
        if decision == "approve":
            token = state.approve(transaction.tid)
            target = with_query(transaction.callback_url, {"rublonState": "ok", "rublonToken": token})
        else:
            state.deny(transaction.tid)
            target = with_query(transaction.callback_url, {"rublonState": "cancel"})
    except TransactionNotPending as exc:
        return _page("Transaction closed", f"<h1>This transaction is {html.escape(exc.state)}</h1>", 409)
    return RedirectResponse(target, status_code=303)


async def deny_page(request: Request) -> Response:
    """The page at a denied user's webURI; its link returns with rublonState=error."""
    state: SimulatorState = request.app.state.simulator
    transaction = _lookup(state, request)
    if transaction is None or transaction.callback_url is None:
        return _page("Unknown transaction", "<h1>Unknown transaction</h1>", 404)
    back = html.escape(with_query(transaction.callback_url, {"rublonState": "error"}))
    return _page("Access denied", f'<h1>An administrator denied access for this user</h1><a href="{back}">Back</a>')


# ---------------------------------------------------------------------------- WebSocket


@dataclass(frozen=True)
class _Close:
    code: int
    reason: str


_connection_ids = itertools.count(1)


def _handle_subscribe(
    state: SimulatorState, text: str | None, subscriber: int, sink: Callable[[dict[str, Any]], None]
) -> _Close | None:
    """Handle one client message; returns the close to send, or None to go on."""
    try:
        message = json.loads(text) if text is not None else None
    except ValueError:
        message = None
    if not isinstance(message, dict) or message.get(pm.MSG_TYPE) != pm.TYPE_SUBSCRIBE:
        return _Close(pm.CLOSE_BAD_MESSAGE, "expected a JSON subscribe message")
    system_token = message.get(pm.MSG_SYSTEM_TOKEN)
    if not isinstance(system_token, str):
        return _Close(pm.CLOSE_UNAUTHORIZED, "unknown system token")
    secret_key = state.secret_for(system_token)
    if secret_key is None:
        return _Close(pm.CLOSE_UNAUTHORIZED, "unknown system token")
    try:
        authentic = verify_message(secret_key, message)
    except (TypeError, ValueError):  # e.g. a float NaN that canonical JSON refuses
        return _Close(pm.CLOSE_BAD_MESSAGE, "message cannot be canonicalized")
    if not authentic:
        return _Close(pm.CLOSE_UNAUTHORIZED, "bad signature")
    tid = message.get(pm.MSG_TID)
    if not isinstance(tid, str) or not tid:
        return _Close(pm.CLOSE_BAD_MESSAGE, "subscribe needs a tid")
    state.subscribe(system_token, tid, subscriber, sink)
    return None


async def confirmation_socket(websocket: WebSocket) -> None:
    """The confirmation channel: many subscriptions over one connection.

    Every outgoing frame, close included, goes through one queue drained by one writer
    task, so messages keep their order and sends never interleave.
    """
    state: SimulatorState = websocket.app.state.simulator
    state.record_call(pm.WS_PATH)
    if state.fail_mode == "unavailable":
        await websocket.close(code=CLOSE_TRY_AGAIN_LATER)  # before accept: the handshake is refused
        return
    await websocket.accept()
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[dict[str, Any] | _Close] = asyncio.Queue()
    subscriber = next(_connection_ids)

    def sink(item: dict[str, Any] | _Close) -> None:
        # Called under the state's lock, possibly from another thread: only hand over.
        loop.call_soon_threadsafe(queue.put_nowait, item)

    writer = asyncio.create_task(_write(websocket, queue, state))
    try:
        while not writer.done():
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            state.record_call(f"{pm.WS_PATH} {pm.TYPE_SUBSCRIBE}")
            close = _handle_subscribe(state, message.get("text"), subscriber, sink)
            if close is not None:
                sink(close)
                await writer
                break
    finally:
        state.unsubscribe(subscriber)
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await writer


async def _write(websocket: WebSocket, queue: asyncio.Queue[dict[str, Any] | _Close], state: SimulatorState) -> None:
    with contextlib.suppress(Exception):  # the peer went away: nothing left to write to
        while True:
            item = await queue.get()
            if isinstance(item, _Close):
                await websocket.close(code=item.code, reason=item.reason)
                return
            text = json.dumps(item, separators=(",", ":"))
            state.note_sent(item, time.time())
            await websocket.send_text(text)


# ---------------------------------------------------------------------------- control


def _control_error(message: str, status_code: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status_code)


async def _json_body(request: Request) -> dict[str, Any] | None:
    raw = await request.body()
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


async def control_transactions(request: Request) -> Response:
    state: SimulatorState = request.app.state.simulator
    return JSONResponse({"transactions": state.transactions()})


async def control_transaction(request: Request) -> Response:
    state: SimulatorState = request.app.state.simulator
    try:
        return JSONResponse(state.transaction_json(request.path_params["tid"]))
    except UnknownTransaction:
        return _control_error("unknown transaction", 404)


async def control_decide(request: Request) -> Response:
    """approve / deny / expire a transaction; approve answers with the access token."""
    state: SimulatorState = request.app.state.simulator
    tid = request.path_params["tid"]
    action = request.path_params["action"]
    if action not in ("approve", "deny", "expire"):
        return _control_error("unknown action; use approve, deny, expire or forge", 404)
    try:
        answer: dict[str, Any] = {"tid": tid}
        if action == "approve":
            answer["accessToken"] = state.approve(tid)
        elif action == "deny":
            state.deny(tid)
        else:
            state.expire(tid)
    except UnknownTransaction:
        return _control_error("unknown transaction", 404)
    except TransactionNotPending as exc:
        return _control_error(str(exc), 409)
    answer["state"] = state.transaction_json(tid)["state"]
    return JSONResponse(answer)


async def control_forge(request: Request) -> Response:
    state: SimulatorState = request.app.state.simulator
    tid = request.path_params["tid"]
    body = await _json_body(request)
    token = (body or {}).get("accessToken")
    if not isinstance(token, str) or not token:
        return _control_error('body must be {"accessToken": "..."}', 400)
    try:
        reached = state.forge(tid, token)
    except UnknownTransaction:
        return _control_error("unknown transaction", 404)
    return JSONResponse({"tid": tid, "forged": True, "subscribers": reached})


async def control_decision(request: Request) -> Response:
    state: SimulatorState = request.app.state.simulator
    body = await _json_body(request)
    if body is None or not isinstance(body.get("decision"), str):
        return _control_error('body must be {"decision": "...", "tid": optional}', 400)
    tid = body.get("tid")
    if tid is not None and not isinstance(tid, str):
        return _control_error("tid must be a string", 400)
    try:
        decision = state.set_decision(body["decision"], tid)
    except ValueError as exc:
        return _control_error(str(exc), 400)
    except UnknownTransaction:
        return _control_error("unknown transaction", 404)
    return JSONResponse({"decision": str(decision), "tid": tid})


async def control_user(request: Request) -> Response:
    state: SimulatorState = request.app.state.simulator
    body = await _json_body(request)
    if body is None or not isinstance(body.get("email"), str):
        return _control_error('body must be {"email": "...", "status": "active|bypass|denied", "methods": [...]}', 400)
    status = body.get("status", pm.USER_STATUS_ACTIVE)
    methods = body.get("methods")
    if not isinstance(status, str) or (methods is not None and not isinstance(methods, list)):
        return _control_error("status must be a string and methods a list", 400)
    try:
        user = state.set_user(request.path_params["username"], email=body["email"], status=status, methods=methods)
    except ValueError as exc:
        return _control_error(str(exc), 400)
    return JSONResponse(user.to_json())


async def control_stats(request: Request) -> Response:
    state: SimulatorState = request.app.state.simulator
    return JSONResponse(state.stats())


async def control_fail(request: Request) -> Response:
    state: SimulatorState = request.app.state.simulator
    body = await _json_body(request)
    if body is None or "mode" not in body:
        return _control_error('body must be {"mode": "unavailable" | "bad_signature" | null}', 400)
    try:
        state.set_fail_mode(body["mode"])
    except (ValueError, TypeError) as exc:
        return _control_error(str(exc), 400)
    return JSONResponse({"mode": state.fail_mode})


async def control_health(request: Request) -> Response:
    return JSONResponse({"ok": True})


# ---------------------------------------------------------------------------- app


def _routes() -> list[BaseRoute]:
    return [
        api_route(APP_INIT_PATH, handle_app_init),
        api_route(TRANSACTION_INIT_PATH, handle_transaction_init),
        api_route(TRANSACTION_CREDENTIALS_PATH, handle_transaction_credentials),
        api_route(pm.USER_VERIFY_PATH, handle_user_verify),
        api_route(pm.TRANSACTION_INIT_PATH, handle_promptless_init),
        api_route(pm.TRANSACTION_METHOD_PATH, handle_send_method),
        api_route(pm.TRANSACTION_CODE_PATH, handle_submit_code),
        api_route(pm.TRANSACTION_CANCEL_PATH, handle_cancel),
        Route(PROCESS_PATH + "/{tid}", prompt_page, methods=["GET"]),
        Route(PROCESS_PATH + "/{tid}/{decision}", prompt_decide, methods=["POST"]),
        Route(DENY_PATH + "/{tid}", deny_page, methods=["GET"]),
        WebSocketRoute(pm.WS_PATH, confirmation_socket),
        Route("/_simulator/health", control_health, methods=["GET"]),
        Route("/_simulator/transactions", control_transactions, methods=["GET"]),
        Route("/_simulator/transactions/{tid}", control_transaction, methods=["GET"]),
        Route("/_simulator/transactions/{tid}/forge", control_forge, methods=["POST"]),
        Route("/_simulator/transactions/{tid}/{action}", control_decide, methods=["POST"]),
        Route("/_simulator/decision", control_decision, methods=["POST"]),
        Route("/_simulator/users/{username}", control_user, methods=["PUT"]),
        Route("/_simulator/stats", control_stats, methods=["GET"]),
        Route("/_simulator/fail", control_fail, methods=["POST"]),
    ]


def create_app(state: SimulatorState) -> Starlette:
    """The simulator as an ASGI app over `state`.

    A background ticker (started by the app's lifespan) applies delayed decisions and
    expiries a few times a second, so subscribers hear about them on time.

    Raises:
        SimulatorRefused: MFA_GATE_ENV is `production`.
    """
    refuse_in_production()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        ticker = asyncio.create_task(_tick_forever(state))
        try:
            yield
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker

    app = Starlette(routes=_routes(), lifespan=lifespan)
    app.state.simulator = state
    return app


async def _tick_forever(state: SimulatorState) -> None:
    while True:
        state.tick()
        await asyncio.sleep(TICK_INTERVAL)
