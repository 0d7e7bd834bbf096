"""Logging for every process: plain lines, or one JSON object per line (MFA_GATE_LOG_JSON=true)."""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar

from pythonjsonlogger.json import JsonFormatter

from config import Settings

PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# The action and Rublon transaction a line is about; set where work on one action starts
# (Celery's task_prerun, the listener's handlers) and added to every record by ActionContext.
current_action_id: ContextVar[str | None] = ContextVar("current_action_id", default=None)
current_tid: ContextVar[str | None] = ContextVar("current_tid", default=None)


class ActionContext(logging.Filter):
    """Adds ``action_id`` and ``tid`` to each record (JSON logs show them as fields)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "action_id", None) is None:
            record.action_id = current_action_id.get()
        if getattr(record, "tid", None) is None:
            record.tid = current_tid.get()
        return True


JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s %(process)d %(action_id)s %(tid)s"


def configure_logging(settings: Settings) -> None:
    """Send the root logger to stderr in the configured format and level."""
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_json:
        handler.setFormatter(JsonFormatter(JSON_FIELDS, rename_fields={"asctime": "time", "levelname": "level"}))
        handler.addFilter(ActionContext())
    else:
        handler.setFormatter(logging.Formatter(PLAIN_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    # httpx logs every request URL at INFO; Rublon URLs carry no secrets, but callbacks might.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("alembic").setLevel(logging.WARNING)
    if settings.redis_url is None:
        # kombu's filesystem transport has no host, and says so on every connection.
        logging.getLogger("kombu.connection").setLevel(logging.ERROR)
