"""HTTP client for the Rublon API (RUBLON_API.md sections 1-3), sync and async.

`RublonClient` (httpx.Client) and `AsyncRublonClient` (httpx.AsyncClient) expose the
same methods. Neither holds any protocol logic of its own: `_ApiCore` builds every
request (`_Call`: path, body fields, result parser) and interprets every response, and
each client only moves the bytes. So signing, verifying and error mapping exist once.

The rules the core enforces:
- the body is serialized once; those exact bytes are signed and sent (`content=`);
- an HTTP 200 answer is used only when its `X-Rublon-Signature` verifies over the raw
  body (constant-time), otherwise `RublonBadSignature`;
- an HTTP 400 answer is Rublon's error envelope and becomes a `RublonApiError` subclass;
- anything else (other statuses, timeouts, refused connections, bodies that are not
  the envelope) is `RublonUnavailable`, so callers fail closed;
- the Secret Key is never sent and never appears in an error, nor does an access token.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Generic, Self, TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx

from rublon import promptless_mapping as pm
from rublon.errors import (
    RublonBadSignature,
    RublonMalformedResponse,
    RublonUnavailable,
    api_error_from_result,
    redact_secrets,
)
from rublon.signing import SIGNATURE_HEADER, sign, verify

#: Told of every call: its path, its duration in seconds, and the error it raised (or None).
#: The client stays free of any metrics library; the caller decides what to record.
CallObserver = Callable[[str, float, BaseException | None], None]


@contextmanager
def _observed(observer: CallObserver | None, path: str) -> Iterator[None]:
    """Time the block and tell ``observer`` its path, duration and error (sync and async calls alike)."""
    started, error = time.perf_counter(), None
    try:
        yield
    except BaseException as exc:
        error = exc
        raise
    finally:
        if observer is not None:
            observer(path, time.perf_counter() - started, error)


#: Rublon's public API server; deployments override it with RUBLON_API_SERVER.
DEFAULT_API_SERVER = "https://core.rublon.net"
#: Seconds to wait for Rublon; the official SDKs use 30 s.
DEFAULT_TIMEOUT = 30.0
#: Names this client in the User-Agent header (Rublon does not validate it).
DEFAULT_USER_AGENT = "mfa-gate/0.1"
#: Sent as `appVer` by app/init unless the caller says otherwise.
DEFAULT_APP_VERSION = "mfa-gate/0.1"

# Paths of the documented calls (section 2). Promptless paths are project-defined and
# live in rublon.promptless_mapping.
APP_INIT_PATH = "/api/app/init"
TRANSACTION_INIT_PATH = "/api/transaction/init"
TRANSACTION_CREDENTIALS_PATH = "/api/transaction/credentials"
#: Path prefix of the webURI Rublon returns for a user an administrator denied.
TRANSACTION_DENY_PATH_PREFIX = "/api/transaction/deny/"

T = TypeVar("T")


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class PromptTransaction:
    """A prompt-mode transaction: send the person's browser to `web_uri`.

    `tid` is the last path segment of `web_uri` (the transaction id).
    """

    web_uri: str
    tid: str

    @property
    def user_denied(self) -> bool:
        """True when Rublon answered with its deny page: an administrator denied the user."""
        return urlsplit(self.web_uri).path.startswith(TRANSACTION_DENY_PATH_PREFIX)


@dataclass(frozen=True)
class Credentials:
    """The signed answer of transaction/credentials: who approved, for which transaction.

    `raw_body` is the exact response body and `signature` its verified
    `X-Rublon-Signature`, kept so the approval can be stored and re-verified later.
    `params` holds only the string values of the echoed init params (the ones this
    project sends); anything else stays in `raw_body`.
    """

    username: str
    email: str | None
    system_token: str | None
    params: dict[str, str]
    tid: str | None
    raw_body: bytes = field(repr=False)
    signature: str


@dataclass(frozen=True)
class UserStatus:
    """Answer of the promptless user/verify call."""

    exists: bool
    status: str
    methods: list[str]


@dataclass(frozen=True)
class PromptlessTransaction:
    """An open promptless transaction: its id, the methods allowed, seconds until it expires."""

    tid: str
    methods: list[str]
    expires_in: int


@dataclass(frozen=True)
class MethodSent:
    """Answer of transaction/method: whether the method (e.g. the push) was sent."""

    tid: str
    method: str
    sent: bool


# --------------------------------------------------------------------------- core


@dataclass(frozen=True)
class _SignedResult:
    """The `result` of a verified OK answer, with the bytes and signature it came in."""

    path: str
    result: dict[str, Any]
    raw_body: bytes
    signature: str


@dataclass(frozen=True)
class _Call(Generic[T]):
    """One API call: where it goes, what it sends, how to read its result."""

    path: str
    fields: dict[str, Any]
    parse: Callable[[_SignedResult], T]
    #: Values sent in this call that must never show in an error (access tokens).
    secrets: tuple[str, ...] = ()


@dataclass(frozen=True)
class _PreparedRequest:
    url: str
    content: bytes
    headers: dict[str, str]


class _ApiCore:
    """Everything both clients share: building, signing, verifying, parsing."""

    def __init__(self, *, api_server: str, system_token: str, secret_key: str, user_agent: str) -> None:
        scheme = urlsplit(api_server).scheme
        if scheme not in ("http", "https"):
            raise ValueError(f"api_server must be an http(s) URL, got scheme {scheme!r}")
        if not system_token or not secret_key:
            raise ValueError("system_token and secret_key must both be set (RUBLON_SYSTEM_TOKEN, RUBLON_SECRET_KEY)")
        self.api_server = api_server.rstrip("/")
        self.system_token = system_token
        self._secret_key = secret_key
        self.user_agent = user_agent

    def __repr__(self) -> str:
        # The Secret Key stays out of reprs, which end up in logs and tracebacks.
        return f"_ApiCore(api_server={self.api_server!r}, system_token={self.system_token!r})"

    # -- transport ------------------------------------------------------------------

    def prepare(self, call: _Call[Any]) -> _PreparedRequest:
        """Serialize the body once and sign exactly those bytes."""
        body = {pm.FIELD_SYSTEM_TOKEN: self.system_token, **call.fields}
        content = json.dumps(body, separators=(",", ":")).encode("utf-8")
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": self.user_agent,
            SIGNATURE_HEADER: sign(self._secret_key, content),
        }
        return _PreparedRequest(url=self.api_server + call.path, content=content, headers=headers)

    def transport_failed(self, call: _Call[Any], exc: httpx.HTTPError) -> RublonUnavailable:
        """The error for a call that got no HTTP answer at all."""
        kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "failed"
        detail = self._redact(f"{type(exc).__name__}: {exc}", call)
        return RublonUnavailable(f"Rublon call {call.path} {kind} ({detail}); retry later")

    def interpret(self, call: _Call[T], response: httpx.Response) -> T:
        """Turn an HTTP answer into the call's result or the matching exception.

        Raises:
            RublonBadSignature: HTTP 200 with a missing or wrong signature.
            RublonApiError (a subclass per known name): HTTP 400 error envelope.
            RublonUnavailable: any other status or a body that is not the envelope;
                `RublonMalformedResponse` when a signed result lacks a needed field.
        """
        status = response.status_code
        body = response.content
        if status == 200:
            signature = response.headers.get(SIGNATURE_HEADER)
            if not verify(self._secret_key, body, signature):
                what = "a wrong" if signature else "no"
                raise RublonBadSignature(
                    f"Rublon's answer to {call.path} carries {what} {SIGNATURE_HEADER}; nothing in it was used. "
                    "Check that the Secret Key belongs to the System Token."
                )
            assert signature is not None  # verify() is False for None
            envelope = self._envelope(call, body, status)
            if envelope.get("status") != "OK":
                status_field = envelope.get("status")
                raise RublonUnavailable(f"Rublon answered {call.path} with HTTP 200 but status {status_field!r}")
            result = envelope.get("result")
            # Rublon's PHP heritage encodes an empty result as [] (or null); both mean "no fields".
            if result is None or result == []:
                result = {}
            if not isinstance(result, dict):
                raise RublonMalformedResponse(f"Rublon's answer to {call.path} has a result that is not an object")
            return call.parse(_SignedResult(path=call.path, result=result, raw_body=body, signature=signature))
        if status == 400:
            envelope = self._envelope(call, body, status)
            result = envelope.get("result")
            if (
                envelope.get("status") != "ERROR"
                or not isinstance(result, dict)
                or not isinstance(result.get("exception"), str)
            ):
                raise RublonUnavailable(f"Rublon answered {call.path} with HTTP 400 but no error envelope")
            raise api_error_from_result(result, redact=self._secrets(call))
        raise RublonUnavailable(f"Rublon answered {call.path} with HTTP {status}; retry later")

    def _envelope(self, call: _Call[Any], body: bytes, status: int) -> dict[str, Any]:
        try:
            envelope = json.loads(body)
        except ValueError:  # json.JSONDecodeError and UnicodeDecodeError both are ValueErrors
            message = f"Rublon answered {call.path} with HTTP {status} and a body that is not JSON"
            raise RublonUnavailable(message) from None
        if not isinstance(envelope, dict):
            raise RublonUnavailable(f"Rublon answered {call.path} with HTTP {status} and a body that is not an object")
        return envelope

    def _secrets(self, call: _Call[Any]) -> tuple[str, ...]:
        return (self._secret_key, *call.secrets)

    def _redact(self, text: str, call: _Call[Any]) -> str:
        return redact_secrets(text, self._secrets(call))

    # -- calls ----------------------------------------------------------------------

    def app_init(self, app_ver: str, params: Mapping[str, Any] | None) -> _Call[dict[str, Any]]:
        fields = {"appVer": app_ver, "params": dict(params or {})}
        return _Call(APP_INIT_PATH, fields, lambda signed: dict(signed.result))

    def transaction_init(
        self, username: str, callback_url: str, user_email: str | None, params: Mapping[str, str] | None
    ) -> _Call[PromptTransaction]:
        fields: dict[str, Any] = {"username": username, "callbackUrl": callback_url}
        if user_email:
            fields["userEmail"] = user_email.lower()
        if params is not None:
            fields["params"] = _string_params(params)
        return _Call(TRANSACTION_INIT_PATH, fields, _parse_prompt_transaction)

    def transaction_credentials(self, access_token: str) -> _Call[Credentials]:
        return _Call(
            TRANSACTION_CREDENTIALS_PATH, {"accessToken": access_token}, _parse_credentials, secrets=(access_token,)
        )

    def verify_user(self, user_email: str) -> _Call[UserStatus]:
        return _Call(pm.USER_VERIFY_PATH, {pm.FIELD_USER_EMAIL: user_email.lower()}, _parse_user_status)

    def promptless_init(
        self, username: str, user_email: str, params: Mapping[str, str]
    ) -> _Call[PromptlessTransaction]:
        fields = {
            pm.FIELD_USERNAME: username,
            pm.FIELD_USER_EMAIL: user_email.lower(),
            pm.FIELD_PARAMS: _string_params(params),
        }
        return _Call(pm.TRANSACTION_INIT_PATH, fields, _parse_promptless_transaction)

    def send_method(self, tid: str, method: str) -> _Call[MethodSent]:
        return _Call(pm.TRANSACTION_METHOD_PATH, {pm.FIELD_TID: tid, pm.FIELD_METHOD: method}, _parse_method_sent)

    def submit_code(self, tid: str, method: str, code: str) -> _Call[bool]:
        fields = {pm.FIELD_TID: tid, pm.FIELD_METHOD: method, pm.FIELD_CODE: code}
        # A one-time code is as sensitive as a token while it is still valid.
        return _Call(pm.TRANSACTION_CODE_PATH, fields, lambda s: _bool(s, pm.RESULT_ACCEPTED), secrets=(code,))

    def cancel_transaction(self, tid: str) -> _Call[bool]:
        return _Call(pm.TRANSACTION_CANCEL_PATH, {pm.FIELD_TID: tid}, lambda s: _bool(s, pm.RESULT_CANCELLED))


# --------------------------------------------------------------------------- parsing


def _malformed(signed: _SignedResult, name: str, expected: str) -> RublonMalformedResponse:
    return RublonMalformedResponse(f"Rublon's answer to {signed.path} lacks {expected} field {name!r}")


def _str(signed: _SignedResult, name: str) -> str:
    value = signed.result.get(name)
    if not isinstance(value, str) or not value:
        raise _malformed(signed, name, "the non-empty string")
    return value


def _optional_str(signed: _SignedResult, name: str) -> str | None:
    value = signed.result.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _malformed(signed, name, "the string")
    return value


def _bool(signed: _SignedResult, name: str) -> bool:
    value = signed.result.get(name)
    if not isinstance(value, bool):
        raise _malformed(signed, name, "the boolean")
    return value


def _int(signed: _SignedResult, name: str) -> int:
    value = signed.result.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _malformed(signed, name, "the integer")
    return value


def _str_list(signed: _SignedResult, name: str) -> list[str]:
    value = signed.result.get(name)
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _malformed(signed, name, "the list of strings")
    return list(value)


def _parse_prompt_transaction(signed: _SignedResult) -> PromptTransaction:
    web_uri = _str(signed, "webURI")
    tid = urlsplit(web_uri).path.rstrip("/").rsplit("/", 1)[-1]
    if not tid:
        raise RublonMalformedResponse(f"Rublon's answer to {signed.path} has a webURI without a transaction id")
    return PromptTransaction(web_uri=web_uri, tid=tid)


def _parse_credentials(signed: _SignedResult) -> Credentials:
    raw_params = signed.result.get("params")
    if raw_params is None or raw_params == []:
        raw_params = {}
    if not isinstance(raw_params, dict):
        raise _malformed(signed, "params", "the object")
    # Only string values can match what this project sends; dropping the rest makes a
    # binding check on them fail (closed) instead of matching a coerced value.
    params = {key: value for key, value in raw_params.items() if isinstance(value, str)}
    return Credentials(
        username=_str(signed, "username"),
        email=_optional_str(signed, "email"),
        system_token=_optional_str(signed, "systemToken"),
        params=params,
        tid=_optional_str(signed, pm.CREDENTIALS_TID),
        raw_body=signed.raw_body,
        signature=signed.signature,
    )


def _parse_user_status(signed: _SignedResult) -> UserStatus:
    return UserStatus(
        exists=_bool(signed, pm.RESULT_EXISTS),
        status=_str(signed, pm.RESULT_STATUS),
        methods=_str_list(signed, pm.RESULT_METHODS),
    )


def _parse_promptless_transaction(signed: _SignedResult) -> PromptlessTransaction:
    return PromptlessTransaction(
        tid=_str(signed, pm.RESULT_TID),
        methods=_str_list(signed, pm.RESULT_METHODS),
        expires_in=_int(signed, pm.RESULT_EXPIRES_IN),
    )


def _parse_method_sent(signed: _SignedResult) -> MethodSent:
    return MethodSent(
        tid=_str(signed, pm.RESULT_TID),
        method=_str(signed, pm.RESULT_METHOD),
        sent=_bool(signed, pm.RESULT_SENT),
    )


def _string_params(params: Mapping[str, str]) -> dict[str, str]:
    """Copy `params`, refusing non-string keys or values (Rublon takes strings only)."""
    for key, value in params.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"transaction params must map strings to strings; param {key!r} does not")
    return dict(params)


# --------------------------------------------------------------------------- clients


class RublonClient:
    """Blocking Rublon API client over one `httpx.Client` (connection pooling included).

    Args:
        api_server: base URL, e.g. ``https://core.rublon.net`` or the simulator's
            ``http://127.0.0.1:8765``.
        system_token: the application's System Token (sent in every body).
        secret_key: the application's Secret Key (signs requests, verifies answers;
            never sent).
        timeout: seconds for connecting and for each read/write.
        user_agent: the User-Agent header.
        transport: an httpx transport to use instead of the network (tests).

    Raises:
        ValueError: `api_server` is not http(s), or the token or key is empty.

    Every call raises `RublonUnavailable`, `RublonBadSignature` or a `RublonApiError`
    subclass as described in `rublon.errors`.
    """

    def __init__(
        self,
        *,
        api_server: str,
        system_token: str,
        secret_key: str,
        timeout: float = DEFAULT_TIMEOUT,
        user_agent: str = DEFAULT_USER_AGENT,
        transport: httpx.BaseTransport | None = None,
        observer: CallObserver | None = None,
    ) -> None:
        self._core = _ApiCore(
            api_server=api_server, system_token=system_token, secret_key=secret_key, user_agent=user_agent
        )
        # Redirects are not followed: Rublon never redirects an API call, so a 3xx is unavailability.
        self._http = httpx.Client(timeout=timeout, transport=transport, follow_redirects=False)
        self._observer = observer

    @property
    def api_server(self) -> str:
        return self._core.api_server

    def __repr__(self) -> str:
        return f"RublonClient(api_server={self._core.api_server!r})"

    def _run(self, call: _Call[T]) -> T:
        request = self._core.prepare(call)
        with _observed(self._observer, call.path):
            try:
                response = self._http.post(request.url, content=request.content, headers=request.headers)
            except httpx.HTTPError as exc:
                raise self._core.transport_failed(call, exc) from exc
            return self._core.interpret(call, response)

    def app_init(self, *, app_ver: str = DEFAULT_APP_VERSION, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Check the System Token, Secret Key and version (POST /api/app/init).

        Returns the result object (``{}`` or application info).
        """
        return self._run(self._core.app_init(app_ver, params))

    def transaction_init(
        self,
        *,
        username: str,
        callback_url: str,
        user_email: str | None = None,
        params: dict[str, str] | None = None,
    ) -> PromptTransaction:
        """Open a prompt-mode transaction (POST /api/transaction/init).

        `user_email` is lower-cased and omitted when empty; `params` values must be strings
        (TypeError otherwise). Returns the `webURI` to send the browser to and its tid;
        `.user_denied` tells whether Rublon answered with its deny page.
        Raises `UserBypassed` (code 45) for a bypassed user, `UserNotFound` for an unknown one.
        """
        return self._run(self._core.transaction_init(username, callback_url, user_email, params))

    def transaction_credentials(self, *, access_token: str) -> Credentials:
        """Exchange a single-use access token for the signed credentials
        (POST /api/transaction/credentials).

        Raises `UnknownAccessToken` for an unknown or already used token,
        `AccessTokenExpired` for an old one.
        """
        return self._run(self._core.transaction_credentials(access_token))

    def verify_user(self, *, user_email: str) -> UserStatus:
        """Ask whether the user exists and how it is set (promptless user/verify).

        Raises `UserNotFound` when Rublon answers with the error instead of ``exists: false``.
        """
        return self._run(self._core.verify_user(user_email))

    def promptless_init(self, *, username: str, user_email: str, params: dict[str, str]) -> PromptlessTransaction:
        """Open a promptless transaction; nothing is sent to the person yet.

        Raises `UserNotFound`, `UserBypassed` or `UserDenied` for users that cannot approve.
        """
        return self._run(self._core.promptless_init(username, user_email, params))

    def send_method(self, *, tid: str, method: str = pm.DEFAULT_METHOD) -> MethodSent:
        """Send the authentication method (e.g. the push) for transaction `tid`.

        Raises `ForbiddenMethod` when the method is not allowed, `TransactionLocked` when
        the transaction is already final.
        """
        return self._run(self._core.send_method(tid, method))

    def submit_code(self, *, tid: str, method: str, code: str) -> bool:
        """Submit a code the person typed (totp, yubikey, sms). Returns whether it was accepted."""
        return self._run(self._core.submit_code(tid, method, code))

    def cancel_transaction(self, *, tid: str) -> bool:
        """Withdraw transaction `tid`. Returns False when it was already final."""
        return self._run(self._core.cancel_transaction(tid))

    def close(self) -> None:
        """Close the pooled connections. The client cannot be used afterwards."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncRublonClient:
    """The asyncio twin of `RublonClient` (same arguments, same methods as coroutines),
    over one `httpx.AsyncClient`. `transport` is an `httpx.AsyncBaseTransport`.
    """

    def __init__(
        self,
        *,
        api_server: str,
        system_token: str,
        secret_key: str,
        timeout: float = DEFAULT_TIMEOUT,
        user_agent: str = DEFAULT_USER_AGENT,
        transport: httpx.AsyncBaseTransport | None = None,
        observer: CallObserver | None = None,
    ) -> None:
        self._core = _ApiCore(
            api_server=api_server, system_token=system_token, secret_key=secret_key, user_agent=user_agent
        )
        self._http = httpx.AsyncClient(timeout=timeout, transport=transport, follow_redirects=False)
        self._observer = observer

    @property
    def api_server(self) -> str:
        return self._core.api_server

    def __repr__(self) -> str:
        return f"AsyncRublonClient(api_server={self._core.api_server!r})"

    async def _run(self, call: _Call[T]) -> T:
        request = self._core.prepare(call)
        with _observed(self._observer, call.path):
            try:
                response = await self._http.post(request.url, content=request.content, headers=request.headers)
            except httpx.HTTPError as exc:
                raise self._core.transport_failed(call, exc) from exc
            return self._core.interpret(call, response)

    async def app_init(
        self, *, app_ver: str = DEFAULT_APP_VERSION, params: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """See `RublonClient.app_init`."""
        return await self._run(self._core.app_init(app_ver, params))

    async def transaction_init(
        self,
        *,
        username: str,
        callback_url: str,
        user_email: str | None = None,
        params: dict[str, str] | None = None,
    ) -> PromptTransaction:
        """See `RublonClient.transaction_init`."""
        return await self._run(self._core.transaction_init(username, callback_url, user_email, params))

    async def transaction_credentials(self, *, access_token: str) -> Credentials:
        """See `RublonClient.transaction_credentials`."""
        return await self._run(self._core.transaction_credentials(access_token))

    async def verify_user(self, *, user_email: str) -> UserStatus:
        """See `RublonClient.verify_user`."""
        return await self._run(self._core.verify_user(user_email))

    async def promptless_init(self, *, username: str, user_email: str, params: dict[str, str]) -> PromptlessTransaction:
        """See `RublonClient.promptless_init`."""
        return await self._run(self._core.promptless_init(username, user_email, params))

    async def send_method(self, *, tid: str, method: str = pm.DEFAULT_METHOD) -> MethodSent:
        """See `RublonClient.send_method`."""
        return await self._run(self._core.send_method(tid, method))

    async def submit_code(self, *, tid: str, method: str, code: str) -> bool:
        """See `RublonClient.submit_code`."""
        return await self._run(self._core.submit_code(tid, method, code))

    async def cancel_transaction(self, *, tid: str) -> bool:
        """See `RublonClient.cancel_transaction`."""
        return await self._run(self._core.cancel_transaction(tid))

    async def aclose(self) -> None:
        """Close the pooled connections. The client cannot be used afterwards."""
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


# --------------------------------------------------------------------------- WebSocket URL


def ws_url(api_server: str, ws_server: str | None) -> str:
    """URL of the confirmation channel: ``{ws base}/api/promptless/ws``.

    The ws base is `ws_server` (RUBLON_WS_SERVER) when set, else `api_server` with
    ``https`` -> ``wss`` and ``http`` -> ``ws``. Either may be given as http(s) or ws(s).

    Raises:
        ValueError: the chosen base is not an http(s) or ws(s) URL.
    """
    base = ws_server or api_server
    parts = urlsplit(base)
    schemes = {"https": "wss", "http": "ws", "wss": "wss", "ws": "ws"}
    if parts.scheme not in schemes or not parts.netloc:
        raise ValueError(f"cannot derive a WebSocket URL from {base!r}: expected http(s):// or ws(s)://")
    path = parts.path.rstrip("/") + pm.WS_PATH
    return urlunsplit((schemes[parts.scheme], parts.netloc, path, "", ""))


__all__ = [
    "DEFAULT_API_SERVER",
    "DEFAULT_TIMEOUT",
    "AsyncRublonClient",
    "Credentials",
    "MethodSent",
    "PromptTransaction",
    "PromptlessTransaction",
    "RublonClient",
    "UserStatus",
    "ws_url",
]
