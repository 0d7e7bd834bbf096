"""The action registry: which action names exist, their param schema, idempotency and display.

A deployment registers its own actions in modules listed in ``MFA_GATE_ACTION_MODULES``::

    from pydantic import BaseModel

from policies import HttpRules
    from tasks.registry import ExecutionContext, action

    class DeleteParams(BaseModel):
        table: str
        record_id: int

    @action("records.delete", params=DeleteParams, idempotent=True,
            describe=lambda p: [f"Delete {p.table} #{p.record_id}"])
    def delete_record(params: DeleteParams, ctx: ExecutionContext) -> dict:
        ...
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel

from policies import HttpRules

P = TypeVar("P", bound=BaseModel)


@dataclass(frozen=True)
class ExecutionContext:
    """What a handler learns about the run besides its params."""

    action_id: str
    user: str
    agent: str
    attempt: int
    timeout: float
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)
    http: HttpRules = field(default_factory=HttpRules)

    @property
    def idempotency_key(self) -> str:
        """The key a handler sends downstream; the action id, stable across re-runs."""
        return self.action_id


Handler = Callable[[Any, ExecutionContext], dict[str, Any] | None]
Describe = Callable[[Any], list[str]]
Amount = Callable[[Any], float | None]


class TransientError(Exception):
    """A failure worth retrying for an idempotent handler (connection refused, 5xx)."""


@dataclass(frozen=True)
class ActionSpec:
    """A registered action: handler, param schema, idempotency and the lines shown to the person."""

    name: str
    handler: Handler
    params_model: type[BaseModel]
    idempotent: bool
    describe: Describe
    max_attempts: int
    amount: Amount

    def amount_of(self, params: dict[str, Any]) -> float | None:
        """The money this action moves, for cumulative limits; None when it moves none or params are bad."""
        try:
            return self.amount(self.params_model.model_validate(params))
        except ValueError:
            return None

    def summary(self, params: BaseModel) -> list[str]:
        """The lines the person sees for these params (server-built, never agent text)."""
        return self.describe(params)


_REGISTRY: dict[str, ActionSpec] = {}


def _default_amount(params: BaseModel) -> float | None:
    value = getattr(params, "amount", None)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _default_describe(params: BaseModel) -> list[str]:
    return [f"{key}: {value}" for key, value in params.model_dump().items()][:6]


def action(
    name: str,
    *,
    params: type[P],
    idempotent: bool = False,
    describe: Callable[[P], list[str]] | None = None,
    max_attempts: int = 3,
    amount: Callable[[P], float | None] | None = None,
) -> Callable[[Callable[[P, ExecutionContext], dict[str, Any] | None]], Callable[[P, ExecutionContext], Any]]:
    """Register the handler of action ``name``.

    Args:
        params: the pydantic model the params must satisfy at submission and execution.
        idempotent: True when running the handler twice with the same idempotency key is
            safe; such actions are re-run after a worker dies, others become ``ambiguous``.
        describe: builds the lines shown on the person's phone from the typed params.
        max_attempts: for idempotent handlers, how many times a TransientError is retried.
        amount: the money the action moves (for the policy's cumulative limits); by default the
            ``amount`` param when it is a number.

    Raises:
        ValueError: the name is registered already.
    """

    def register(handler: Callable[[P, ExecutionContext], dict[str, Any] | None]) -> Callable[..., Any]:
        if name in _REGISTRY:
            raise ValueError(f"action {name!r} is registered twice")
        _REGISTRY[name] = ActionSpec(
            name=name,
            handler=handler,
            params_model=params,
            idempotent=idempotent,
            describe=describe or _default_describe,
            max_attempts=max_attempts if idempotent else 1,
            amount=amount or _default_amount,
        )
        return handler

    return register


def get(name: str) -> ActionSpec | None:
    """The spec registered for ``name``, or None."""
    return _REGISTRY.get(name)


def names() -> list[str]:
    """Every registered action name, sorted."""
    return sorted(_REGISTRY)


def load_modules(modules: list[str]) -> None:
    """Import the built-in actions and the deployment's own action modules.

    Raises:
        ImportError: a configured module cannot be imported (named in the message).
    """
    importlib.import_module("tasks.actions.http_request")
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ImportError(f"MFA_GATE_ACTION_MODULES names {module!r}, which cannot be imported: {exc}") from exc
