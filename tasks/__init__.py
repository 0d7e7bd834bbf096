"""Celery app and tasks of mfa-gate: gate, execute and maintenance, one queue each."""

from tasks.celery_app import app

__all__ = ["app"]
