"""``mfa-gate``: the operators' command line, used where the database is."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from config import get_settings
from store import ActionStatus
from store.errors import ActionNotFound, StoreError

F = TypeVar("F", bound=Callable[..., Any])


class UsageProblem(click.ClickException):
    """A clear error for the operator, printed without a traceback (exit 2)."""

    exit_code = 2


def friendly(func: F) -> F:
    """Turn the errors an operator can cause into one plain line each, never a traceback."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from policies import DirectoryError, PolicyError
        from tasks.submission import SubmissionError

        try:
            return func(*args, **kwargs)
        except SubmissionError as exc:
            raise UsageProblem(f"{exc.field}: {exc.message}") from None
        except (PolicyError, DirectoryError, ActionNotFound) as exc:
            raise UsageProblem(str(exc)) from None
        except StoreError as exc:
            raise UsageProblem(str(exc)) from None
        except ValueError as exc:
            raise UsageProblem(str(exc)) from None

    return wrapper  # type: ignore[return-value]


def _runtime() -> Any:
    from tasks.runtime import get_runtime

    runtime = get_runtime()
    runtime.check()
    return runtime


def _json_option(value: str | None, field: str) -> dict[str, Any]:
    if value is None:
        return {}
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise UsageProblem(f"--{field}: not valid JSON ({exc.msg} at char {exc.pos}); pass a JSON object") from None
    if not isinstance(parsed, dict):
        raise UsageProblem(f"--{field}: must be a JSON object, like '{{\"amount\": 10}}'")
    return parsed


def _print_action(action: Any, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(action.public(), sort_keys=True))
        return
    click.echo(f"{action.id}  {action.status:<18} {action.action:<20} user={action.user} agent={action.agent}")
    click.echo(f"  reason: {action.reason}")
    if action.web_uri:
        click.echo(f"  approve at: {action.web_uri}")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.pass_context
def main(ctx: click.Context) -> None:
    """mfa-gate: a person's MFA approval in front of the high-impact actions of AI agents."""
    from cli.logging_setup import configure_logging

    if ctx.invoked_subcommand == "mcp":
        return  # the agent-side relay reads no server settings; it configures its own logging
    try:
        configure_logging(get_settings())
    except Exception as exc:  # pydantic's ValidationError names the setting at fault
        raise UsageProblem(f"bad settings: {exc}") from None


# -- actions --------------------------------------------------------------------------------
@main.command()
@click.argument("action")
@click.option("--params", "params", help="the action's params as a JSON object")
@click.option("--user", required=True, help="the user the agent acts for (approver)")
@click.option("--agent", required=True, help="the agent to submit as (operators only)")
@click.option("--email", help="the user's email (checked against the directory)")
@click.option("--context", help="agent-supplied context as a JSON object")
@click.option("--idempotency-key", help="the same key twice (same agent) gives one action")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
@friendly
def submit(
    action: str,
    params: str | None,
    user: str,
    agent: str,
    email: str | None,
    context: str | None,
    idempotency_key: str | None,
    as_json: bool,
) -> None:
    """Submit ACTION as AGENT, for USER."""
    from tasks.submission import parse_request
    from tasks.submission import submit as do_submit

    runtime = _runtime()
    if runtime.directory.agent(agent) is None:
        raise UsageProblem(f"--agent: unknown agent {agent!r}; agents come from the directory file")
    body = {
        "action": action,
        "params": _json_option(params, "params"),
        "user": user,
        "context": _json_option(context, "context"),
        "idempotency_key": idempotency_key,
        "email": email,
    }
    request = parse_request({key: value for key, value in body.items() if value is not None})
    done = do_submit(runtime, request, agent=agent, source_ip=None, actor="cli")
    _print_action(done.action, as_json)


@main.command()
@click.argument("action_id")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
@friendly
def status(action_id: str, as_json: bool) -> None:
    """Show one action."""
    _print_action(_runtime().store.require(action_id), as_json)


@main.command(name="list")
@click.option("--status", "statuses", multiple=True, type=click.Choice([s.value for s in ActionStatus]))
@click.option("--agent", help="only this agent's actions")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--json", "as_json", is_flag=True, help="print JSON lines")
@friendly
def list_actions(statuses: tuple[str, ...], agent: str | None, limit: int, as_json: bool) -> None:
    """List the newest actions."""
    chosen = [ActionStatus(s) for s in statuses] or None
    for action in _runtime().store.list_actions(statuses=chosen, agent=agent, limit=limit):
        if as_json:
            click.echo(json.dumps(action.public(), sort_keys=True))
        else:
            created = action.created_at.strftime("%Y-%m-%d %H:%M:%S")
            click.echo(
                f"{action.id}  {created}  {action.status:<18} {action.action:<20} {action.user:<10} {action.agent}"
            )


@main.command()
@click.argument("action_id")
@click.option("--json", "as_json", is_flag=True)
@friendly
def cancel(action_id: str, as_json: bool) -> None:
    """Withdraw an action that was not released (the push is withdrawn)."""
    from tasks.submission import cancel as do_cancel

    _print_action(do_cancel(_runtime(), action_id, agent=None, actor="cli"), as_json)


@main.command()
@click.argument("action_id")
@click.option("--succeeded", "outcome", flag_value="succeeded", help="the action did happen")
@click.option("--failed", "outcome", flag_value="failed", help="the action did not happen")
@click.option("--note", default="", help="what you checked")
@friendly
def resolve(action_id: str, outcome: str | None, note: str) -> None:
    """Resolve an ``ambiguous`` action after checking the target system."""
    if outcome is None:
        raise UsageProblem("say what happened: --succeeded or --failed")
    runtime = _runtime()
    new = ActionStatus(outcome)
    moved = runtime.store.move(
        action_id,
        expected=ActionStatus.AMBIGUOUS,
        new=new,
        actor="cli",
        reason=f"resolved by an operator as {outcome}" + (f": {note}" if note else ""),
        data={"note": note},
    )
    if moved is None:
        current = runtime.store.require(action_id)
        raise UsageProblem(f"action {action_id} is {current.status}, not ambiguous; nothing to resolve")
    _print_action(moved, False)


# -- audit ----------------------------------------------------------------------------------
@main.group()
def audit() -> None:
    """Read and check the audit chain."""


@audit.command(name="show")
@click.argument("action_id")
@click.option("--json", "as_json", is_flag=True, help="print JSON lines")
@friendly
def audit_show(action_id: str, as_json: bool) -> None:
    """The audit trail of one action."""
    runtime = _runtime()
    runtime.store.require(action_id)
    for event in runtime.store.events(action_id):
        if as_json:
            click.echo(json.dumps(_event_json(event), sort_keys=True))
        else:
            data = ", ".join(f"{k}={v}" for k, v in event.data.items() if v not in (None, "", [], {}))
            click.echo(f"#{event.seq:<6} {event.at:%Y-%m-%d %H:%M:%S.%f}  {event.event:<26} by {event.actor}  {data}")


def _event_json(event: Any) -> dict[str, Any]:
    return {
        "seq": event.seq,
        "at": event.at.isoformat(),
        "action_id": event.action_id,
        "event": event.event,
        "actor": event.actor,
        "data": event.data,
        "mac": event.mac,
    }


@audit.command(name="verify")
@friendly
def audit_verify() -> None:
    """Recompute the chain; name the first broken link (exit 1 when broken)."""
    report = _runtime().store.verify_audit()
    if report.ok:
        click.echo(f"audit chain intact: {report.events} events, head #{report.head_seq}")
        return
    click.echo(f"audit chain BROKEN at event #{report.broken_at}: {report.problem}", err=True)
    sys.exit(1)


@audit.command(name="export")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="file (default: stdout)")
@friendly
def audit_export(output: Path | None) -> None:
    """Write every audit event as JSON lines (for a SIEM)."""
    lines = (json.dumps(_event_json(event), sort_keys=True) for event in _runtime().store.events())
    if output is None:
        for line in lines:
            click.echo(line)
        return
    with output.open("w") as handle:
        count = 0
        for line in lines:
            handle.write(line + "\n")
            count += 1
    click.echo(f"wrote {count} events to {output}")


# -- policy ---------------------------------------------------------------------------------
@main.group()
def policy() -> None:
    """Check and explain the policy."""


@policy.command(name="explain")
@click.argument("action")
@click.option("--params", help="the action's params as a JSON object")
@click.option("--user", required=True)
@click.option("--agent", required=True)
@click.option("--context", help="agent-supplied context as a JSON object")
@click.option("--source-ip", help="the request's source address")
@friendly
def policy_explain(
    action: str, params: str | None, user: str, agent: str, context: str | None, source_ip: str | None
) -> None:
    """Which rules match ACTION and why, and the outcome."""
    from policies import Facts, evaluate, explain
    from store.models import utcnow

    runtime = _runtime()
    found = runtime.directory.user(user)
    groups = tuple(found.groups) if found else ()
    facts = Facts(agent=agent, user=user, groups=groups, source_ip=source_ip, now=utcnow())
    parsed_params, parsed_context = _json_option(params, "params"), _json_option(context, "context")
    click.echo(explain(runtime.policy, action=action, params=parsed_params, facts=facts, context=parsed_context))
    decision = evaluate(runtime.policy, action=action, params=parsed_params, facts=facts, context=parsed_context)
    click.echo(f"outcome: {decision.outcome} ({decision.reason}); policy {decision.policy_hash[:12]}")


@policy.command(name="check")
@friendly
def policy_check() -> None:
    """Load the policy and directory files and report problems."""
    runtime = _runtime()
    click.echo(
        f"policy {runtime.settings.policy_file}: {len(runtime.policy.rules)} rules, "
        f"hash {runtime.policy.policy_hash[:12]}"
    )
    click.echo(f"directory {runtime.settings.directory_file}: ok")


# -- processes ------------------------------------------------------------------------------
@main.command()
@click.option("--host", help="default: MFA_GATE_WEB_HOST")
@click.option("--port", type=int, help="default: MFA_GATE_WEB_PORT")
@friendly
def web(host: str | None, port: int | None) -> None:
    """Run the web process (REST API, MCP, callback, metrics)."""
    import uvicorn

    from web.app import create_app

    settings = get_settings()
    uvicorn.run(
        create_app(_runtime()),
        host=host or settings.web_host,
        port=port or settings.web_port,
        access_log=False,
        log_config=None,
    )


@main.command()
@click.option("--name", help="this listener's name in leases and audit events")
@friendly
def listener(name: str | None) -> None:
    """Run the confirmation listener."""
    from listener.main import main as listener_main

    sys.exit(listener_main(name))


@main.command()
@friendly
def migrate() -> None:
    """Create or upgrade the database schema."""
    runtime = _runtime()
    click.echo(f"schema ready in {runtime.store.engine.url.render_as_string(hide_password=True)}")


@main.command()
@click.option("--quick", is_flag=True, help="shorter waits")
@friendly
def demo(quick: bool) -> None:
    """Run the main job on embedded defaults and print each action's timeline."""
    from cli.demo import run_demo

    sys.exit(run_demo(quick=quick))


from cli.agents import agents  # noqa: E402
from cli.doctor import doctor  # noqa: E402
from cli.mcp_command import mcp  # noqa: E402
from cli.simulator_commands import simulator  # noqa: E402

main.add_command(simulator)
main.add_command(mcp)
main.add_command(agents)
main.add_command(doctor)
