"""Operations: Flower for real, the metrics endpoint moving, the Procfile and the compose file."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from cli.processes import free_port, python, start, wait_http
from cli.stack import Stack
from cli.target import CountingTarget
from simulator.control import SimulatorControl
from store import Store
from tests.integration.conftest import post_action, wait_status, wait_tid

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _procfile() -> dict[str, str]:
    entries = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, command = line.split(":", 1)
            entries[name.strip()] = command.strip()
    return entries


def test_procfile_is_valid_for_honcho() -> None:
    result = subprocess.run([sys.executable, "-m", "honcho", "check"], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert set(_procfile()) == {"web", "worker-gate", "worker-execute", "worker-maintenance", "beat", "listener",
                                "flower"}
    assert "-Q execute" in _procfile()["worker-execute"] and "--prefetch-multiplier=1" in _procfile()["worker-execute"]


def test_compose_runs_every_procfile_process_with_healthchecks() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    for name in _procfile():
        assert name in services, f"compose lacks the Procfile process {name}"
        service = services[name]
        assert service["image"] == "mfa-gate:latest"
        assert service["healthcheck"]["test"], name
        grace = int(re.fullmatch(r"(\d+)s", service["stop_grace_period"]).group(1))  # type: ignore[union-attr]
        assert grace > 60, f"{name}: stop_grace_period must exceed the execute task's hard limit"
        for key in ("REDIS_URL", "DATABASE_URL", "RUBLON_SECRET_KEY", "MFA_GATE_AUDIT_KEY"):
            assert key in service["environment"], (name, key)
    redis = services["redis"]
    assert "--appendonly yes" in redis["command"] and "noeviction" in redis["command"]
    assert services["postgres"]["healthcheck"]["test"][1] == "pg_isready"
    assert services["migrate"]["command"] == "mfa-gate migrate"
    assert services["worker-execute"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_flower_needs_credentials_and_lists_workers_and_tasks(stack: Stack, api: httpx.Client, store: Store,
                                                              target: CountingTarget, tmp_path: Path) -> None:
    port = free_port()
    env = dict(stack.env, MFA_GATE_FLOWER_BASIC_AUTH="ops:secret-pass", MFA_GATE_FLOWER_DB=str(tmp_path / "flower"))
    flower = start("flower", python("-m", "celery", "-A", "tasks", "flower", f"--port={port}"), env=env,
                   log_dir=tmp_path)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthcheck", child=flower, timeout=60)
        body = api.post("/v1/actions", json=post_action(target, "/flower", method="GET")).json()
        wait_status(store, body["id"], "succeeded")
        assert httpx.get(f"http://127.0.0.1:{port}/api/workers").status_code == 401
        auth = ("ops", "secret-pass")
        deadline, workers, tasks = time.monotonic() + 60, {}, {}
        while time.monotonic() < deadline:
            workers = httpx.get(f"http://127.0.0.1:{port}/api/workers", auth=auth, timeout=30).json()
            tasks = httpx.get(f"http://127.0.0.1:{port}/api/tasks", auth=auth, timeout=30).json()
            if any(t.get("state") == "SUCCESS" for t in tasks.values()) and workers:
                break
            api.post("/v1/actions", json=post_action(target, "/flower", method="GET"))
            time.sleep(1)
        assert any(name.startswith("worker-execute") for name in workers), workers
        assert any(t.get("name") == "mfa_gate.execute.run_action" and t.get("state") == "SUCCESS"
                   for t in tasks.values()), tasks
    finally:
        flower.stop()


def test_flower_refuses_to_start_without_basic_auth(stack: Stack, tmp_path: Path) -> None:
    env = {k: v for k, v in stack.env.items() if k != "MFA_GATE_FLOWER_BASIC_AUTH"}
    result = subprocess.run(python("-m", "celery", "-A", "tasks", "flower", f"--port={free_port()}"), env=env,
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "MFA_GATE_FLOWER_BASIC_AUTH" in result.stdout + result.stderr


def _metric(text: str, name: str, labels: str = "") -> float:
    pattern = re.escape(name) + (re.escape("{" + labels + "}") if labels else r"(\{[^}]*\})?") + r" ([0-9.e+-]+)"
    found = re.search(pattern, text)
    assert found, f"{name}{{{labels}}} not in metrics"
    return float(found.groups()[-1])


def test_metrics_move_as_actions_flow(stack: Stack, api: httpx.Client, store: Store, target: CountingTarget,
                                      control: SimulatorControl) -> None:
    before = httpx.get(f"{stack.web_url}/metrics").text
    succeeded_before = _metric(before, "mfa_gate_actions", 'status="succeeded"')
    approvals_before = _metric(before, "mfa_gate_approval_wait_seconds_count")
    body = api.post("/v1/actions", json=post_action(target, "/metrics")).json()
    action = wait_tid(store, body["id"])
    pending = httpx.get(f"{stack.web_url}/metrics").text
    assert _metric(pending, "mfa_gate_pending_approvals") >= 1
    control.approve(action.tid)  # type: ignore[arg-type]
    wait_status(store, body["id"], "succeeded")
    after = httpx.get(f"{stack.web_url}/metrics").text
    assert _metric(after, "mfa_gate_actions", 'status="succeeded"') == succeeded_before + 1
    assert _metric(after, "mfa_gate_approval_wait_seconds_count") == approvals_before + 1
    assert _metric(after, "mfa_gate_release_latency_seconds_count") >= 1


def test_doctor_reports_each_part(stack: Stack) -> None:
    env = dict(stack.env)
    result = subprocess.run(python("-m", "cli", "doctor"), env=env, cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    for part in ("settings", "redis", "database", "policy", "directory", "rublon"):
        assert re.search(rf"\[ok  \] {part}", result.stdout), result.stdout
    broken = dict(env, RUBLON_SECRET_KEY="wrong-key")
    failed = subprocess.run(python("-m", "cli", "doctor"), env=broken, cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert failed.returncode == 1 and "[FAIL] rublon" in failed.stdout and "InvalidSignature" in failed.stdout
