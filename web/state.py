"""Where the web process keeps its runtime."""

from __future__ import annotations

from fastapi import Request

from tasks.runtime import Runtime


def runtime_of(request: Request) -> Runtime:
    """The runtime the app was built with."""
    runtime: Runtime = request.app.state.runtime
    return runtime
