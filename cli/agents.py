"""``mfa-gate agents``: rotate, revoke and lift agents (credentials live hashed in the directory file)."""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path

import click

from config import get_settings
from policies import Agent, Directory


def _write_atomically(path: Path, text: str) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w") as out:
        out.write(text)
    os.replace(temporary, path)


def _directory_and_agent(name: str) -> tuple[Directory, Agent]:
    from policies import load_directory

    directory = load_directory(get_settings().directory_file)
    agent = directory.agent(name)
    if agent is None:
        known = ", ".join(a.name for a in directory.agents) or "none"
        raise click.ClickException(f"no agent {name!r} in {get_settings().directory_file} (known: {known})")
    return directory, agent


@click.group()
def agents() -> None:
    """Manage agents: list, rotate or revoke credentials, lift a suspension."""


@agents.command(name="list")
def list_agents() -> None:
    """Every agent, the users it may act for, and whether it is revoked or suspended."""
    from tasks.runtime import get_runtime

    runtime = get_runtime()
    runtime.check()
    for agent in runtime.directory.agents:
        state = runtime.store.agent_state(agent.name)
        flags = ["revoked"] if agent.suspended else []
        if state is not None and state.suspended:
            flags.append(f"suspended ({state.suspended_reason})")
        click.echo(f"{agent.name:<24} users={','.join(agent.users) or '-':<30} {' '.join(flags) or 'active'}")


@agents.command()
@click.argument("name")
@click.option(
    "--credential-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="write the new credential here (mode 0600) instead of printing it",
)
def rotate(name: str, credential_file: Path | None) -> None:
    """Give agent NAME a new credential; the old one stops working at once."""
    from policies import hash_credential, render_directory
    from policies.directory import new_credential

    directory, agent = _directory_and_agent(name)
    credential = new_credential()
    updated = directory.with_agent(
        dataclasses.replace(
            agent,
            credential_sha256=hash_credential(credential),
            suspended=False,
        )
    )
    _write_atomically(get_settings().directory_file, render_directory(updated))
    _audit("agent.rotated", name)
    if credential_file is not None:
        credential_file.touch(mode=0o600)
        credential_file.write_text(credential + "\n")
        click.echo(f"new credential of {name} written to {credential_file}")
    else:
        click.echo(f"new credential of {name} (shown once; store it in the agent's secret store):")
        click.echo(credential)


@agents.command()
@click.argument("name")
def revoke(name: str) -> None:
    """Revoke agent NAME's credential: every call with it is refused (401) from now on."""
    from policies import render_directory

    directory, agent = _directory_and_agent(name)
    updated = directory.with_agent(dataclasses.replace(agent, suspended=True))
    _write_atomically(get_settings().directory_file, render_directory(updated))
    _audit("agent.revoked", name)
    click.echo(f"revoked {name}")


@agents.command()
@click.argument("name")
def lift(name: str) -> None:
    """Lift the push-fatigue suspension of agent NAME (its submissions reach people again)."""
    from tasks.runtime import get_runtime

    _directory_and_agent(name)
    runtime = get_runtime()
    runtime.check()
    if not runtime.store.lift_suspension(name, actor="cli"):
        raise click.ClickException(f"agent {name} is not suspended")
    click.echo(f"lifted the suspension of {name}")


def _audit(event: str, agent: str) -> None:
    from tasks.runtime import get_runtime

    runtime = get_runtime()
    runtime.check()
    runtime.store.audit(event, actor="cli", data={"agent": agent})
