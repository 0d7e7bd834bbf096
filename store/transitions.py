"""The state table of an action, written once.

Every component asks the store to move an action; the store checks the move against
this table and performs it as a compare-and-set, so two workers or listeners never
both win.
"""

from __future__ import annotations

from store.models import ActionStatus as S

# Where an action may be created: mfa -> submitted, allow -> queued (with its release),
# deny -> denied, a suspended agent or a limit -> blocked.
INITIAL: frozenset[S] = frozenset({S.SUBMITTED, S.QUEUED, S.DENIED, S.BLOCKED})

TRANSITIONS: dict[S, frozenset[S]] = {
    # submitted -> queued only when the matching rule fails open (on_unavailable/on_bypass = "allow").
    S.SUBMITTED: frozenset({S.AWAITING_APPROVAL, S.QUEUED, S.BLOCKED, S.CANCELLED}),
    S.AWAITING_APPROVAL: frozenset({S.QUEUED, S.REJECTED, S.EXPIRED, S.BLOCKED, S.CANCELLED}),
    S.QUEUED: frozenset({S.EXECUTING}),
    # executing -> queued only for handlers registered as idempotent, after their lease ran out.
    S.EXECUTING: frozenset({S.SUCCEEDED, S.FAILED, S.AMBIGUOUS, S.QUEUED}),
    S.AMBIGUOUS: frozenset({S.SUCCEEDED, S.FAILED}),
    S.SUCCEEDED: frozenset(),
    S.FAILED: frozenset(),
    S.DENIED: frozenset(),
    S.REJECTED: frozenset(),
    S.EXPIRED: frozenset(),
    S.CANCELLED: frozenset(),
    S.BLOCKED: frozenset(),
}

FINAL: frozenset[S] = frozenset(status for status, moves in TRANSITIONS.items() if not moves)
PENDING: frozenset[S] = frozenset({S.SUBMITTED, S.AWAITING_APPROVAL})
REFUSED: frozenset[S] = frozenset({S.DENIED, S.REJECTED, S.EXPIRED, S.CANCELLED, S.BLOCKED})


def allowed(current: S, new: S) -> bool:
    """True when the table lets an action move from ``current`` to ``new``."""
    return new in TRANSITIONS[current]
