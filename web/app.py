"""The ASGI application of the web process."""

from __future__ import annotations

import logging
import time

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tasks.runtime import Runtime, get_runtime
from tasks.submission import SubmissionError
from web.api import router as api_router
from web.auth import Unauthenticated
from web.callback import router as callback_router
from web.mcp_server import mount_mcp
from web.metrics import router as metrics_router

access_log = logging.getLogger("mfa_gate.access")


class AccessLog:
    """Our own access log: method, path (never the query string: it may carry a rublonToken),
    status and milliseconds.

    Plain ASGI, not ``@app.middleware("http")``: Starlette's BaseHTTPMiddleware wraps
    every request in extra tasks and streams, which cost more than the log line itself.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            elapsed = (time.perf_counter() - started) * 1000
            access_log.info("%s %s %s %.1fms", scope["method"], scope["path"], status, elapsed)


def create_app(runtime: Runtime | None = None) -> FastAPI:
    """Build the app around ``runtime`` (the process's own when None)."""
    runtime = runtime or get_runtime()
    runtime.check()
    app = FastAPI(title="mfa-gate", version="0.1.0", docs_url="/docs", redoc_url=None)
    app.state.runtime = runtime
    app.include_router(api_router)
    app.include_router(callback_router)
    mount_mcp(app, runtime)
    app.include_router(metrics_router)

    @app.exception_handler(SubmissionError)
    async def _submission_error(_: Request, exc: SubmissionError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status_code)

    @app.exception_handler(Unauthenticated)
    async def _unauthenticated(_: Request, exc: Unauthenticated) -> JSONResponse:
        body = {"error": {"field": "authorization", "message": f"{exc}; send 'Authorization: Bearer <credential>'"}}
        return JSONResponse(body, status_code=401, headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"] if part not in ("body", "query", "path"))
        return JSONResponse({"error": {"field": field or "body", "message": first["msg"]}}, status_code=422)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.add_middleware(AccessLog)
    return app
