"""Policy and directory files the tests deploy with."""

from __future__ import annotations

from pathlib import Path

from policies import hash_credential

AGENT_A, AGENT_B = "agent-a", "agent-b"
CRED_A, CRED_B = "credential-of-agent-a-0123456789", "credential-of-agent-b-0123456789"

TEST_POLICY = """
version = 1

[defaults]
methods = ["push"]
timeout_seconds = 120
on_unavailable = "block"
on_bypass = "block"
mode = "promptless"

[[rules]]
name = "reads"
action = "http.request"
when = ["params.method == 'GET'"]
outcome = "allow"

[[rules]]
name = "writes"
action = "http.request"
when = ["params.method == 'POST'"]
outcome = "mfa"

[[rules]]
name = "short-deadline"
action = "http.request"
when = ["params.url matches '*/deadline*'"]
outcome = "mfa"
timeout_seconds = 10

[[rules]]
name = "fail-open-when-unavailable"
action = "http.request"
when = ["params.url matches '*/failopen*'"]
outcome = "mfa"
on_unavailable = "allow"

[[rules]]
name = "prompt-mode"
action = "http.request"
when = ["params.url matches '*/prompt*'"]
outcome = "mfa"
mode = "prompt"

[[rules]]
name = "no-deletes"
action = "http.request"
when = ["params.method == 'DELETE'"]
outcome = "deny"

[limits]
max_pending_per_user = 1000
max_pending_per_agent = 1000
max_requests_per_agent_per_hour = 100000
suspend_agent_after_refusals = 1000

[http]
allowed_schemes = ["http"]
allowed_hosts = ["127.0.0.1"]
"""


def directory_text() -> str:
    return f"""
[users.alice]
email = "alice@example.com"
groups = ["finance"]

[users.bob]
email = "bob@example.com"

[users.carol]
email = "carol@example.com"

[users.dave]
email = "dave@example.com"

[users.erin]
email = "erin@example.com"

[users.frank]
email = "frank@example.com"

[agents.{AGENT_A}]
credential_sha256 = "{hash_credential(CRED_A)}"
users = ["alice", "bob", "dave", "erin", "frank"]

[agents.{AGENT_B}]
credential_sha256 = "{hash_credential(CRED_B)}"
users = ["carol"]
"""


def write_files(folder: Path) -> tuple[Path, Path]:
    """Write the test policy and directory; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    policy, directory = folder / "policy.toml", folder / "directory.toml"
    policy.write_text(TEST_POLICY)
    directory.write_text(directory_text())
    return policy, directory
