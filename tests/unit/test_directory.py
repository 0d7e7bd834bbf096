"""The directory: agent authentication by credential hash, whom an agent may act for, and writing it back."""

import hashlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies import (
    DEFAULT_DIRECTORY_PATH,
    Agent,
    Directory,
    DirectoryError,
    User,
    hash_credential,
    load_directory,
    parse_directory,
    render_directory,
)
from policies.directory import DEVELOPMENT_AGENT_CREDENTIAL, new_credential

BILLING_CREDENTIAL = "billing-secret-credential"
REPORTS_CREDENTIAL = "reports-secret-credential"

DIRECTORY = f"""
[users.alice]
email = "alice@example.com"
groups = ["finance"]

[users.bob]
email = "bob@example.com"

[agents.billing-bot]
credential_sha256 = "{hash_credential(BILLING_CREDENTIAL)}"
users = ["alice"]

[agents.reports-bot]
credential_sha256 = "{hash_credential(REPORTS_CREDENTIAL).upper()}"
users = ["alice", "bob"]
suspended = true
"""


def directory() -> Directory:
    return parse_directory(DIRECTORY, source="directory.toml")


def error_for(text: str) -> str:
    with pytest.raises(DirectoryError) as error:
        parse_directory(text, source="directory.toml")
    return str(error.value)


def test_hash_credential_is_sha256_hex() -> None:
    assert hash_credential("x") == hashlib.sha256(b"x").hexdigest()


def test_right_credential_authenticates_its_agent() -> None:
    agent = directory().authenticate(BILLING_CREDENTIAL)
    assert agent is not None and agent.name == "billing-bot"


def test_uppercase_hash_in_the_file_still_authenticates() -> None:
    agent = directory().authenticate(REPORTS_CREDENTIAL)
    assert agent is not None and agent.name == "reports-bot"


@pytest.mark.parametrize(
    "credential",
    ["", "wrong", BILLING_CREDENTIAL + " ", BILLING_CREDENTIAL.upper(), hash_credential(BILLING_CREDENTIAL), "\ud800"],
)
def test_wrong_credential_authenticates_nobody(credential: str) -> None:
    assert directory().authenticate(credential) is None


def test_agent_repr_does_not_show_the_credential_hash() -> None:
    agent = directory().agent("billing-bot")
    assert agent is not None
    assert agent.credential_sha256 not in repr(agent)


def test_may_act_for_only_listed_users_of_active_agents() -> None:
    d = directory()
    assert d.may_act_for("billing-bot", "alice")
    assert not d.may_act_for("billing-bot", "bob")  # not listed
    assert not d.may_act_for("reports-bot", "alice")  # suspended
    assert not d.may_act_for("ghost-bot", "alice")  # unknown agent
    assert not d.may_act_for("billing-bot", "mallory")  # unknown user


def test_suspended_agent_is_still_identified() -> None:
    agent = directory().authenticate(REPORTS_CREDENTIAL)
    assert agent is not None and agent.suspended


def test_user_lookup() -> None:
    d = directory()
    assert d.user("alice") == User(name="alice", email="alice@example.com", groups=("finance",))
    assert d.user("bob") == User(name="bob", email="bob@example.com", groups=())
    assert d.user("mallory") is None


def test_agent_naming_an_unknown_user_is_an_error_naming_file_entry_and_field() -> None:
    message = error_for(DIRECTORY.replace('users = ["alice"]', 'users = ["alice", "zed"]'))
    assert message.startswith("directory.toml: agent 'billing-bot' (agents.billing-bot).users[1]: unknown user 'zed'")
    assert "[users.zed]" in message


def test_bad_hash_is_an_error_that_never_echoes_the_value() -> None:
    pasted_secret = "sk-live-this-is-the-credential-itself"
    message = error_for(f'[agents.bot]\ncredential_sha256 = "{pasted_secret}"\n')
    assert message.startswith("directory.toml: agent 'bot' (agents.bot).credential_sha256: must be 64 hex characters")
    assert pasted_secret not in message


def test_two_agents_with_the_same_credential_are_an_error() -> None:
    digest = hash_credential("shared")
    message = error_for(f'[agents.a]\ncredential_sha256 = "{digest}"\n[agents.b]\ncredential_sha256 = "{digest}"\n')
    assert "agent 'b' (agents.b).credential_sha256: same credential as agent 'a'" in message


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('[users.alice]\nemail = "not-an-email"\n', "user 'alice' (users.alice).email: 'not-an-email' is not an email"),
        ('[users.alice]\nemail = "a b@example.com"\n', "(users.alice).email: "),
        ("[users.alice]\ngroups = []\n", "user 'alice' (users.alice).email: required, but missing"),
        ('[users.alice]\nemail = "a@example.com"\nrole = "x"\n', "(users.alice).role: unknown key; use one of: email"),
        ('[users.alice]\nemail = "a@example.com"\ngroups = "finance"\n', "(users.alice).groups: "),
        ('[users.alice]\nemail = "a@example.com"\ngroups = [""]\n', "(users.alice).groups[0]: empty group name"),
        ('[agents.bot]\nusers = []\n', "agent 'bot' (agents.bot).credential_sha256: required, but missing"),
        (f'[agents.bot]\ncredential_sha256 = "{"a" * 64}"\nsuspended = "no"\n', "(agents.bot).suspended: "),
        ('[users."bad name"]\nemail = "a@example.com"\n', "user 'bad name' (users.bad name): not a usable name"),
        ("[groups.x]\n", "unknown key 'groups'"),
        ('users = "alice"\n', "'users' must hold tables"),
        ("[users]\nalice = 1\n", "user 'alice' (users.alice): must be a table"),
        ("[users.alice\n", "not valid TOML"),
    ],
)  # fmt: skip
def test_invalid_directories_are_rejected_naming_entry_and_field(text: str, fragment: str) -> None:
    message = error_for(text)
    assert message.startswith("directory.toml: ")
    assert fragment in message


def test_load_directory_reads_a_file_and_names_it_in_errors(tmp_path: Path) -> None:
    path = tmp_path / "directory.toml"
    path.write_text(DIRECTORY)
    assert load_directory(path) == directory()
    path.write_text("[users.alice\n")
    with pytest.raises(DirectoryError, match=f"^{path}: not valid TOML: .*line 1"):
        load_directory(path)
    with pytest.raises(DirectoryError, match="cannot read the directory file"):
        load_directory(tmp_path / "absent.toml")


def test_render_round_trips() -> None:
    d = directory()
    text = render_directory(d)
    again = parse_directory(text, source="rendered.toml")
    assert again == d
    assert again.agent("reports-bot") == d.agent("reports-bot")
    assert "suspended = true" in text


def test_rotating_a_credential_and_rendering_keeps_everything_else() -> None:
    d = directory()
    fresh = new_credential()
    old = d.agent("billing-bot")
    assert old is not None
    rotated = d.with_agent(Agent(old.name, hash_credential(fresh), old.users, old.suspended))
    reread = parse_directory(render_directory(rotated))
    assert reread.authenticate(fresh) == rotated.agent("billing-bot")
    assert reread.authenticate(BILLING_CREDENTIAL) is None
    assert d.authenticate(BILLING_CREDENTIAL) is not None  # the original is unchanged
    assert reread.users == d.users
    assert fresh not in render_directory(rotated)


def test_default_directory_is_the_documented_development_setup() -> None:
    d = load_directory(DEFAULT_DIRECTORY_PATH)
    agent = d.authenticate(DEVELOPMENT_AGENT_CREDENTIAL)
    assert DEVELOPMENT_AGENT_CREDENTIAL == "dev-agent-credential"
    assert agent is not None and agent.name == "demo-agent"
    assert all(d.may_act_for("demo-agent", name) for name in ("alice", "bob", "carol"))
    alice = d.user("alice")
    assert alice is not None and "finance" in alice.groups
    assert d.development_agents() == ("demo-agent",)
    assert directory().development_agents() == ()
    assert DEVELOPMENT_AGENT_CREDENTIAL not in DEFAULT_DIRECTORY_PATH.read_text().split("credential_sha256")[1]


NAMES = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,12}", fullmatch=True)
TEXT = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=12).filter(str.strip)


@st.composite
def directories(draw: st.DrawFn) -> Directory:
    user_names = draw(st.lists(NAMES, unique=True, max_size=4))
    users = [
        User(name=name, email=f"{draw(st.from_regex(r'[a-z0-9.+]{1,8}', fullmatch=True))}@example.com",
             groups=tuple(draw(st.lists(TEXT, max_size=3))))
        for name in user_names
    ]  # fmt: skip
    agent_names = draw(st.lists(NAMES, unique=True, max_size=3))
    agents = [
        Agent(
            name=name,
            credential_sha256=hash_credential(f"credential-{index}"),
            users=tuple(draw(st.lists(st.sampled_from(user_names), unique=True))) if user_names else (),
            suspended=draw(st.booleans()),
        )
        for index, name in enumerate(agent_names)
    ]
    return Directory(users=users, agents=agents)


@settings(max_examples=200)
@given(directories())
def test_render_round_trips_any_valid_directory(d: Directory) -> None:
    assert parse_directory(render_directory(d)) == d
