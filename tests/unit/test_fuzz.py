"""Property-based tests: random and hostile input to the submit API and the CLI.

Every input gets a clear answer (2xx, or 4xx naming a field; a one-line CLI error),
never a crash, and never a half-written row. The number of examples run is printed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import func, select

from cli.main import main as cli_main
from store import Action, Release
from tasks.celery_app import app as celery_app
from tasks.runtime import Runtime, set_runtime
from tests.conftest import make_settings
from tests.fixtures import CRED_A, TEST_POLICY, directory_text
from web.app import create_app

EXAMPLES = 150
json_leaf = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=40)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
hostile_text = st.sampled_from(
    [
        "",
        " ",
        "\u202e",
        "../../etc/passwd",
        "' OR 1=1 --",
        "x" * 300,
        "http.request",
        "Bad Name",
        "payments.transfer",
        "\x00",
        "alice",
        "carol",
        "nobody",
    ]
) | st.text(max_size=30)
urls = st.sampled_from(
    [
        "http://127.0.0.1/x",
        "https://127.0.0.1/y",
        "ftp://127.0.0.1/",
        "http://evil.example.org/",
        "javascript:alert(1)",
        "http://user:pw@127.0.0.1/",
        "",
        "http://[::1]/",
    ]
) | st.text(max_size=20)
params = (
    st.fixed_dictionaries(
        {},
        optional={
            "method": st.sampled_from(["GET", "POST", "DELETE", "BREW", "get"]) | hostile_text,
            "url": urls,
            "json": json_value,
            "headers": st.dictionaries(hostile_text, hostile_text, max_size=3),
            "timeout": st.integers(-5, 100) | st.floats(allow_nan=True),
            "body": hostile_text,
        },
    )
    | json_value
)
near_valid = st.fixed_dictionaries(
    {
        "action": st.just("http.request"),
        "user": st.sampled_from(["alice", "bob", "carol", "nobody"]),
        "params": st.fixed_dictionaries(
            {
                "method": st.sampled_from(["GET", "POST", "DELETE", "PUT"]),
                "url": st.sampled_from(["http://127.0.0.1/a", "http://127.0.0.1/b?q=1"]) | urls,
            },
            optional={"json": json_value},
        ),
    },
    optional={
        "context": st.dictionaries(st.text(max_size=8), json_value, max_size=3),
        "idempotency_key": st.text(min_size=1, max_size=20),
    },
)
bodies = (
    near_valid
    | st.fixed_dictionaries(
        {},
        optional={
            "action": hostile_text,
            "params": params,
            "user": hostile_text,
            "context": json_value,
            "idempotency_key": hostile_text | st.integers(),
            "email": hostile_text,
            "extra": json_value,
        },
    )
    | json_value
)


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    folder = tmp_path_factory.mktemp("fuzz")
    (folder / "policy.toml").write_text(TEST_POLICY)
    (folder / "directory.toml").write_text(directory_text())
    previous = celery_app.conf.broker_url
    celery_app.conf.broker_url = "memory://"
    built = Runtime(
        make_settings(
            database_url=f"sqlite:///{folder / 'store.db'}",
            policy_file=folder / "policy.toml",
            directory_file=folder / "directory.toml",
        )
    )
    built.check()
    set_runtime(built)
    yield built
    set_runtime(None)
    celery_app.conf.broker_url = previous


def _rows(runtime: Runtime) -> tuple[int, int]:
    with runtime.store.session() as session:
        actions = session.exec(select(func.count()).select_from(Action)).one()
        releases = session.exec(select(func.count()).select_from(Release)).one()
    return int(actions), int(releases)


def test_submit_api_answers_every_input_clearly(runtime: Runtime, capsys: pytest.CaptureFixture[str]) -> None:
    client = TestClient(create_app(runtime), raise_server_exceptions=True)
    seen = {"examples": 0, "accepted": 0}

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    @given(body=bodies, credential=st.sampled_from([CRED_A, CRED_A, "wrong", ""]), raw=st.booleans())
    def check(body: Any, credential: str, raw: bool) -> None:
        seen["examples"] += 1
        before = _rows(runtime)
        headers = {"Authorization": f"Bearer {credential}"} if credential else {}
        content = json.dumps(body, allow_nan=True).encode() if not raw else json.dumps(body).encode()[:-1]
        response = client.post("/v1/actions", content=content, headers={**headers, "Content-Type": "application/json"})
        assert response.status_code < 500
        after = _rows(runtime)
        if response.status_code >= 400:
            error = response.json()["error"]
            assert error["field"] and error["message"]
            assert after == before, "a refused submission wrote something"
        else:
            seen["accepted"] += 1
            assert response.json()["status"] in ("submitted", "queued", "denied", "blocked")
            assert after[0] in (before[0], before[0] + 1)

    check()
    with capsys.disabled():
        print(f"\n[hypothesis] submit API: {seen['examples']} examples, {seen['accepted']} accepted")
    assert seen["examples"] >= EXAMPLES // 2


def test_cli_submit_answers_every_input_clearly(
    runtime: Runtime, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    runner = CliRunner()
    seen = {"examples": 0}

    @settings(max_examples=EXAMPLES // 2, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        action=hostile_text,
        params=st.one_of(json_value.map(json.dumps), hostile_text),
        user=hostile_text,
        agent=st.sampled_from(["agent-a", "agent-b", "ghost"]),
        context=st.one_of(st.none(), hostile_text),
    )
    def check(action: str, params: str, user: str, agent: str, context: str | None) -> None:
        seen["examples"] += 1
        before = _rows(runtime)
        args = ["submit", action, "--params", params, "--user", user, "--agent", agent, "--json"]
        if context is not None:
            args += ["--context", context]
        if any("\x00" in a for a in args):
            return  # a NUL cannot reach a real command line
        result = runner.invoke(cli_main, args)
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
        if result.exit_code == 0:
            assert json.loads(result.output.splitlines()[-1])["status"]
        else:
            assert result.exit_code == 2 and "Error:" in result.output and "Traceback" not in result.output
            assert _rows(runtime) == before

    check()
    with capsys.disabled():
        print(f"\n[hypothesis] CLI submit: {seen['examples']} examples")


def test_mcp_gate_tools_answer_every_input_clearly(runtime: Runtime, capsys: pytest.CaptureFixture[str]) -> None:
    import asyncio

    from web.mcp_server import call_tool

    agent = runtime.directory.agent("agent-a")
    assert agent is not None
    seen = {"examples": 0, "errors": 0}
    tools = st.sampled_from(["mfa_gate_submit", "mfa_gate_status", "mfa_gate_wait", "mfa_gate_cancel"])
    arguments = st.one_of(
        bodies, st.fixed_dictionaries({}, optional={"id": hostile_text, "timeoutSeconds": st.integers(-3, 2)})
    )

    @settings(max_examples=EXAMPLES // 2, deadline=None, suppress_health_check=list(HealthCheck))
    @given(tool=tools, args=arguments)
    def check(tool: str, args: Any) -> None:
        seen["examples"] += 1
        before = _rows(runtime)
        result = asyncio.run(call_tool(runtime, agent, "127.0.0.1", tool, args))
        text = result.content[0].text  # type: ignore[union-attr]
        assert "internal error" not in text
        if result.is_error:
            seen["errors"] += 1
            assert text.strip() and _rows(runtime) == before
        else:
            assert isinstance(result.structured_content, dict)

    check()
    with capsys.disabled():
        print(f"\n[hypothesis] MCP gate tools: {seen['examples']} examples, {seen['errors']} refused as tool errors")


def test_callback_answers_every_input_and_releases_nothing(
    runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    client = TestClient(create_app(runtime), raise_server_exceptions=True)
    seen = {"examples": 0}

    @settings(max_examples=EXAMPLES // 2, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        action_id=st.one_of(st.none(), hostile_text.filter(lambda t: t.isprintable() and not set(t) & set("/?#%"))),
        query=st.dictionaries(st.sampled_from(["rublonState", "rublonToken", "other"]), hostile_text, max_size=3),
    )
    def check(action_id: str | None, query: dict[str, str]) -> None:
        seen["examples"] += 1
        before = _rows(runtime)
        path = "/rublon/callback" + (f"/{action_id}" if action_id else "")
        response = client.get(path, params=query)
        assert response.status_code < 500
        token = query.get("rublonToken", "")
        assert len(token) < 8 or token not in response.text
        assert _rows(runtime)[1] == before[1], "a callback released something"

    check()
    with capsys.disabled():
        print(f"\n[hypothesis] prompt callback: {seen['examples']} examples")
