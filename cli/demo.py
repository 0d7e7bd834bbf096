"""The main job on embedded defaults: five actions, one of each fate, and their timelines.

SQLite store, the local Rublon simulator, and kombu's filesystem broker unless REDIS_URL
is set (then Redis, which must answer). The worker, the listener and the simulator run
as real child processes; the actions go through the same submission path as the API.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click

from cli.processes import Child, celery_worker, free_port, python, start, wait_http, wait_log
from cli.target import CountingTarget

if TYPE_CHECKING:
    from store import Action
    from tasks.runtime import Runtime

DEMO_DIR = Path(".mfa-gate/demo")
DEMO_POLICY = Path(__file__).resolve().parent / "demo_policy.toml"
FINAL = {"succeeded", "failed", "denied", "rejected", "expired", "cancelled", "blocked", "ambiguous"}


@dataclass
class Scenario:
    """One demo action: what is submitted, what the simulated person does, what must happen."""

    title: str
    method: str
    path: str
    person: str | None  # approve | deny | expire | None (no person asked)
    expected: str


SCENARIOS = [
    Scenario("read a report (policy allows)", "GET", "/reports/daily", None, "succeeded"),
    Scenario("pay 5000 EUR (person approves)", "POST", "/payments", "approve", "succeeded"),
    Scenario("pay 9000 EUR (person rejects)", "POST", "/payments", "deny", "rejected"),
    Scenario("pay 7000 EUR (nobody answers)", "POST", "/payments", "expire", "expired"),
    Scenario("delete the ledger (policy denies)", "DELETE", "/ledger", None, "denied"),
]


def _check_redis(url: str) -> None:
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        raise click.ClickException(
            f"REDIS_URL is set to {url} but Redis does not answer ({type(exc).__name__}); start Redis or unset "
            "REDIS_URL to use the embedded broker"
        ) from None


def run_demo(*, quick: bool = False) -> int:
    """Run the demo; 0 when every action met its expected fate."""
    workdir = DEMO_DIR.resolve()
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    redis_url = os.environ.get("REDIS_URL") or None
    if redis_url:
        _check_redis(redis_url)
    sim_port = free_port()
    env = dict(os.environ)
    env.update(
        {
            "DATABASE_URL": f"sqlite:///{workdir / 'demo.db'}",
            "MFA_GATE_BROKER_DIR": str(workdir / "broker"),
            "RUBLON_API_SERVER": f"http://127.0.0.1:{sim_port}",
            "MFA_GATE_POLICY_FILE": str(DEMO_POLICY),
            "MFA_GATE_LISTENER_POLL_INTERVAL": "0.5",
            "PYTHONUNBUFFERED": "1",
        }
    )
    os.environ.update(env)
    from config import get_settings

    get_settings.cache_clear()
    settings = get_settings()
    from tasks.celery_app import app
    from tasks.celery_config import celery_settings

    app.conf.update(celery_settings(settings))  # the app may have been configured before the demo's env
    logging.getLogger("kombu.connection").setLevel(logging.ERROR)  # "no hostname" means nothing for files
    click.echo(f"store:   SQLite at {workdir / 'demo.db'}")
    if redis_url:
        click.echo(f"broker:  Redis at {redis_url}")
    else:
        click.echo(f"broker:  embedded (kombu filesystem transport in {workdir / 'broker'}; set REDIS_URL for Redis)")
    click.echo(f"rublon:  local simulator at {settings.rublon_api_server} (not Rublon; development only)")
    click.echo(f"policy:  {DEMO_POLICY}")

    from tasks.runtime import get_runtime, set_runtime

    set_runtime(None)
    runtime = get_runtime()
    runtime.check()
    logs = workdir / "logs"
    children: list[Child] = []
    try:
        users = [f"--user={u.name}:{u.email}:active" for u in runtime.directory.users]
        simulator = start(
            "simulator",
            python(
                "-m",
                "simulator",
                "--port",
                str(sim_port),
                "--decision",
                "manual",
                "--system-token",
                settings.rublon_system_token,
                "--secret-key",
                runtime.rublon_secret,
                *users,
            ),
            env=env,
            log_dir=logs,
        )
        children.append(simulator)
        wait_http(f"{settings.rublon_api_server}/_simulator/transactions", child=simulator)
        worker = start(
            "worker",
            celery_worker("gate,execute,maintenance", name="demo", concurrency=4, pool="threads"),
            env=env,
            log_dir=logs,
        )
        children.append(worker)
        listener = start("listener", python("-m", "listener"), env=env, log_dir=logs)
        children.append(listener)
        wait_log(worker, "ready", timeout=60)
        wait_log(listener, "started", timeout=30)
        click.echo(f"processes: worker, listener, simulator (logs in {logs})\n")
        with CountingTarget() as target:
            ok = _play(runtime, target, settings.rublon_api_server, timeout=60.0 if not quick else 40.0)
            click.echo(f"\nthe target received {target.total()} request(s); the 2 released actions each ran once")
            ok = ok and target.total() == 2
    finally:
        for child in reversed(children):
            child.stop()
    click.echo("\ndemo " + ("passed: every action met its expected fate" if ok else "FAILED: see the timelines above"))
    return 0 if ok else 1


def _play(runtime: Runtime, target: CountingTarget, simulator_url: str, *, timeout: float) -> bool:
    from simulator.control import SimulatorControl
    from tasks.submission import SubmitRequest, submit

    control = SimulatorControl(simulator_url)
    started = time.monotonic()
    ids: list[str] = []
    for number, scenario in enumerate(SCENARIOS, start=1):
        amount = {"approve": 5000, "deny": 9000, "expire": 7000}.get(scenario.person or "", 0)
        params = {"method": scenario.method, "url": f"{target.url}{scenario.path}"}
        if scenario.method == "POST":
            params["json"] = {"amount": amount, "currency": "EUR", "recipient": "ACME Ltd"}  # type: ignore[assignment]
        request = SubmitRequest(action="http.request", params=params, user="alice", idempotency_key=f"demo-{number}")
        done = submit(runtime, request, agent="demo-agent", source_ip="127.0.0.1", actor="agent:demo-agent")
        ids.append(done.action.id)
        click.echo(f"{number}. {scenario.title}: {done.action.status} - {done.action.reason}")
    for action_id, scenario in zip(ids, SCENARIOS, strict=True):
        if scenario.person is None:
            continue
        action = _wait(runtime, action_id, lambda a: a.tid is not None or a.status in FINAL, timeout)
        if action.tid is None:
            continue
        getattr(control, scenario.person)(action.tid)
    finals = [_wait(runtime, action_id, lambda a: a.status in FINAL, timeout) for action_id in ids]
    click.echo("")
    ok = True
    for number, (scenario, action) in enumerate(zip(SCENARIOS, finals, strict=True), start=1):
        met = action.status == scenario.expected
        ok = ok and met
        click.echo(
            f"{number}. {scenario.title} -> {action.status}" + ("" if met else f" (expected {scenario.expected})")
        )
        for event in runtime.store.events(action.id):
            offset = (event.at - action.created_at).total_seconds() * 1000
            why = event.data.get("reason") or event.data.get("why") or ""
            click.echo(f"     +{offset:7.0f} ms  {event.event:<26} {event.actor:<28} {str(why)[:70]}")
    click.echo(f"\nall settled in {time.monotonic() - started:.1f}s")
    return ok


def _wait(runtime: Runtime, action_id: str, done: Callable[..., bool], timeout: float) -> Action:
    deadline = time.monotonic() + timeout
    action = runtime.store.require(action_id)
    while not done(action) and time.monotonic() < deadline:
        time.sleep(0.1)
        action = runtime.store.require(action_id)
    return action
