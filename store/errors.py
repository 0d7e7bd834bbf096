"""Errors the store raises; each message says what the caller can do next."""


class StoreError(Exception):
    """Base class of every store error."""


class TransitionNotAllowed(StoreError):
    """A move the state table does not allow (a bug in the caller, never a race)."""


class IdempotencyConflict(StoreError):
    """The agent reused an idempotency key for a different payload."""


class ActionNotFound(StoreError):
    """No action has this id."""
