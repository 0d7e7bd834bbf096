"""Structured logs: one JSON object per line, carrying the action id and the tid."""

from __future__ import annotations

import json
import logging

import pytest

from cli.logging_setup import configure_logging, current_action_id, current_tid
from tests.conftest import make_settings


def test_json_lines_carry_action_id_and_tid(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(make_settings(log_json=True))
    token_a, token_b = current_action_id.set("act-1"), current_tid.set("tid-9")
    try:
        logging.getLogger("mfa_gate.test").info("released")
    finally:
        current_action_id.reset(token_a)
        current_tid.reset(token_b)
    line = capsys.readouterr().err.strip().splitlines()[-1]
    record = json.loads(line)
    assert record["message"] == "released" and record["level"] == "INFO"
    assert record["action_id"] == "act-1" and record["tid"] == "tid-9"
    configure_logging(make_settings(log_json=False))
