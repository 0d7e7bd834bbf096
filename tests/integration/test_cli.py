"""The operators' CLI against a running deployment's database and simulator."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import pytest

from cli.processes import python
from cli.stack import Stack
from cli.target import CountingTarget
from store import Store
from tests.integration.conftest import post_action, wait_status, wait_tid

pytestmark = pytest.mark.integration
SQLITE_ONLY = True
ROOT = Path(__file__).resolve().parents[2]


def mfa_gate(stack: Stack, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(python("-m", "cli", *args), env=env or stack.env, cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_submit_status_list_and_audit(stack: Stack, store: Store, target: CountingTarget) -> None:
    params = json.dumps({"method": "GET", "url": f"{target.url}/cli"})
    submitted = mfa_gate(stack, "submit", "http.request", "--params", params, "--user", "alice", "--agent",
                         "agent-a", "--idempotency-key", "cli-1", "--json")
    assert submitted.returncode == 0, submitted.stderr
    body = json.loads(submitted.stdout)
    assert {"id", "status", "reason"} <= body.keys() and body["status"] == "queued"
    wait_status(store, body["id"], "succeeded")
    status = json.loads(mfa_gate(stack, "status", body["id"], "--json").stdout)
    assert status["status"] == "succeeded"
    assert body["id"] in mfa_gate(stack, "list", "--status", "succeeded").stdout
    trail = mfa_gate(stack, "audit", "show", body["id"]).stdout
    assert "action.created" in trail and "action.succeeded" in trail
    verified = mfa_gate(stack, "audit", "verify")
    assert verified.returncode == 0 and "intact" in verified.stdout


def test_simulator_commands_decide_a_held_action(stack: Stack, api: httpx.Client, store: Store,
                                                 target: CountingTarget) -> None:
    approved = api.post("/v1/actions", json=post_action(target, "/cli-approve")).json()
    denied = api.post("/v1/actions", json=post_action(target, "/cli-deny")).json()
    expired = api.post("/v1/actions", json=post_action(target, "/cli-expire")).json()
    for action_id, verb in ((approved["id"], "approve"), (denied["id"], "deny"), (expired["id"], "expire")):
        tid = wait_tid(store, action_id).tid
        result = mfa_gate(stack, "simulator", verb, str(tid))
        assert result.returncode == 0, result.stderr
    wait_status(store, approved["id"], "succeeded")
    wait_status(store, denied["id"], "rejected")
    wait_status(store, expired["id"], "expired")
    assert target.count(approved["id"]) == 1 and target.count(denied["id"]) == target.count(expired["id"]) == 0
    unknown = mfa_gate(stack, "simulator", "approve", "no-such-tid")
    assert unknown.returncode != 0 and "Traceback" not in unknown.stderr


def test_cancel_and_policy_explain(stack: Stack, api: httpx.Client, store: Store, target: CountingTarget) -> None:
    body = api.post("/v1/actions", json=post_action(target, "/cli-cancel")).json()
    wait_tid(store, body["id"])
    cancelled = mfa_gate(stack, "cancel", body["id"], "--json")
    assert cancelled.returncode == 0 and json.loads(cancelled.stdout)["status"] == "cancelled"
    again = mfa_gate(stack, "cancel", body["id"])
    assert again.returncode == 2 and "only submitted or awaiting_approval" in again.stderr
    explained = mfa_gate(stack, "policy", "explain", "http.request", "--params",
                         json.dumps({"method": "DELETE", "url": "http://127.0.0.1/x"}), "--user", "alice",
                         "--agent", "agent-a")
    assert explained.returncode == 0 and "no-deletes" in explained.stdout and "outcome: deny" in explained.stdout


def test_bad_input_is_one_clear_line(stack: Stack) -> None:
    for args, field in ((["submit", "http.request", "--params", "{oops", "--user", "alice", "--agent", "agent-a"],
                         "--params"),
                        (["submit", "no.such", "--params", "{}", "--user", "alice", "--agent", "agent-a"], "action"),
                        (["submit", "http.request", "--params", "{}", "--user", "alice", "--agent", "ghost"],
                         "--agent"),
                        (["status", "no-such-id"], "no action")):
        result = mfa_gate(stack, *args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert field in result.stderr and "Traceback" not in result.stderr


def test_broken_policy_stops_processes_at_start_naming_file_rule_and_field(stack: Stack, tmp_path: Path) -> None:
    broken = tmp_path / "policy.toml"
    broken.write_text('version = 1\n[[rules]]\nname = "bad"\naction = "*"\nwhen = ["params.amount =~ 3"]\n'
                      'outcome = "mfa"\n')
    env = dict(stack.env, MFA_GATE_POLICY_FILE=str(broken))
    for args in (["policy", "check"], ["web", "--port", "1"]):
        result = mfa_gate(stack, *args, env=env)
        assert result.returncode != 0
        assert str(broken) in result.stderr and "'bad'" in result.stderr and "when[0]" in result.stderr
