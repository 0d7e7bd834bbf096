"""Celery's settings for mfa-gate, chosen in one place, each with what it protects against.

Correctness rests on the store (compare-and-set claims, the outbox), not on the broker;
these settings make the broker lose and repeat as little as it can. What covers what:

- A message lost (Redis restarted without its AOF, a crash between pop and bookkeeping,
  a send that failed after the commit): the maintenance sweep re-sends every ``queued``
  or ``submitted`` action whose message is older than the grace period, with backoff.
- A message delivered twice (visibility timeout, ``task_reject_on_worker_lost``, a
  re-send): the ``queued -> executing`` compare-and-set lets one delivery run it.
- A worker killed mid-run: the action stays ``executing``; after its lease maintenance
  makes it ``ambiguous`` (or re-queues it, for idempotent handlers).

Timings nest so that no running task is ever handed to a second worker by the broker:
handler timeout (execute limit - 10 s) < execute soft limit (- 5 s) < execute hard limit
(MFA_GATE_EXECUTE_TIME_LIMIT) < executing lease (MFA_GATE_EXECUTE_LEASE_SECONDS) <
visibility timeout (MFA_GATE_VISIBILITY_TIMEOUT); gate and maintenance tasks stop within
SHORT_TASK_HARD_LIMIT, below the visibility timeout and the gate lease (tasks.gate).

Process layout: one worker per queue (``-Q gate``, ``-Q execute``, ``-Q maintenance``;
gate and maintenance may share one), so a backlog or a slow target on one queue never
starves another, and each can be scaled and restarted alone. Workers run under a
supervisor that restarts them (systemd, compose ``restart: unless-stopped``); SIGTERM
starts a warm shutdown with a soft phase that puts un-acked messages back at once.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from kombu import Exchange, Queue
from kombu.transport import redis as kombu_redis

from config import Settings

log = logging.getLogger(__name__)

GATE_QUEUE = "gate"
EXECUTE_QUEUE = "execute"
MAINTENANCE_QUEUE = "maintenance"

GATE_TASK = "mfa_gate.gate.request_approval"
EXECUTE_TASK = "mfa_gate.execute.run_action"
SWEEP_TASK = "mfa_gate.maintenance.sweep"

# Gate and maintenance tasks talk to Rublon and the store only: a short bound.
SHORT_TASK_SOFT_LIMIT = 40
SHORT_TASK_HARD_LIMIT = 50


class _GuardedQoS(kombu_redis.QoS):
    """kombu's Redis QoS, surviving a restore on a connection that is already torn down.

    When Redis goes away while a worker holds un-acked messages, kombu 5.7 closes the
    channel and tries to push those messages back through a connection whose client it
    has just dropped; the AttributeError ends the whole worker ("Unrecoverable error",
    found by the chaos suite on every Redis restart with work in flight). The messages
    are still in Redis's ``unacked`` hash, so the restore sweep brings them back after
    the visibility timeout, and the store's outbox re-sends anything lost anyway: giving
    up on the immediate restore is safe, and the worker reconnects instead of exiting.
    """

    def restore_unacked(self, client: Any = None) -> Any:
        try:
            return super().restore_unacked(client)
        except AttributeError as exc:
            log.warning(
                "could not restore %s un-acked message(s) on a closed connection (%s); they come back after "
                "the visibility timeout",
                len(self._delivered),
                exc,
            )
            self._delivered.clear()
            return None


class _GuardedChannel(kombu_redis.Channel):
    QoS = _GuardedQoS


class GuardedRedisTransport(kombu_redis.Transport):
    """The Redis transport with :class:`_GuardedQoS`; selected by ``broker_transport``."""

    Channel = _GuardedChannel


def broker_settings(settings: Settings) -> dict[str, Any]:
    """Broker URL and transport options: Redis when REDIS_URL is set, else kombu's filesystem."""
    if settings.redis_url:
        guarded: dict[str, Any] = {}
        if settings.redis_url.startswith("redis://"):
            # kombu's Redis transport, with a worker-killing bug on reconnect guarded (see above).
            # (rediss:// keeps kombu's own, which sets up TLS from the scheme.)
            guarded["broker_transport"] = f"{__name__}:GuardedRedisTransport"
        return {
            "broker_url": settings.redis_url,
            **guarded,
            "broker_transport_options": {
                # An un-acked message comes back after this long (kill -9 of a whole worker).
                # It must exceed the longest task, or a running task is delivered twice.
                "visibility_timeout": settings.visibility_timeout,
                # kombu 5.7: sweep for un-acked messages every second, not every ~100 s.
                "unacked_restore_interval": 1,
                "unacked_restore_throttle": 1,
                "socket_keepalive": True,
                "health_check_interval": 10,
            },
        }
    folder = Path(settings.broker_dir).resolve()
    for sub in ("queue", "processed", "control"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    return {
        "broker_url": "filesystem://",
        "broker_transport_options": {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            # Exchange bindings; kombu's default is ./control in whatever directory the process runs in.
            "control_folder": str(folder / "control"),
            "store_processed": False,
            "polling_interval": 0.05,
        },
        # The filesystem transport has no fanout exchange: no remote control, no events.
        "worker_enable_remote_control": False,
        "worker_send_task_events": False,
        "task_send_sent_event": False,
    }


def celery_settings(settings: Settings) -> dict[str, Any]:
    """Every Celery setting mfa-gate sets.

    Raises:
        ValueError: the visibility timeout does not exceed the gate/maintenance hard limit
            (a running gate task would be delivered a second time).
    """
    if settings.visibility_timeout <= SHORT_TASK_HARD_LIMIT:
        raise ValueError(
            f"MFA_GATE_VISIBILITY_TIMEOUT must exceed {SHORT_TASK_HARD_LIMIT} s, the hard time limit of the gate "
            f"and maintenance tasks (now {settings.visibility_timeout})"
        )
    config: dict[str, Any] = {
        # JSON only: a pickled message from a compromised host must not run code.
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        # The store records every outcome; no result backend to grow or to trust.
        "task_ignore_result": True,
        "result_backend": None,
        # Ack after the task body returns, and re-queue when the pool child dies (SIGKILL,
        # OOM): a message is lost only if the store says so, and the claim makes repeats no-ops.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # One message reserved per process: a dying worker strands at most the one it runs.
        "worker_prefetch_multiplier": 1,
        # On broker connection loss, stop running late-ack tasks: they could not be acked and
        # would run again elsewhere. (The default flips to True in Celery 6.)
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        # Warm phase before a cold shutdown so un-acked messages are re-queued at once.
        "worker_soft_shutdown_timeout": 10.0,
        "worker_enable_soft_shutdown_on_idle": True,
        # Reconnect to the broker for ever (a Redis restart must not end a worker).
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        # A send that fails after a few quick retries is left to the maintenance sweep
        # (the store still says queued/submitted): a web request never hangs on a dead Redis.
        "task_publish_retry": True,
        "task_publish_retry_policy": {
            "max_retries": 5,
            "interval_start": 0.1,
            "interval_step": 0.5,
            "interval_max": 2.0,
        },
        # Flower: workers send task events, producers send task-sent.
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "task_track_started": True,
        # Time limits nest: handler timeout < hard limit < executing lease < visibility timeout.
        "task_soft_time_limit": SHORT_TASK_SOFT_LIMIT,
        "task_time_limit": SHORT_TASK_HARD_LIMIT,
        "task_default_queue": GATE_QUEUE,
        # One direct exchange per queue, keyed by its name: a message for one queue reaches only it.
        "task_queues": [
            Queue(name, Exchange(name, type="direct"), routing_key=name)
            for name in (GATE_QUEUE, EXECUTE_QUEUE, MAINTENANCE_QUEUE)
        ],
        "task_default_exchange": GATE_QUEUE,
        "task_default_routing_key": GATE_QUEUE,
        "task_routes": {
            GATE_TASK: {"queue": GATE_QUEUE},
            EXECUTE_TASK: {"queue": EXECUTE_QUEUE},
            SWEEP_TASK: {"queue": MAINTENANCE_QUEUE},
        },
        "task_annotations": {
            EXECUTE_TASK: {
                "time_limit": settings.execute_time_limit,
                "soft_time_limit": max(1, settings.execute_time_limit - 5),
            }
        },
        # The sweep every few seconds; a sweep message older than two intervals is dropped
        # (expires), so a beat that ran on while workers were down does not queue a backlog.
        "beat_schedule": {
            "maintenance-sweep": {
                "task": SWEEP_TASK,
                "schedule": settings.maintenance_interval,
                "options": {"queue": MAINTENANCE_QUEUE, "expires": settings.maintenance_interval * 2},
            }
        },
        "worker_hijack_root_logger": False,
        "enable_utc": True,
        "timezone": "UTC",
    }
    config.update(broker_settings(settings))
    return config
