"""Agent identity from the bearer credential, never from what the agent claims."""

from __future__ import annotations

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from policies import Agent
from tasks.runtime import Runtime


class Unauthenticated(Exception):
    """No valid agent credential; the API answers 401."""


def bearer(request: Request) -> str | None:
    """The bearer credential of the request, or None."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


async def authenticate(runtime: Runtime, request: Request) -> Agent:
    """The agent the credential belongs to; raises Unauthenticated (audited, credential never recorded)."""
    credential = bearer(request)
    agent = runtime.directory.authenticate(credential) if credential else None
    if agent is None or agent.suspended:
        why = "no bearer credential" if credential is None else "unknown or revoked credential"
        await run_in_threadpool(
            runtime.store.audit,
            "auth.refused",
            actor="web",
            data={
                "reason": why,
                "path": request.url.path,
                "source_ip": request.client.host if request.client else None,
            },
        )
        raise Unauthenticated(why)
    return agent
