"""`mfa-gate agents`: rotating and revoking credentials in the directory file, lifting suspensions."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import main as cli_main
from config import get_settings
from policies import load_directory
from tasks.runtime import set_runtime
from tests.fixtures import CRED_A, TEST_POLICY, directory_text


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    (tmp_path / "directory.toml").write_text(directory_text())
    (tmp_path / "policy.toml").write_text(TEST_POLICY)
    monkeypatch.setenv("MFA_GATE_DIRECTORY_FILE", str(tmp_path / "directory.toml"))
    monkeypatch.setenv("MFA_GATE_POLICY_FILE", str(tmp_path / "policy.toml"))
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'store.db'}")
    monkeypatch.delenv("REDIS_URL", raising=False)
    get_settings.cache_clear()
    set_runtime(None)
    yield tmp_path / "directory.toml"
    get_settings.cache_clear()
    set_runtime(None)


def test_rotate_replaces_the_credential_and_revoke_disables_it(env: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    secret_file = tmp_path / "new-credential"
    rotated = runner.invoke(cli_main, ["agents", "rotate", "agent-a", "--credential-file", str(secret_file)])
    assert rotated.exit_code == 0, rotated.output
    new = secret_file.read_text().strip()
    assert new not in rotated.output and oct(secret_file.stat().st_mode)[-3:] == "600"
    directory = load_directory(env)
    assert directory.authenticate(CRED_A) is None
    found = directory.authenticate(new)
    assert found is not None and found.name == "agent-a"
    assert new not in env.read_text()  # only its hash is stored

    revoked = runner.invoke(cli_main, ["agents", "revoke", "agent-a"])
    assert revoked.exit_code == 0, revoked.output
    agent = load_directory(env).authenticate(new)
    assert agent is not None and agent.suspended  # the web process refuses suspended agents (401)


def test_lift_needs_a_suspended_agent_and_unknown_agents_are_named(env: Path) -> None:
    runner = CliRunner()
    not_suspended = runner.invoke(cli_main, ["agents", "lift", "agent-a"])
    assert not_suspended.exit_code != 0 and "not suspended" in not_suspended.output
    unknown = runner.invoke(cli_main, ["agents", "rotate", "ghost"])
    assert unknown.exit_code != 0 and "no agent 'ghost'" in unknown.output
