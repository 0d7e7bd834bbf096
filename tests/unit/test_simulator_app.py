"""The simulator over real HTTP: request checks, signed answers, control endpoints, and
the command line (run as a real subprocess).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from rublon.signing import sign, verify
from simulator.app import create_app
from simulator.control import SimulatorControl, SimulatorControlError
from simulator.guard import SimulatorRefused
from simulator.server import SimulatorServer
from simulator.state import SimulatorState, SimUser

SYSTEM_TOKEN = "00112233445566778899AABBCCDDEEFF"
SECRET_KEY = "app-secret"
REPO_ROOT = Path(__file__).resolve().parents[2]


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
        control.fail(None)
        control.set_decision("manual")


def post(server: SimulatorServer, path: str, body: bytes, signature: str | None = "sign") -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if signature == "sign":
        headers["X-Rublon-Signature"] = sign(SECRET_KEY, body)
    elif signature is not None:
        headers["X-Rublon-Signature"] = signature
    return httpx.post(server.url + path, content=body, headers=headers)


def api(server: SimulatorServer, path: str, **fields: Any) -> httpx.Response:
    return post(server, path, json.dumps({"systemToken": SYSTEM_TOKEN, **fields}).encode())


def error_of(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 400
    envelope = response.json()
    assert envelope["status"] == "ERROR" and envelope["code"] == 400
    result: dict[str, Any] = envelope["result"]
    return result


def new_tid(server: SimulatorServer) -> str:
    path = "/api/promptless/transaction/init"
    response = api(server, path, username="alice", userEmail="alice@example.com", params={})
    tid: str = response.json()["result"]["tid"]
    return tid


# ---------------------------------------------------------------------------- request checks


def test_ok_answers_are_signed_over_their_raw_body(server: SimulatorServer) -> None:
    response = api(server, "/api/app/init", appVer="test/1", params={})

    assert response.status_code == 200
    assert response.json()["status"] == "OK"
    assert verify(SECRET_KEY, response.content, response.headers["x-rublon-signature"])


def test_bad_json_is_refused_with_invalid_json(server: SimulatorServer) -> None:
    assert error_of(post(server, "/api/app/init", b"{not json"))["exception"] == "InvalidJSONException"


def test_missing_field_is_refused_and_named(server: SimulatorServer) -> None:
    result = error_of(api(server, "/api/transaction/init", callbackUrl="http://cb"))

    assert (result["exception"], result["name"]) == ("MissingFieldException", "username")


def test_missing_system_token_is_a_missing_field(server: SimulatorServer) -> None:
    result = error_of(post(server, "/api/app/init", b'{"appVer":"x"}'))

    assert (result["exception"], result["name"]) == ("MissingFieldException", "systemToken")


def test_unsigned_request_is_refused_with_missing_header(server: SimulatorServer) -> None:
    body = json.dumps({"systemToken": SYSTEM_TOKEN, "appVer": "x"}).encode()

    assert error_of(post(server, "/api/app/init", body, signature=None))["exception"] == "MissingHeaderException"


def test_request_signed_over_other_bytes_is_refused_with_invalid_signature(server: SimulatorServer) -> None:
    body = json.dumps({"systemToken": SYSTEM_TOKEN, "appVer": "x"}).encode()
    # Same JSON, different bytes: the signature covers bytes, not meaning.
    other_bytes = json.dumps({"systemToken": SYSTEM_TOKEN, "appVer": "x"}, indent=1).encode()

    response = post(server, "/api/app/init", body, signature=sign(SECRET_KEY, other_bytes))

    assert error_of(response)["exception"] == "InvalidSignatureException"


def test_unknown_system_token_is_application_not_found(server: SimulatorServer) -> None:
    body = json.dumps({"systemToken": "NOPE", "appVer": "x"}).encode()

    assert error_of(post(server, "/api/app/init", body))["exception"] == "ApplicationNotFoundException"


def test_error_answers_are_not_signed(server: SimulatorServer) -> None:
    response = post(server, "/api/app/init", b"[]")

    assert response.status_code == 400 and "x-rublon-signature" not in response.headers


# ---------------------------------------------------------------------------- fail modes


def test_unavailable_mode_answers_503_until_cleared(server: SimulatorServer, sim: SimulatorControl) -> None:
    sim.fail("unavailable")
    assert api(server, "/api/app/init", appVer="x").status_code == 503

    sim.fail(None)
    assert api(server, "/api/app/init", appVer="x").status_code == 200


def test_bad_signature_mode_signs_answers_wrongly(server: SimulatorServer, sim: SimulatorControl) -> None:
    sim.fail("bad_signature")

    response = api(server, "/api/app/init", appVer="x")

    assert response.status_code == 200
    assert not verify(SECRET_KEY, response.content, response.headers["x-rublon-signature"])


def test_unknown_fail_mode_is_refused(sim: SimulatorControl) -> None:
    with pytest.raises(SimulatorControlError) as caught:
        sim.fail("sometimes")

    assert caught.value.status_code == 400


# ---------------------------------------------------------------------------- control endpoints


def test_control_lists_transactions_with_their_state(server: SimulatorServer, sim: SimulatorControl) -> None:
    tid = new_tid(server)
    sim.deny(tid)

    listed = {t["tid"]: t["state"] for t in sim.transactions()}

    assert listed[tid] == "denied"
    assert sim.transaction(tid)["mode"] == "promptless"


def test_control_approve_returns_the_token_and_refuses_a_second_decision(
    server: SimulatorServer, sim: SimulatorControl
) -> None:
    tid = new_tid(server)

    token = sim.approve(tid)

    assert len(token) == 60
    with pytest.raises(SimulatorControlError) as again:
        sim.expire(tid)
    assert again.value.status_code == 409


def test_control_unknown_tid_and_action_are_404(server: SimulatorServer, sim: SimulatorControl) -> None:
    with pytest.raises(SimulatorControlError) as unknown:
        sim.approve("nope")
    assert unknown.value.status_code == 404

    response = httpx.post(f"{server.url}/_simulator/transactions/{new_tid(server)}/explode")
    assert response.status_code == 404


def test_control_decision_applies_to_later_pushes(server: SimulatorServer, sim: SimulatorControl) -> None:
    assert sim.set_decision("deny") == "deny"
    tid = new_tid(server)

    api(server, "/api/promptless/transaction/method", tid=tid, method="push")

    assert sim.transaction(tid)["state"] == "denied"
    with pytest.raises(SimulatorControlError):
        sim.set_decision("perhaps")


def test_control_set_user_makes_a_user_known(server: SimulatorServer, sim: SimulatorControl) -> None:
    sim.set_user("erin", email="Erin@Example.com", status="bypass", methods=["push"])

    response = api(server, "/api/promptless/user/verify", userEmail="erin@example.com")

    assert response.json()["result"] == {"exists": True, "status": "bypass", "methods": ["push"]}


def test_control_stats_count_calls_and_pushes(server: SimulatorServer, sim: SimulatorControl) -> None:
    before = sim.stats()["calls"].get("/api/promptless/transaction/method", 0)
    tid = new_tid(server)

    api(server, "/api/promptless/transaction/method", tid=tid)
    api(server, "/api/promptless/transaction/method", tid=tid)

    stats = sim.stats()
    assert stats["calls"]["/api/promptless/transaction/method"] == before + 2
    assert stats["pushes"][tid] == 2


def test_control_forge_needs_a_token(server: SimulatorServer, sim: SimulatorControl) -> None:
    tid = new_tid(server)

    assert sim.forge(tid, "x" * 60) == 0  # nobody subscribed
    response = httpx.post(f"{server.url}/_simulator/transactions/{tid}/forge", json={})
    assert response.status_code == 400


def test_prompt_page_escapes_what_it_shows(server: SimulatorServer) -> None:
    params = {"note": "<script>x</script>"}
    response = api(server, "/api/transaction/init", username="alice", callbackUrl="http://cb", params=params)
    page = httpx.get(response.json()["result"]["webURI"])

    assert "<script>x" not in page.text and "&lt;script&gt;x" in page.text


# ---------------------------------------------------------------------------- guards and CLI


def test_server_refuses_to_start_in_production(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MFA_GATE_ENV", "Production ")

    with pytest.raises(SimulatorRefused, match="production"):
        SimulatorServer(SimulatorState(apps={"T": "K"})).start()


def test_app_itself_refuses_to_be_built_in_production(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MFA_GATE_ENV", "production")

    with pytest.raises(SimulatorRefused):
        create_app(SimulatorState(apps={"T": "K"}))


def test_server_refuses_a_non_loopback_host() -> None:
    with pytest.raises(SimulatorRefused, match="loopback"):
        SimulatorServer(SimulatorState(apps={"T": "K"}), host="0.0.0.0").start()


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "simulator", *args],
        cwd=REPO_ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_cli_refuses_production_with_exit_status_2() -> None:
    result = run_cli("--port", "0", "--system-token", "T", "--secret-key", "K", env={"MFA_GATE_ENV": "production"})

    assert result.returncode == 2
    assert "production" in result.stderr and "listening" not in result.stdout


def test_cli_refuses_a_malformed_user() -> None:
    result = run_cli("--system-token", "T", "--secret-key", "K", "--user", "alice:alice@example.com:maybe")

    assert result.returncode == 2 and "status" in result.stderr


def test_cli_announces_its_url_and_serves() -> None:
    env = {**os.environ, "MFA_GATE_ENV": "development"}
    process = subprocess.Popen(
        [sys.executable, "-m", "simulator", "--port", "0", "--system-token", "T", "--secret-key", "K",
         "--user", "alice:alice@example.com:active:push,totp", "--decision", "approve:1.5", "--expires-in", "60"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line.startswith("simulator listening on http://127.0.0.1:")
        url = line.removeprefix("simulator listening on ")
        with SimulatorControl(url) as control:
            control.set_decision("manual")
            assert control.health()
        body = json.dumps({"systemToken": "T", "userEmail": "alice@example.com"}).encode()
        headers = {"X-Rublon-Signature": sign("K", body)}
        answer = httpx.post(url + "/api/promptless/user/verify", content=body, headers=headers)
        assert answer.json()["result"]["methods"] == ["push", "totp"]
    finally:
        process.terminate()
        process.wait(timeout=10)
