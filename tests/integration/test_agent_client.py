"""The agents' Python client against the real web process."""

from __future__ import annotations

import pytest

from agent_client import GateClient, GateError
from cli.stack import Stack
from cli.target import CountingTarget
from simulator.control import SimulatorControl
from store import Store
from tests.fixtures import CRED_A
from tests.integration.conftest import wait_tid

pytestmark = pytest.mark.integration


def test_submit_wait_and_status_through_the_client(stack: Stack, store: Store, target: CountingTarget,
                                                   control: SimulatorControl) -> None:
    with GateClient(stack.web_url, credential=CRED_A) as gate:
        handle = gate.submit("http.request", user="alice",
                             params={"method": "POST", "url": f"{target.url}/client", "json": {"amount": 3}})
        assert handle.submitted["status"] == "submitted"
        action = wait_tid(store, handle.id)
        assert handle.wait(timeout=0.2)["status"] == "awaiting_approval"
        control.approve(action.tid)  # type: ignore[arg-type]
        final = handle.wait(timeout=30)
        assert final["status"] == "succeeded" and handle.status()["status"] == "succeeded"
    assert target.count(handle.id) == 1


def test_client_cancel_and_errors(stack: Stack, store: Store, target: CountingTarget) -> None:
    with GateClient(stack.web_url, credential=CRED_A) as gate:
        handle = gate.submit("http.request", user="alice",
                             params={"method": "POST", "url": f"{target.url}/client-cancel", "json": {}})
        wait_tid(store, handle.id)
        assert handle.cancel()["status"] == "cancelled"
        with pytest.raises(GateError) as refused:
            handle.cancel()
        assert refused.value.status_code == 409
        with pytest.raises(GateError) as bad:
            gate.submit("http.request", user="alice", params={"method": "POST"})
        assert bad.value.status_code == 422 and bad.value.field == "params.url"
    with GateClient(stack.web_url, credential="wrong") as intruder, pytest.raises(GateError) as denied:
        intruder.submit("http.request", user="alice", params={"method": "GET", "url": f"{target.url}/x"})
    assert denied.value.status_code == 401
