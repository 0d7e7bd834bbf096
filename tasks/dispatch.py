"""Sending messages after the store commits (the outbox's send half).

A send that fails is logged, not raised: the action is already safe in the store, and
the maintenance sweep re-sends any ``submitted`` or ``queued`` action whose message
was lost. Redis keys used: the Celery queues ``gate``, ``execute``, ``maintenance`` (and
kombu's ``unacked``/``unacked_index``), and the pub/sub channel ``mfa_gate:awaiting``.
"""

from __future__ import annotations

import json
import logging
from functools import lru_cache

import redis

from config import get_settings
from tasks.celery_app import app
from tasks.celery_config import EXECUTE_QUEUE, EXECUTE_TASK, GATE_QUEUE, GATE_TASK

log = logging.getLogger(__name__)

AWAITING_CHANNEL = "mfa_gate:awaiting"


def send_execute(action_id: str) -> bool:
    """Queue the execute task of a released action; False when the broker refused."""
    return _send(EXECUTE_TASK, EXECUTE_QUEUE, action_id)


def send_gate(action_id: str) -> bool:
    """Queue the gate task of a submitted action; False when the broker refused."""
    return _send(GATE_TASK, GATE_QUEUE, action_id)


def _send(task: str, queue: str, action_id: str) -> bool:
    try:
        app.send_task(task, args=[action_id], queue=queue)
    except Exception as exc:  # any broker failure: maintenance re-sends from the store
        log.warning(
            "could not queue %s for action %s (%s); maintenance will re-send it", task, action_id, type(exc).__name__
        )
        return False
    return True


@lru_cache(maxsize=1)
def _redis() -> redis.Redis | None:
    url = get_settings().redis_url
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2) if url else None


def notify_awaiting(action_id: str, tid: str) -> None:
    """Tell listeners at once that an action awaits approval on ``tid`` (they also poll the store).

    The notice is a hint: a listener subscribes to the tid, and an answer on it releases
    only the action that holds that tid in the store.
    """
    client = _redis()
    if client is None:
        return
    try:
        client.publish(AWAITING_CHANNEL, json.dumps({"id": action_id, "tid": tid}))
    except redis.RedisError as exc:
        log.warning(
            "could not notify listeners of action %s (%s); they will find it by polling", action_id, type(exc).__name__
        )
