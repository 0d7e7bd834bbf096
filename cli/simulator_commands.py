"""``mfa-gate simulator``: run the local Rublon simulator and decide its transactions."""

from __future__ import annotations

import click

from config import get_settings


@click.group()
def simulator() -> None:
    """The local Rublon simulator (development and tests only; refused in production)."""


@simulator.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def serve(ctx: click.Context) -> None:
    """Serve the simulator; options as 'python -m simulator --help'."""
    from simulator.__main__ import main as simulator_main

    settings = get_settings()
    defaults = [
        "--system-token",
        settings.rublon_system_token,
        "--secret-key",
        settings.rublon_secret_key.get_secret_value(),
    ]
    raise SystemExit(simulator_main(defaults + list(ctx.args)))


def _decide(verb: str, tid: str) -> None:
    from simulator.control import SimulatorControl, SimulatorControlError

    url = get_settings().rublon_api_server
    try:
        result = getattr(SimulatorControl(url), verb)(tid)
    except SimulatorControlError as exc:
        hint = "" if exc.status_code else "; start one with 'mfa-gate simulator serve' or set RUBLON_API_SERVER"
        raise click.ClickException(f"{exc}{hint}") from None
    # approve answers with the access token: that is the listener's to exchange, never printed.
    click.echo(f"{verb}: {tid}" + (" (approved)" if verb == "approve" and result else ""))


@simulator.command()
@click.argument("tid")
def approve(tid: str) -> None:
    """Approve transaction TID as the simulated person."""
    _decide("approve", tid)


@simulator.command()
@click.argument("tid")
def deny(tid: str) -> None:
    """Deny transaction TID as the simulated person."""
    _decide("deny", tid)


@simulator.command()
@click.argument("tid")
def expire(tid: str) -> None:
    """Let transaction TID expire now."""
    _decide("expire", tid)
