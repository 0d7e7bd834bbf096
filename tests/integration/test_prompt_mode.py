"""Prompt mode end to end: the gate opens a prompt transaction, the person answers on the
simulator's page, the browser comes back to the web process's callback."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from cli.stack import Stack, running_stack
from cli.target import CountingTarget
from store import Action, Store
from tests.fixtures import write_files
from tests.integration.conftest import post_action, wait_status, wait_tid

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One deployment on SQLite: the callback does not depend on the database."""
    workdir = tmp_path_factory.mktemp("stack-prompt")
    policy, directory = write_files(workdir / "config")
    with running_stack(
        workdir / "run", database_url=f"sqlite:///{workdir / 'store.db'}", policy_file=policy, directory_file=directory
    ) as running:
        yield running


def held_in_prompt_mode(api: httpx.Client, store: Store, target: CountingTarget, path: str = "/prompt-pay") -> Action:
    """A PUT only the prompt-mode rule matches, waiting for alice on the prompt page."""
    response = api.post("/v1/actions", json=post_action(target, path, method="PUT"))
    assert response.status_code == 201, response.text
    action = wait_tid(store, response.json()["id"])
    assert action.status == "awaiting_approval" and action.mode == "prompt" and action.web_uri
    return action


def press(action: Action, button: str) -> httpx.URL:
    """Open the action's webURI and press a button; where the browser is sent next (not followed)."""
    assert action.web_uri is not None
    with httpx.Client(timeout=10) as browser:
        page = browser.get(action.web_uri)
        assert page.status_code == 200 and "alice" in page.text
        form = f"/{button}"
        path = next(part.split('"', 1)[0] for part in page.text.split('action="')[1:] if form in part.split('"', 1)[0])
        answer = browser.post(httpx.URL(action.web_uri).join(path), follow_redirects=False)
    assert answer.status_code == 303
    return httpx.URL(answer.headers["location"])


def test_approve_on_the_page_releases_the_action_once(
    stack: Stack, api: httpx.Client, store: Store, target: CountingTarget
) -> None:
    action = held_in_prompt_mode(api, store, target)
    back = press(action, "approve")
    assert str(back).startswith(f"{stack.web_url}/rublon/callback/{action.id}")
    token = back.params["rublonToken"]
    page = httpx.get(back)
    assert page.status_code == 200 and "Approved" in page.text and token not in page.text
    assert page.headers["cache-control"] == "no-store"
    wait_status(store, action.id, "succeeded")
    release = store.release_of(action.id)
    assert release is not None and release.kind == "approval" and release.approver == "alice"
    assert release.method == "prompt"

    replay = httpx.get(back)  # the same token again: nothing more happens
    assert replay.status_code == 409 and "already" in replay.text
    time.sleep(1.0)
    assert target.count(action.id) == 1
    assert "confirmation.ignored" in [event.event for event in store.events(action.id)]
    assert token not in stack.children["web"].log_text()


def test_deny_on_the_page_rejects_the_action(
    stack: Stack, api: httpx.Client, store: Store, target: CountingTarget
) -> None:
    action = held_in_prompt_mode(api, store, target)
    back = press(action, "deny")
    assert back.params["rublonState"] == "cancel" and "rublonToken" not in back.params
    page = httpx.get(back)
    assert page.status_code == 200 and "Declined" in page.text
    assert "declined" in wait_status(store, action.id, "rejected").reason
    time.sleep(0.5)
    assert target.count(action.id) == 0 and store.release_of(action.id) is None


@pytest.mark.parametrize(("state", "status"), [("cancel", "rejected"), ("error", "blocked"), ("other", "rejected")])
def test_a_cancel_or_error_state_releases_nothing(
    stack: Stack, api: httpx.Client, store: Store, target: CountingTarget, state: str, status: str
) -> None:
    action = held_in_prompt_mode(api, store, target)
    page = httpx.get(f"{stack.web_url}/rublon/callback/{action.id}", params={"rublonState": state})
    assert page.status_code == 200
    wait_status(store, action.id, status)
    time.sleep(0.5)
    assert target.count(action.id) == 0 and store.release_of(action.id) is None


def test_a_token_for_another_action_releases_neither(
    stack: Stack, api: httpx.Client, store: Store, target: CountingTarget
) -> None:
    first, second = held_in_prompt_mode(api, store, target), held_in_prompt_mode(api, store, target)
    token = press(first, "approve").params["rublonToken"]
    crossed = httpx.get(
        f"{stack.web_url}/rublon/callback/{second.id}", params={"rublonState": "ok", "rublonToken": token}
    )
    assert crossed.status_code == 409 and token not in crossed.text
    assert "does not match" in wait_status(store, second.id, "blocked").reason
    # The token was spent on the wrong action: its own callback can no longer verify it either.
    own = httpx.get(f"{stack.web_url}/rublon/callback/{first.id}", params={"rublonState": "ok", "rublonToken": token})
    assert own.status_code == 409
    assert "not exchangeable" in wait_status(store, first.id, "blocked").reason
    time.sleep(0.5)
    assert target.count(first.id) == 0 and target.count(second.id) == 0
    assert token not in stack.children["web"].log_text()


def test_a_forged_token_blocks_and_releases_nothing(
    stack: Stack, api: httpx.Client, store: Store, target: CountingTarget
) -> None:
    action = held_in_prompt_mode(api, store, target)
    forged = httpx.get(
        f"{stack.web_url}/rublon/callback/{action.id}", params={"rublonState": "ok", "rublonToken": "f" * 60}
    )
    assert forged.status_code == 409
    wait_status(store, action.id, "blocked")
    assert target.count(action.id) == 0


def test_callbacks_that_name_no_prompt_action_change_nothing(
    stack: Stack, api: httpx.Client, store: Store, target: CountingTarget
) -> None:
    promptless = wait_tid(store, api.post("/v1/actions", json=post_action(target)).json()["id"])
    assert promptless.mode == "promptless"
    answers = {
        f"{stack.web_url}/rublon/callback": 409,
        f"{stack.web_url}/rublon/callback/no-such-action": 404,
        f"{stack.web_url}/rublon/callback/{promptless.id}": 409,
    }
    for url, status_code in answers.items():
        page = httpx.get(url, params={"rublonState": "ok", "rublonToken": "t" * 60})
        assert page.status_code == status_code and "t" * 60 not in page.text
    assert store.require(promptless.id).status == "awaiting_approval"
    reasons = [event.data["reason"] for event in store.events() if event.event == "callback.refused"]
    assert "the token could not be exchanged (UnknownAccessToken)" in reasons
    assert "the action is not in prompt mode" in reasons
    bare = httpx.get(f"{stack.web_url}/rublon/callback", params={"rublonState": "cancel"})
    assert bare.status_code == 404
    assert "the callback names no action" in [e.data["reason"] for e in store.events() if e.event == "callback.refused"]
    without_token = held_in_prompt_mode(api, store, target)
    page = httpx.get(f"{stack.web_url}/rublon/callback/{without_token.id}", params={"rublonState": "ok"})
    assert page.status_code == 400
    assert store.require(without_token.id).status == "awaiting_approval"


def test_a_callback_without_the_action_in_its_path_releases_through_the_echoed_action_id(
    stack: Stack, api: httpx.Client, store: Store, target: CountingTarget
) -> None:
    action = held_in_prompt_mode(api, store, target, "/prompt-bare")
    token = press(action, "approve").params["rublonToken"]
    page = httpx.get(f"{stack.web_url}/rublon/callback", params={"rublonState": "ok", "rublonToken": token})
    assert page.status_code == 200 and token not in page.text
    wait_status(store, action.id, "succeeded")
    replay = httpx.get(f"{stack.web_url}/rublon/callback", params={"rublonState": "ok", "rublonToken": token})
    assert replay.status_code == 409
    assert target.count(action.id) == 1
