"""The embedded broker (no REDIS_URL) keeps every file it writes under MFA_GATE_BROKER_DIR."""

from __future__ import annotations

from pathlib import Path

import pytest
from celery import Celery

from tasks.celery_config import GATE_QUEUE, GATE_TASK, celery_settings
from tests.conftest import make_settings


def test_sending_a_task_writes_only_under_the_broker_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broker_dir, elsewhere = tmp_path / "broker", tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    app = Celery("embedded-broker-test")
    app.conf.update(celery_settings(make_settings(broker_dir=broker_dir)))

    app.send_task(GATE_TASK, args=["some-action"], queue=GATE_QUEUE)

    assert list(elsewhere.iterdir()) == []  # kombu's default would leave ./control here
    assert len(list((broker_dir / "queue").iterdir())) == 1
    assert (broker_dir / "control" / f"{GATE_QUEUE}.exchange").exists()
