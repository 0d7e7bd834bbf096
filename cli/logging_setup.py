"""Logging for every process: plain lines, or one JSON object per line (MFA_GATE_LOG_JSON=true)."""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

from config import Settings

PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s %(process)d"


def configure_logging(settings: Settings) -> None:
    """Send the root logger to stderr in the configured format and level."""
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_json:
        handler.setFormatter(JsonFormatter(JSON_FIELDS, rename_fields={"asctime": "time", "levelname": "level"}))
    else:
        handler.setFormatter(logging.Formatter(PLAIN_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    # httpx logs every request URL at INFO; Rublon URLs carry no secrets, but callbacks might.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("alembic").setLevel(logging.WARNING)
    if settings.redis_url is None:
        # kombu's filesystem transport has no host, and says so on every connection.
        logging.getLogger("kombu.connection").setLevel(logging.ERROR)
