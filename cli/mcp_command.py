"""``mfa-gate mcp``: MCP over stdio for clients that launch a command, relayed to the web process.

It holds only the agent's credential (``MFA_GATE_AGENT_CREDENTIAL`` or ``--credential-file``)
and the web process's URL (``--url`` or ``MFA_GATE_URL``). Every ``tools/list`` and
``tools/call`` goes, as it is, to the web process's ``/mcp`` over streamable HTTP with the
credential as bearer; the answers come back as they are. Nothing of the server side is
imported here (no store, no policy, no Rublon client, no keys): this command runs where
the agent runs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import click
import httpx2
import mcp.types as types
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server

CREDENTIAL_ENV = "MFA_GATE_AGENT_CREDENTIAL"
URL_ENV = "MFA_GATE_URL"
DEFAULT_URL = "http://127.0.0.1:8000"
#: Seconds to connect to the web process; a tool call itself may wait up to the server's wait bound.
CONNECT_TIMEOUT = 30.0
#: Seconds to wait for an answer: longer than any wait tool's bound (MFA_GATE_WAIT_MAX_SECONDS).
READ_TIMEOUT = 300.0


def endpoint_of(url: str) -> str:
    """The ``/mcp`` endpoint of the web process at ``url`` (given with or without ``/mcp``)."""
    base = url.rstrip("/")
    return base if base.endswith("/mcp") else base + "/mcp"


def read_credential(credential_file: Path | None) -> str:
    """The agent credential: the file's first line, else the environment.

    Raises click.UsageError: neither gives one.
    """
    if credential_file is not None:
        lines = credential_file.read_text(encoding="utf-8").strip().splitlines()
        credential = lines[0].strip() if lines else ""
        if not credential:
            raise click.UsageError(f"--credential-file: {credential_file} holds no credential")
        return credential
    credential = os.environ.get(CREDENTIAL_ENV, "").strip()
    if not credential:
        raise click.UsageError(f"no agent credential: set {CREDENTIAL_ENV} or pass --credential-file")
    return credential


@asynccontextmanager
async def upstream(endpoint: str, credential: str) -> AsyncIterator[Client]:
    """An MCP client session with the web process, authenticated as the agent."""
    http = httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {credential}"},
        timeout=httpx2.Timeout(CONNECT_TIMEOUT, read=READ_TIMEOUT),
    )
    async with http, Client(streamable_http_client(endpoint, http_client=http), cache=None) as client:
        yield client


def relay_server(client: Client, endpoint: str) -> Server[Any]:
    """A stdio-facing MCP server whose tools are those of ``client``'s server, passed through."""

    async def list_tools(
        ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return await client.list_tools(cursor=params.cursor if params else None)

    async def call_tool(
        ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        try:
            return await client.call_tool(params.name, params.arguments)
        except Exception as exc:  # the web process went away mid-call: say so as the tool's error
            message = f"the mfa-gate web process at {endpoint} did not answer ({type(exc).__name__}); try again"
            return types.CallToolResult(content=[types.TextContent(type="text", text=message)], is_error=True)

    return Server(
        "mfa-gate",
        version="0.1.0",
        instructions=client.instructions,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


async def relay(endpoint: str, credential: str) -> None:
    """Serve stdio until the MCP client closes it, relaying to ``endpoint``."""
    async with upstream(endpoint, credential) as client:
        server = relay_server(client, endpoint)
        async with stdio_server() as (read_stream, write_stream):
            await server.run(read_stream, write_stream, server.create_initialization_options())


def diagnose(endpoint: str, credential: str) -> str:
    """Why no MCP session could be opened, in words: asked with one plain request."""
    try:
        response = httpx2.get(endpoint, headers={"Authorization": f"Bearer {credential}"}, timeout=CONNECT_TIMEOUT)
    except httpx2.HTTPError as exc:
        return f"nothing answers at {endpoint} ({type(exc).__name__}); check --url or {URL_ENV}"
    if response.status_code == 401:
        return f"the web process at {endpoint} refused the agent credential (401); check {CREDENTIAL_ENV}"
    if response.status_code == 404:
        return f"{endpoint} is not the MCP endpoint of an mfa-gate web process (404); check --url"
    return f"the web process at {endpoint} answered HTTP {response.status_code}"


@click.command(name="mcp")
@click.option("--url", envvar=URL_ENV, default=DEFAULT_URL, show_default=True, help=f"the web process (or {URL_ENV})")
@click.option(
    "--credential-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help=f"a file holding the agent credential (default: {CREDENTIAL_ENV})",
)
def mcp(url: str, credential_file: Path | None) -> None:
    """Serve MCP over stdio for one agent, relayed to the web process's /mcp."""
    credential = read_credential(credential_file)
    endpoint = endpoint_of(url)
    # stdout carries the protocol; request lines of the HTTP client would only be noise on stderr.
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    try:
        anyio.run(relay, endpoint, credential)
    except KeyboardInterrupt:
        return
    except Exception:
        # Never the credential: only the endpoint and what went wrong.
        raise click.ClickException(f"cannot relay MCP: {diagnose(endpoint, credential)}") from None
