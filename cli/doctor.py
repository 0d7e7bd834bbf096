"""``mfa-gate doctor``: check the settings, Redis, the database, the policy, the directory and Rublon."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import click


@dataclass(frozen=True)
class Finding:
    """One check's outcome, in plain words, with what to do when it failed."""

    name: str
    ok: bool
    detail: str
    fix: str = ""


def _check(name: str, probe: Callable[[], str], fix: str) -> Finding:
    try:
        return Finding(name, True, probe())
    except Exception as exc:  # the doctor reports every failure instead of stopping at the first
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return Finding(name, False, f"{type(exc).__name__}: {message[:300]}", fix)


def diagnose() -> list[Finding]:
    """Run every check; never raises."""
    from config import Settings, get_settings

    try:
        settings: Settings = get_settings()
    except Exception as exc:
        return [Finding("settings", False, str(exc)[:500], "fix the environment variable named above (see README)")]
    findings = [Finding("settings", True, f"environment {settings.env}")]

    def redis_probe() -> str:
        if settings.redis_url is None:
            return "REDIS_URL unset: the embedded filesystem broker is used (development only)"
        import redis

        client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=3, socket_timeout=3)
        client.ping()
        policy = client.config_get("maxmemory-policy").get("maxmemory-policy")
        aof = client.config_get("appendonly").get("appendonly")
        notes = []
        if policy != "noeviction":
            notes.append(f"maxmemory-policy is {policy}: set noeviction so queued work is never evicted")
        if aof != "yes":
            notes.append("appendonly is off: a restart forgets queued messages (the store re-sends them)")
        return "reachable" + ("; " + "; ".join(notes) if notes else "")

    findings.append(_check("redis", redis_probe, "start Redis or fix REDIS_URL (redis://host:6379/0)"))

    def database_probe() -> str:
        from store import Store, schema

        store = Store(settings.database_url, audit_key=settings.audit_key.get_secret_value().encode())
        try:
            at, head = schema.current(store.engine), schema.head()
            if at != head:
                raise RuntimeError(f"schema at {at or 'nothing'}, newest is {head}: run 'mfa-gate migrate'")
            return f"{store.engine.url.render_as_string(hide_password=True)} at schema {at}"
        finally:
            store.dispose()

    findings.append(_check("database", database_probe, "check DATABASE_URL and that the server runs"))

    def policy_probe() -> str:
        from policies import load_policy

        policy = load_policy(settings.policy_file)
        return f"{settings.policy_file}: {len(policy.rules)} rules, hash {policy.policy_hash[:12]}"

    findings.append(_check("policy", policy_probe, "fix the file, rule and field named above"))

    def directory_probe() -> str:
        from policies import load_directory

        directory = load_directory(settings.directory_file)
        dev = directory.development_agents()
        if dev and settings.env == "production":
            raise RuntimeError(f"agents {', '.join(dev)} use the development credential")
        return f"{settings.directory_file}: {len(directory.users)} users, {len(directory.agents)} agents"

    findings.append(
        _check(
            "directory",
            directory_probe,
            "fix the directory file; rotate credentials with 'mfa-gate agents rotate NAME'",
        )
    )

    def rublon_probe() -> str:
        from rublon.client import RublonClient

        with RublonClient(
            api_server=settings.rublon_api_server,
            system_token=settings.rublon_system_token,
            secret_key=settings.rublon_secret_key.get_secret_value(),
            timeout=10,
        ) as client:
            client.app_init()
        return f"{settings.rublon_api_server} answered app/init with a valid signature"

    findings.append(
        _check(
            "rublon",
            rublon_probe,
            "check RUBLON_API_SERVER, RUBLON_SYSTEM_TOKEN and "
            "RUBLON_SECRET_KEY (InvalidSignature means the secret key is wrong)",
        )
    )
    return findings


@click.command()
def doctor() -> None:
    """Check settings, Redis, the database, the policy and directory files, and Rublon."""
    findings = diagnose()
    for finding in findings:
        mark = "ok  " if finding.ok else "FAIL"
        click.echo(f"[{mark}] {finding.name:<10} {finding.detail}")
        if not finding.ok and finding.fix:
            click.echo(f"       -> {finding.fix}")
    if not all(f.ok for f in findings):
        raise SystemExit(1)
