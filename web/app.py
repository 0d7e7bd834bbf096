"""The ASGI application of the web process."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from tasks.runtime import Runtime, get_runtime
from tasks.submission import SubmissionError
from web.api import router as api_router
from web.auth import Unauthenticated
from web.callback import router as callback_router
from web.mcp_server import mount_mcp
from web.metrics import router as metrics_router

access_log = logging.getLogger("mfa_gate.access")


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

    @app.middleware("http")
    async def _access_log(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        # Our own access log: the path only, never the query string (it may carry a rublonToken).
        started = time.perf_counter()
        response = await call_next(request)
        access_log.info(
            "%s %s %s %.1fms",
            request.method,
            request.url.path,
            response.status_code,
            (time.perf_counter() - started) * 1000,
        )
        return response

    return app
