"""``mfa-gate simulator``: run the local Rublon simulator and decide its transactions."""

from __future__ import annotations

import click
import httpx

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
    from simulator.control import SimulatorControl

    url = get_settings().rublon_api_server
    try:
        result = getattr(SimulatorControl(url), verb)(tid)
    except httpx.HTTPStatusError as exc:
        raise click.ClickException(f"the simulator at {url} refused: {exc.response.text}") from None
    except httpx.HTTPError as exc:
        raise click.ClickException(
            f"no simulator answers at {url} ({type(exc).__name__}); start one with "
            "'mfa-gate simulator serve' or set RUBLON_API_SERVER"
        ) from None
    click.echo(f"{verb}: {tid} {result if result is not None else ''}".rstrip())


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
