"""The Celery application: ``celery -A tasks worker -Q execute``."""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import setup_logging, task_postrun, task_prerun, worker_init, worker_process_init

from config import get_settings
from tasks.celery_config import celery_settings

app = Celery("mfa_gate", include=["tasks.gate", "tasks.execute", "tasks.maintenance"])
app.conf.update(celery_settings(get_settings()))


@worker_process_init.connect
def _fresh_connections_after_fork(**_: Any) -> None:
    # A pool child must not share the parent's database connections.
    from tasks.runtime import get_runtime

    get_runtime().store.dispose()


@worker_init.connect
def _check_before_serving(**_: Any) -> None:
    # A broken policy or directory file stops the worker at start, naming the file.
    from tasks.runtime import get_runtime

    get_runtime().check()


@setup_logging.connect
def _our_logging(**_: Any) -> None:
    # The workers log like every other process (JSON lines with MFA_GATE_LOG_JSON=true).
    from cli.logging_setup import configure_logging

    configure_logging(get_settings())


@task_prerun.connect
def _log_context(args: tuple[Any, ...] | None = None, **_: Any) -> None:
    from cli.logging_setup import current_action_id

    current_action_id.set(str(args[0]) if args else None)


@task_postrun.connect
def _clear_log_context(**_: Any) -> None:
    from cli.logging_setup import current_action_id, current_tid

    current_action_id.set(None)
    current_tid.set(None)
