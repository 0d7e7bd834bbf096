"""The store: the source of truth for every action, its release and the audit chain.

Knows nothing of Celery, the web process or Rublon.
"""

from store.errors import IdempotencyConflict, StoreError, TransitionNotAllowed
from store.models import Action, ActionStatus, AuditEvent, Release
from store.repository import Store

__all__ = [
    "Action",
    "ActionStatus",
    "AuditEvent",
    "IdempotencyConflict",
    "Release",
    "Store",
    "StoreError",
    "TransitionNotAllowed",
]
