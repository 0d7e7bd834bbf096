"""The plain-Celery baseline: a no-op task and a two-task chain, no gate.

Its settings are mfa-gate's own (``tasks.celery_config.celery_settings``: JSON, late
acks, prefetch 1, task events, the execute task's time limits) with one queue of its own,
``bench``, on the same Redis; its worker is started with the same command line as
mfa-gate's execute worker (prefork, concurrency 2). Importing ``tasks.celery_config``
also builds mfa-gate's app, whose worker signals run once at start and never per task.

Each task takes a token and records a ``time.time()`` wall-clock stamp in Redis:

- ``bench:started`` (hash token -> stamp): the no-op task's first line ran;
- ``bench:chain_done`` (hash token -> stamp): the chain's second task ran.

Worker: ``celery -A bench.baseline worker -Q bench`` (see ``bench.deployment``).
"""

from __future__ import annotations

import time
from functools import lru_cache
from typing import Any

import redis
from celery import Celery, chain
from kombu import Exchange, Queue

from config import Settings, get_settings
from tasks.celery_config import EXECUTE_TASK, celery_settings

BASELINE_QUEUE = "bench"
NOOP_TASK = "bench.baseline.noop"
CHAIN_FIRST_TASK = "bench.baseline.chain_first"
CHAIN_SECOND_TASK = "bench.baseline.chain_second"
STARTED_KEY = "bench:started"
CHAIN_DONE_KEY = "bench:chain_done"
TASKS = (NOOP_TASK, CHAIN_FIRST_TASK, CHAIN_SECOND_TASK)


def baseline_settings(settings: Settings) -> dict[str, Any]:
    """mfa-gate's Celery settings, routed to the ``bench`` queue, each task limited like the execute task."""
    config = celery_settings(settings)
    execute_limits = config["task_annotations"][EXECUTE_TASK]
    config.update(
        {
            "task_queues": [Queue(BASELINE_QUEUE, Exchange(BASELINE_QUEUE, type="direct"), routing_key=BASELINE_QUEUE)],
            "task_default_queue": BASELINE_QUEUE,
            "task_default_exchange": BASELINE_QUEUE,
            "task_default_routing_key": BASELINE_QUEUE,
            "task_routes": {name: {"queue": BASELINE_QUEUE} for name in TASKS},
            "task_annotations": {name: dict(execute_limits) for name in TASKS},
            "beat_schedule": {},
        }
    )
    return config


app = Celery("bench_baseline")
app.conf.update(baseline_settings(get_settings()))


@lru_cache(maxsize=1)
def _redis() -> redis.Redis:
    # One connection per pool process, opened on first use (after the fork).
    url = get_settings().redis_url
    if url is None:
        raise RuntimeError("the baseline needs REDIS_URL")
    return redis.Redis.from_url(url)


@app.task(name=NOOP_TASK, ignore_result=True)
def noop(token: str) -> None:
    """The plain no-op: stamp the moment it starts."""
    started = time.time()
    _redis().hset(STARTED_KEY, token, repr(started))


@app.task(name=CHAIN_FIRST_TASK, ignore_result=True)
def chain_first(token: str) -> None:
    """The chain's first task does nothing."""


@app.task(name=CHAIN_SECOND_TASK, ignore_result=True)
def chain_second(token: str) -> None:
    """The chain's second task stamps the moment the chain is done."""
    _redis().hset(CHAIN_DONE_KEY, token, repr(time.time()))


def send_noop(token: str) -> None:
    """Queue one no-op the way mfa-gate queues its execute task (``send_task`` by name)."""
    app.send_task(NOOP_TASK, args=[token], queue=BASELINE_QUEUE)


def send_chain(token: str) -> None:
    """Queue one two-task chain."""
    chain(chain_first.si(token), chain_second.si(token)).apply_async()


def read_stamps(client: redis.Redis, key: str) -> dict[str, float]:
    """The stamps recorded under ``key`` (token -> wall-clock seconds)."""
    return {_text(token): float(value) for token, value in client.hgetall(key).items()}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
