"""The MCP tool table, argument checks, the limits of the raw tools, and the stdio relay's imports."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest

from cli.mcp_command import CREDENTIAL_ENV, endpoint_of, read_credential
from tasks.runtime import Runtime
from tests.conftest import make_settings
from tests.fixtures import TEST_POLICY, directory_text
from web.mcp_server import CALL_EVENT, RESULT_EVENT, TOOLS, TOOLS_BY_NAME, ToolError, check_arguments, limit_refusal

REPO = Path(__file__).resolve().parents[2]
SMALL_LIMITS = """
[limits]
max_pending_per_user = 2
max_pending_per_agent = 3
max_requests_per_agent_per_hour = 5
suspend_agent_after_refusals = 1000
"""


def test_the_seven_rublon_tools_have_exactly_the_schemas_of_the_issue() -> None:
    string, params = {"type": "string"}, {"type": "object", "additionalProperties": {"type": "string"}}
    expected: dict[str, tuple[dict[str, Any], list[str]]] = {
        "rublon_mfa_required_for_action": ({"action": string, "context": {"type": "object"}}, ["action"]),
        "rublon_promptless_init_transaction": (
            {"username": string, "email": string, "params": params},
            ["username", "email"],
        ),
        "rublon_promptless_send_method": ({"tid": string, "method": string}, ["tid"]),
        "rublon_promptless_wait_for_confirmation": (
            {"tid": string, "timeoutSeconds": {"type": "integer", "minimum": 1}},
            ["tid"],
        ),
        "rublon_promptless_verify_user_exists": ({"email": string}, ["email"]),
        "rublon_prompt_init_transaction": (
            {"username": string, "email": string, "callbackUrl": string, "logoutUrl": string, "params": params},
            ["username", "email", "callbackUrl", "logoutUrl"],
        ),
        "rublon_prompt_get_credentials": ({"accessToken": string}, ["accessToken"]),
    }
    raw = {tool.name: tool for tool in TOOLS if tool.raw}
    assert set(raw) == set(expected)
    for name, (properties, required) in expected.items():
        assert raw[name].input_schema == {"type": "object", "properties": properties, "required": required}
        listed = raw[name].listed()
        assert listed.input_schema == raw[name].input_schema and listed.input_schema is not raw[name].input_schema
    assert {tool.name for tool in TOOLS if not tool.raw} == {
        "mfa_gate_submit",
        "mfa_gate_status",
        "mfa_gate_wait",
        "mfa_gate_cancel",
    }


@pytest.mark.parametrize(
    ("tool", "arguments", "message"),
    [
        ("rublon_promptless_send_method", {}, "arguments: 'tid' is a required property"),
        ("rublon_promptless_send_method", {"tid": 1}, "tid: 1 is not of type 'string'"),
        ("rublon_promptless_wait_for_confirmation", {"tid": "t", "timeoutSeconds": 0}, "minimum of 1"),
        ("rublon_promptless_wait_for_confirmation", {"tid": "t", "timeoutSeconds": 1.5}, "not of type 'integer'"),
        ("rublon_promptless_init_transaction", {"username": "a", "email": "e", "params": {"k": 1}}, "params.k: 1"),
        ("rublon_prompt_get_credentials", {"accessToken": "t", "tid": "x"}, "tid: not an argument"),
        ("mfa_gate_wait", {"id": "x", "timeoutSeconds": -1}, "minimum of 0"),
    ],
)
def test_bad_arguments_are_named(tool: str, arguments: dict[str, Any], message: str) -> None:
    with pytest.raises(ToolError, match="invalid arguments") as refused:
        check_arguments(TOOLS_BY_NAME[tool], arguments)
    assert message in str(refused.value)


def test_good_arguments_pass() -> None:
    check_arguments(TOOLS_BY_NAME["rublon_promptless_wait_for_confirmation"], {"tid": "t", "timeoutSeconds": 5})
    check_arguments(TOOLS_BY_NAME["rublon_mfa_required_for_action"], {"action": "a", "context": {"x": [1]}})


@pytest.fixture
def runtime(tmp_path: Path, database_url: str) -> Iterator[Runtime]:
    """A runtime on an empty store (SQLite, then PostgreSQL) whose policy has small limits."""
    policy = tmp_path / "policy.toml"
    policy.write_text(TEST_POLICY.split("[limits]")[0] + SMALL_LIMITS + "[http]" + TEST_POLICY.split("[http]")[1])
    directory = tmp_path / "directory.toml"
    directory.write_text(directory_text())
    settings = make_settings(database_url=database_url, policy_file=policy, directory_file=directory)
    built = Runtime(settings)
    built.store.create_schema()
    yield built
    built.store.dispose()


def test_raw_calls_count_against_the_agents_hourly_limit(runtime: Runtime) -> None:
    for _ in range(4):
        runtime.store.audit(CALL_EVENT, actor="agent:agent-a", data={"tool": "rublon_mfa_required_for_action"})
    assert limit_refusal(runtime, agent="agent-a", user=None, asks_person=False) is None
    runtime.store.audit(CALL_EVENT, actor="agent:agent-a", data={"tool": "rublon_mfa_required_for_action"})
    refusal = limit_refusal(runtime, agent="agent-a", user=None, asks_person=False)
    assert refusal is not None and "5 Rublon tool calls and 0 submissions" in refusal and "limit is 5" in refusal
    # Another agent's budget is its own.
    assert limit_refusal(runtime, agent="agent-b", user=None, asks_person=False) is None


def test_opened_transactions_count_as_pending_for_the_user_and_the_agent(runtime: Runtime) -> None:
    opened = {"tool": "rublon_promptless_init_transaction", "outcome": "ok", "opened": True}
    runtime.store.audit(RESULT_EVENT, actor="agent:agent-a", data={**opened, "user": "alice", "tid": "t1"})
    runtime.store.audit(RESULT_EVENT, actor="agent:agent-a", data={**opened, "user": "alice", "tid": "t2"})
    refusal = limit_refusal(runtime, agent="agent-a", user="alice", asks_person=True)
    assert refusal is not None and "user 'alice' already has 2 pending" in refusal
    assert limit_refusal(runtime, agent="agent-a", user="bob", asks_person=True) is None
    assert limit_refusal(runtime, agent="agent-a", user="alice", asks_person=False) is None
    runtime.store.audit(RESULT_EVENT, actor="agent:agent-a", data={**opened, "user": "bob", "tid": "t3"})
    refusal = limit_refusal(runtime, agent="agent-a", user="bob", asks_person=True)
    assert refusal is not None and "agent 'agent-a' already has 3 pending" in refusal


def test_the_relay_command_imports_nothing_of_the_server() -> None:
    probe = (
        "import sys, cli.mcp_command\n"
        "server = ('store', 'tasks', 'web', 'rublon', 'policies', 'config', 'listener', 'sqlmodel', 'sqlalchemy')\n"
        "print(sorted({name.split('.')[0] for name in sys.modules} & set(server)))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_the_relay_reads_its_credential_and_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert endpoint_of("http://gate:8000") == "http://gate:8000/mcp"
    assert endpoint_of("http://gate:8000/mcp/") == "http://gate:8000/mcp"
    monkeypatch.delenv(CREDENTIAL_ENV, raising=False)
    with pytest.raises(click.UsageError, match=CREDENTIAL_ENV):
        read_credential(None)
    monkeypatch.setenv(CREDENTIAL_ENV, " from-env ")
    assert read_credential(None) == "from-env"
    file = tmp_path / "credential"
    file.write_text("from-file\n")
    assert read_credential(file) == "from-file"
    file.write_text("\n")
    with pytest.raises(click.UsageError, match="holds no credential"):
        read_credential(file)
