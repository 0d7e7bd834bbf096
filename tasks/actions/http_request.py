"""``http.request``: the gated REST call, performed with httpx.

The request always carries ``Idempotency-Key: <action id>`` so a target that honours it
can drop a duplicate. Headers that carry credentials are never taken from the agent:
``secret_headers`` names a server-held secret per header, injected by the worker.
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from policies import HttpRules
from tasks.registry import ExecutionContext, TransientError, action

MAX_RESPONSE_CHARS = 2_000
FORBIDDEN_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization", "host", "idempotency-key"})


class HttpRequestParams(BaseModel):
    """Params of ``http.request``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    url: str = Field(max_length=2048)
    headers: dict[str, str] = Field(default_factory=dict)
    json_body: Any = Field(default=None, alias="json")
    body: str | None = Field(default=None, max_length=65_536)
    timeout: float = Field(default=10.0, gt=0, le=30)
    secret_headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _absolute_http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an absolute http:// or https:// URL with a host")
        if parts.username or parts.password:
            raise ValueError("must not carry credentials; name a server-held secret in secret_headers instead")
        return value

    @field_validator("headers")
    @classmethod
    def _no_credential_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if name.lower() in FORBIDDEN_HEADERS:
                raise ValueError(f"header {name!r} may not be set by the agent; use secret_headers for credentials")
        return value

    @model_validator(mode="after")
    def _one_body(self) -> HttpRequestParams:
        if self.json_body is not None and self.body is not None:
            raise ValueError("give either json or body, not both")
        return self


def target_refusal(url: str, rules: HttpRules) -> str | None:
    """None when ``url`` may be called under the policy's [http] rules, else the reason it may not."""
    parts = urlsplit(url)
    if not rules.scheme_allowed(parts.scheme):
        return f"scheme {parts.scheme!r} is not allowed by the policy's [http] allowed_schemes"
    if not rules.host_allowed(parts.hostname or ""):
        return f"host {parts.hostname!r} is not in the policy's [http] allowed_hosts"
    return None


def describe(params: HttpRequestParams) -> list[str]:
    """The lines shown on the phone: method and target."""
    parts = urlsplit(params.url)
    lines = [f"{params.method} {parts.scheme}://{parts.netloc}{parts.path}"]
    if isinstance(params.json_body, dict):
        for key in ("amount", "currency", "recipient", "to", "id"):
            if key in params.json_body:
                lines.append(f"{key}: {str(params.json_body[key])[:64]}")
    return lines


def amount(params: HttpRequestParams) -> float | None:
    """The ``amount`` of a JSON body, when it is a number (payments through a REST API)."""
    if isinstance(params.json_body, dict):
        value = params.json_body.get("amount")
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


@action("http.request", params=HttpRequestParams, idempotent=False, describe=describe, amount=amount)
def http_request(params: HttpRequestParams, ctx: ExecutionContext) -> dict[str, Any]:
    """Perform the request; a 5xx or a connection failure raises TransientError."""
    refusal = target_refusal(params.url, ctx.http)
    if refusal is not None:
        raise PermissionError(refusal)
    headers = dict(params.headers)
    for header, secret_name in params.secret_headers.items():
        if secret_name not in ctx.secrets:
            raise LookupError(f"secret {secret_name!r} is not configured on the server")
        headers[header] = ctx.secrets[secret_name]
    headers["Idempotency-Key"] = ctx.idempotency_key
    try:
        response = httpx.request(
            params.method,
            params.url,
            headers=headers,
            json=params.json_body,
            content=params.body,
            timeout=min(params.timeout, ctx.timeout),
        )
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        raise TransientError(f"could not connect to {urlsplit(params.url).netloc}: {type(exc).__name__}") from exc
    if response.status_code >= 500:
        raise TransientError(f"{params.method} {params.url} answered HTTP {response.status_code}")
    if response.status_code >= 400:
        raise RuntimeError(f"{params.method} {params.url} answered HTTP {response.status_code}")
    return {"status_code": response.status_code, "body": response.text[:MAX_RESPONSE_CHARS]}
