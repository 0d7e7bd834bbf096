"""The web process's access log: path and status, never the query string."""

from __future__ import annotations

import logging

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from web.app import AccessLog


async def teapot(_: Request) -> PlainTextResponse:
    return PlainTextResponse("short and stout", status_code=418)


async def broken(_: Request) -> PlainTextResponse:
    raise RuntimeError("boom")


def test_access_log_names_method_path_and_status_but_not_the_query(caplog: pytest.LogCaptureFixture) -> None:
    app = AccessLog(Starlette(routes=[Route("/tea", teapot), Route("/broken", broken)]))
    with caplog.at_level(logging.INFO, logger="mfa_gate.access"), TestClient(app, raise_server_exceptions=False) as web:
        assert web.get("/tea?rublonToken=SECRET-TOKEN").status_code == 418
        assert web.get("/broken").status_code == 500
    lines = [record.getMessage() for record in caplog.records if record.name == "mfa_gate.access"]
    assert len(lines) == 2
    assert lines[0].startswith("GET /tea 418 ") and lines[0].endswith("ms")
    assert lines[1].startswith("GET /broken 500 ")
    assert all("SECRET-TOKEN" not in line and "rublonToken" not in line for line in lines)
