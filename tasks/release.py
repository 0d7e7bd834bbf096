"""Releasing an action: the store move, then the execute message (the outbox)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from store import Action, ActionStatus, Release
from tasks.dispatch import send_execute
from tasks.runtime import Runtime


def release_and_dispatch(
    runtime: Runtime,
    action_id: str,
    *,
    expected: ActionStatus | Sequence[ActionStatus],
    release: Release,
    actor: str,
    reason: str,
    held_by: str | None = None,
    data: dict[str, Any] | None = None,
) -> Action | None:
    """Release in one store transaction, then send the execute message after the commit.

    Returns the queued action, or None when another process moved it first. A lost
    message is re-sent by maintenance, since the action stays ``queued`` in the store.
    """
    released = runtime.store.release(
        action_id, expected=expected, release=release, actor=actor, reason=reason, held_by=held_by, data=data
    )
    if released is not None:
        send_execute(action_id)
    return released
