"""``bench.noop``: the action mfa-gate runs in the benchmark, a handler that does nothing.

Deployed through ``MFA_GATE_ACTION_MODULES=bench.actions``, the extension point a real
deployment uses, so the gated path is mfa-gate's own and the work done by the handler
matches the plain Celery no-op task it is compared with. The benchmark's policy allows
it when ``params.gate`` is ``allow`` and asks for MFA when it is ``mfa``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tasks.registry import ExecutionContext, action

NOOP_ACTION = "bench.noop"


class NoopParams(BaseModel):
    """Params of ``bench.noop``: which policy rule applies, and a sequence number to tell runs apart."""

    model_config = ConfigDict(extra="forbid")

    gate: Literal["allow", "mfa"] = "mfa"
    n: int = Field(default=0, ge=0)


def _describe(params: NoopParams) -> list[str]:
    return [f"Benchmark no-op #{params.n}"]


@action(NOOP_ACTION, params=NoopParams, describe=_describe)
def noop(params: NoopParams, ctx: ExecutionContext) -> dict[str, Any]:
    """Do nothing; the benchmark measures the gate, not a handler."""
    return {}
