"""The Rublon client against the simulator over real HTTP (uvicorn on a free loopback
port), plus httpx mock transports for answers the simulator never gives.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable, Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from rublon import errors
from rublon.client import AsyncRublonClient, RublonClient, ws_url
from rublon.signing import sign, verify
from simulator.control import SimulatorControl
from simulator.server import SimulatorServer
from simulator.state import SimulatorState, SimUser

SYSTEM_TOKEN = "0123456789ABCDEF0123456789ABCDEF"
SECRET_KEY = "test-secret-key-do-not-leak"
USERS = [
    SimUser("alice", "alice@example.com", "active"),
    SimUser("bob", "bob@example.com", "bypass"),
    SimUser("carol", "carol@example.com", "denied"),
]


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def server() -> Iterator[SimulatorServer]:
    state = SimulatorState(apps={SYSTEM_TOKEN: SECRET_KEY}, users=USERS, decision="manual")
    with SimulatorServer(state) as running:
        yield running


@pytest.fixture
def sim(server: SimulatorServer) -> Iterator[SimulatorControl]:
    """Control of the shared simulator; fail mode and decision are reset afterwards."""
    with SimulatorControl(server.url) as control:
        yield control
        control.fail(None)
        control.set_decision("manual")


@pytest.fixture
def client(server: SimulatorServer) -> Iterator[RublonClient]:
    with RublonClient(api_server=server.url, system_token=SYSTEM_TOKEN, secret_key=SECRET_KEY, timeout=5) as c:
        yield c


def mock_client(handler: Callable[[httpx.Request], httpx.Response]) -> RublonClient:
    return RublonClient(
        api_server="https://rublon.test",
        system_token=SYSTEM_TOKEN,
        secret_key=SECRET_KEY,
        transport=httpx.MockTransport(handler),
    )


def signed_ok(result: object, key: str = SECRET_KEY) -> httpx.Response:
    body = json.dumps({"status": "OK", "result": result}).encode()
    return httpx.Response(200, content=body, headers={"x-rublon-signature": sign(key, body)})


def error_envelope(exception: str, **extra: object) -> httpx.Response:
    result = {"exception": exception, "code": 7, "errorMessage": "no", "details": None, **extra}
    return httpx.Response(400, json={"status": "ERROR", "code": 400, "result": result})


# ---------------------------------------------------------------------------- signing


def test_request_body_is_sent_as_the_exact_bytes_that_were_signed() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return signed_ok({})

    mock_client(handler).app_init()

    request = seen[0]
    assert request.url.path == "/api/app/init"
    assert verify(SECRET_KEY, request.content, request.headers["X-Rublon-Signature"])
    body = json.loads(request.content)
    assert body == {"systemToken": SYSTEM_TOKEN, "appVer": "mfa-gate/0.1", "params": {}}
    assert SECRET_KEY.encode() not in request.content
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == "mfa-gate/0.1"


def test_simulator_accepts_signed_calls(client: RublonClient) -> None:
    assert client.app_init()["systemToken"] == SYSTEM_TOKEN


def test_wrong_secret_key_is_refused_with_invalid_signature(server: SimulatorServer) -> None:
    wrong = RublonClient(api_server=server.url, system_token=SYSTEM_TOKEN, secret_key="wrong")

    with wrong, pytest.raises(errors.InvalidSignature):
        wrong.app_init()


def test_unknown_system_token_is_refused_with_application_not_found(server: SimulatorServer) -> None:
    stranger = RublonClient(api_server=server.url, system_token="F" * 32, secret_key=SECRET_KEY)

    with stranger, pytest.raises(errors.ApplicationNotFound):
        stranger.app_init()


def test_wrongly_signed_answer_raises_bad_signature(client: RublonClient, sim: SimulatorControl) -> None:
    sim.fail("bad_signature")

    with pytest.raises(errors.RublonBadSignature):
        client.app_init()


def test_unsigned_ok_answer_raises_bad_signature() -> None:
    unsigned = httpx.Response(200, json={"status": "OK", "result": {}})

    with pytest.raises(errors.RublonBadSignature):
        mock_client(lambda request: unsigned).app_init()


def test_answer_signed_with_another_key_raises_bad_signature() -> None:
    with pytest.raises(errors.RublonBadSignature):
        mock_client(lambda request: signed_ok({}, key="another key")).app_init()


# ---------------------------------------------------------------------------- unavailability


def test_http_503_means_unavailable(client: RublonClient, sim: SimulatorControl) -> None:
    sim.fail("unavailable")

    with pytest.raises(errors.RublonUnavailable):
        client.app_init()


def test_timeout_means_unavailable() -> None:
    # A listening socket that never answers: the connection is made, the answer never comes.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        slow = RublonClient(
            api_server=f"http://127.0.0.1:{port}", system_token=SYSTEM_TOKEN, secret_key=SECRET_KEY, timeout=0.3
        )

        with slow, pytest.raises(errors.RublonUnavailable, match="timed out"):
            slow.app_init()


def test_connection_refused_means_unavailable() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]  # closed again: nothing listens there now
    refused = RublonClient(api_server=f"http://127.0.0.1:{port}", system_token=SYSTEM_TOKEN, secret_key=SECRET_KEY)

    with refused, pytest.raises(errors.RublonUnavailable):
        refused.app_init()


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(302, headers={"location": "https://elsewhere.test/"}),
        httpx.Response(500, json={"status": "ERROR"}),
        httpx.Response(400, content=b"<html>bad gateway</html>"),
        httpx.Response(400, json={"status": "ERROR", "result": {"code": 1}}),
        httpx.Response(400, json=["not", "an", "envelope"]),
    ],
    ids=["redirect", "500", "400-html", "400-no-exception", "400-list"],
)
def test_answers_without_the_envelope_mean_unavailable(response: httpx.Response) -> None:
    with pytest.raises(errors.RublonUnavailable):
        mock_client(lambda request: response).app_init()


def test_signed_non_json_answer_means_unavailable() -> None:
    body = b"not json"
    response = httpx.Response(200, content=body, headers={"X-Rublon-Signature": sign(SECRET_KEY, body)})

    with pytest.raises(errors.RublonUnavailable):
        mock_client(lambda request: response).app_init()


def test_signed_result_missing_a_needed_field_is_malformed() -> None:
    with pytest.raises(errors.RublonMalformedResponse, match="tid"):
        mock_client(lambda request: signed_ok({"methods": ["push"], "expiresIn": 120})).promptless_init(
            username="alice", user_email="alice@example.com", params={}
        )


# ---------------------------------------------------------------------------- error mapping


@pytest.mark.parametrize("wire_name", sorted(errors.API_EXCEPTIONS))
def test_each_known_exception_name_maps_to_its_class(wire_name: str) -> None:
    with pytest.raises(errors.RublonApiError) as caught:
        mock_client(lambda request: error_envelope(wire_name)).app_init()

    assert type(caught.value) is errors.API_EXCEPTIONS[wire_name]
    assert type(caught.value).__name__ == wire_name.removesuffix("Exception")
    assert caught.value.exception == wire_name
    assert caught.value.code == 7


def test_all_documented_exception_names_are_mapped() -> None:
    documented = [
        "AccessTokenExpired", "ApplicationDenied", "ApplicationDisabled", "ApplicationNotFound",
        "BusinessEditionLimitExceeded", "EmptyInput", "ForbiddenMethod", "InvalidJSON", "InvalidSignature",
        "MissingField", "MissingHeader", "PersonalEditionLimited", "SubscriptionExpired", "TransactionLocked",
        "UnauthorizedUser", "UnknownAccessToken", "UnsupportedVersion", "UserBypassed", "UserDenied", "UserNotFound",
    ]

    assert set(errors.API_EXCEPTIONS) == {name + "Exception" for name in documented}


def test_unknown_exception_name_becomes_a_plain_api_error() -> None:
    with pytest.raises(errors.RublonApiError) as caught:
        mock_client(lambda request: error_envelope("SomethingNewException")).app_init()

    assert type(caught.value) is errors.RublonApiError
    assert caught.value.exception == "SomethingNewException"


def test_missing_field_error_names_the_field() -> None:
    with pytest.raises(errors.MissingField) as caught:
        mock_client(lambda request: error_envelope("MissingFieldException", name="username")).app_init()

    assert caught.value.field == "username"
    assert "username" in str(caught.value)


def test_error_messages_never_contain_the_secret_key_or_the_access_token() -> None:
    token = "a" * 60
    echo = error_envelope("UnknownAccessTokenException", errorMessage=f"token {token} key {SECRET_KEY}")

    with pytest.raises(errors.UnknownAccessToken) as caught:
        mock_client(lambda request: echo).transaction_credentials(access_token=token)

    assert token not in str(caught.value) and token not in caught.value.message
    assert SECRET_KEY not in str(caught.value) and SECRET_KEY not in caught.value.message


def test_secret_key_is_not_in_the_client_repr(client: RublonClient) -> None:
    assert SECRET_KEY not in repr(client)
    assert SECRET_KEY not in repr(client._core)


def test_unknown_user_raises_user_not_found(client: RublonClient) -> None:
    with pytest.raises(errors.UserNotFound):
        client.promptless_init(username="zed", user_email="zed@example.com", params={})


def test_bypassed_user_raises_user_bypassed_with_code_45(client: RublonClient) -> None:
    with pytest.raises(errors.UserBypassed) as caught:
        client.transaction_init(username="bob", callback_url="http://app.test/cb", user_email="bob@example.com")

    assert caught.value.code == 45


def test_denied_user_cannot_open_a_promptless_transaction(client: RublonClient) -> None:
    with pytest.raises(errors.UserDenied):
        client.promptless_init(username="carol", user_email="carol@example.com", params={})


def test_verify_user_reports_status_and_methods(client: RublonClient) -> None:
    status = client.verify_user(user_email="Bob@Example.com")

    assert (status.exists, status.status, status.methods) == (True, "bypass", ["push", "totp"])


# ---------------------------------------------------------------------------- prompt mode


def test_transaction_init_lower_cases_the_email_and_omits_it_when_empty() -> None:
    bodies: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return signed_ok({"webURI": "https://rublon.test/api/transaction/process/tid123"})

    with mock_client(handler) as c:
        first = c.transaction_init(username="alice", callback_url="https://app/cb", user_email="Alice@Example.COM")
        c.transaction_init(username="alice", callback_url="https://app/cb", user_email="")

    assert bodies[0]["userEmail"] == "alice@example.com"
    assert "userEmail" not in bodies[1]
    assert first.tid == "tid123"


def test_prompt_page_approval_redirects_with_a_token_that_yields_credentials(client: RublonClient) -> None:
    params = {"actionId": "act-1", "payloadHash": "abc"}
    prompt = client.transaction_init(
        username="alice", callback_url="http://app.test/cb?next=1", user_email="alice@example.com", params=params
    )
    assert prompt.web_uri.endswith(f"/api/transaction/process/{prompt.tid}")
    page = httpx.get(prompt.web_uri)
    assert page.status_code == 200 and "Approve" in page.text and "Deny" in page.text

    redirect = httpx.post(f"{prompt.web_uri}/approve")

    assert redirect.status_code == 303
    target = urlsplit(redirect.headers["location"])
    query = parse_qs(target.query)
    assert (target.netloc, target.path, query["next"], query["rublonState"]) == ("app.test", "/cb", ["1"], ["ok"])
    token = query["rublonToken"][0]
    assert len(token) == 60 and token.isalnum() and token == token.lower()
    credentials = client.transaction_credentials(access_token=token)
    assert (credentials.username, credentials.email, credentials.tid) == ("alice", "alice@example.com", prompt.tid)
    assert credentials.params == params
    assert credentials.system_token == SYSTEM_TOKEN
    assert verify(SECRET_KEY, credentials.raw_body, credentials.signature)
    assert json.loads(credentials.raw_body)["result"]["tid"] == prompt.tid


def test_prompt_page_deny_redirects_with_cancel_and_no_token(client: RublonClient) -> None:
    prompt = client.transaction_init(username="alice", callback_url="http://app.test/cb")

    redirect = httpx.post(f"{prompt.web_uri}/deny")

    assert redirect.status_code == 303
    assert parse_qs(urlsplit(redirect.headers["location"]).query) == {"rublonState": ["cancel"]}


def test_denied_user_gets_the_deny_page(client: RublonClient) -> None:
    prompt = client.transaction_init(username="carol", callback_url="http://app.test/c", user_email="carol@example.com")

    assert "/api/transaction/deny/" in prompt.web_uri
    assert prompt.user_denied


def test_access_token_is_single_use(client: RublonClient, sim: SimulatorControl) -> None:
    transaction = client.promptless_init(username="alice", user_email="alice@example.com", params={"a": "1"})
    token = sim.approve(transaction.tid)

    assert client.transaction_credentials(access_token=token).tid == transaction.tid
    with pytest.raises(errors.UnknownAccessToken):
        client.transaction_credentials(access_token=token)


def test_unknown_access_token_is_refused(client: RublonClient) -> None:
    with pytest.raises(errors.UnknownAccessToken):
        client.transaction_credentials(access_token="x" * 60)


def test_old_access_token_is_refused_as_expired() -> None:
    now = [1000.0]
    state = SimulatorState(apps={SYSTEM_TOKEN: SECRET_KEY}, users=USERS, token_ttl=5, clock=lambda: now[0])
    with SimulatorServer(state) as server:
        c = RublonClient(api_server=server.url, system_token=SYSTEM_TOKEN, secret_key=SECRET_KEY)
        transaction = c.promptless_init(username="alice", user_email="alice@example.com", params={})
        token = state.approve(transaction.tid)
        now[0] += 6

        with c, pytest.raises(errors.AccessTokenExpired):
            c.transaction_credentials(access_token=token)


# ---------------------------------------------------------------------------- promptless


def test_promptless_push_with_approve_decision_confirms_at_once(client: RublonClient, sim: SimulatorControl) -> None:
    sim.set_decision("approve")
    transaction = client.promptless_init(username="alice", user_email="ALICE@example.com", params={"k": "v"})

    sent = client.send_method(tid=transaction.tid)

    assert (sent.tid, sent.method, sent.sent) == (transaction.tid, "push", True)
    assert transaction.methods == ["push", "totp"] and transaction.expires_in == 120
    assert sim.transaction(transaction.tid)["state"] == "confirmed"
    assert sim.stats()["pushes"][transaction.tid] == 1


def test_method_not_allowed_is_forbidden(client: RublonClient) -> None:
    transaction = client.promptless_init(username="alice", user_email="alice@example.com", params={})

    with pytest.raises(errors.ForbiddenMethod):
        client.send_method(tid=transaction.tid, method="sms")


def test_submit_code_accepts_only_the_right_code(client: RublonClient, sim: SimulatorControl) -> None:
    transaction = client.promptless_init(username="alice", user_email="alice@example.com", params={})

    assert client.submit_code(tid=transaction.tid, method="totp", code="000000") is False
    assert sim.transaction(transaction.tid)["state"] == "pending"
    assert client.submit_code(tid=transaction.tid, method="totp", code="123456") is True
    assert sim.transaction(transaction.tid)["state"] == "confirmed"


def test_cancel_withdraws_a_pending_transaction_once(client: RublonClient, sim: SimulatorControl) -> None:
    transaction = client.promptless_init(username="alice", user_email="alice@example.com", params={})

    assert client.cancel_transaction(tid=transaction.tid) is True
    assert client.cancel_transaction(tid=transaction.tid) is False
    assert sim.transaction(transaction.tid)["state"] == "cancelled"
    with pytest.raises(errors.TransactionLocked):
        client.send_method(tid=transaction.tid)


def test_unknown_tid_gives_a_generic_api_error(client: RublonClient) -> None:
    with pytest.raises(errors.RublonApiError) as caught:
        client.send_method(tid="no-such-tid")

    assert type(caught.value) is errors.RublonApiError


def test_params_must_be_strings(client: RublonClient) -> None:
    with pytest.raises(TypeError, match="amount"):
        client.promptless_init(username="alice", user_email="alice@example.com", params={"amount": 5})  # type: ignore[dict-item]


# ---------------------------------------------------------------------------- async client


def test_async_client_runs_the_same_calls(server: SimulatorServer) -> None:
    async def scenario() -> tuple[str, str, bool]:
        async with AsyncRublonClient(api_server=server.url, system_token=SYSTEM_TOKEN, secret_key=SECRET_KEY) as c:
            transaction = await c.promptless_init(username="alice", user_email="alice@example.com", params={"x": "y"})
            token = await asyncio.to_thread(state_approve, server, transaction.tid)
            credentials = await c.transaction_credentials(access_token=token)
            with pytest.raises(errors.UnknownAccessToken):
                await c.transaction_credentials(access_token=token)
            return transaction.tid, credentials.params["x"], await c.cancel_transaction(tid=transaction.tid)

    tid, echoed, cancelled = asyncio.run(scenario())

    assert tid and echoed == "y" and cancelled is False


def state_approve(server: SimulatorServer, tid: str) -> str:
    return server.state.approve(tid)


def test_async_client_maps_unavailability_and_bad_signature() -> None:
    async def call(response: httpx.Response) -> None:
        transport = httpx.MockTransport(lambda request: response)
        async with AsyncRublonClient(
            api_server="https://rublon.test", system_token=SYSTEM_TOKEN, secret_key=SECRET_KEY, transport=transport
        ) as c:
            await c.app_init()

    with pytest.raises(errors.RublonUnavailable):
        asyncio.run(call(httpx.Response(502)))
    with pytest.raises(errors.RublonBadSignature):
        asyncio.run(call(signed_ok({}, key="another key")))


# ---------------------------------------------------------------------------- ws_url


@pytest.mark.parametrize(
    ("api_server", "ws_server", "expected"),
    [
        ("https://core.rublon.net", None, "wss://core.rublon.net/api/promptless/ws"),
        ("http://127.0.0.1:8765/", None, "ws://127.0.0.1:8765/api/promptless/ws"),
        ("https://core.rublon.net", "wss://ws.example.net", "wss://ws.example.net/api/promptless/ws"),
        ("https://core.rublon.net", "http://127.0.0.1:9000", "ws://127.0.0.1:9000/api/promptless/ws"),
    ],
)
def test_ws_url_derives_the_channel_url(api_server: str, ws_server: str | None, expected: str) -> None:
    assert ws_url(api_server, ws_server) == expected


def test_ws_url_refuses_other_schemes() -> None:
    with pytest.raises(ValueError):
        ws_url("ftp://core.rublon.net", None)
