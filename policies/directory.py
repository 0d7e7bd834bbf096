"""The directory: the people agents act for, the agents, and whom each agent may act for.

A directory file (TOML):

    [users.alice]
    email = "alice@example.com"
    groups = ["finance"]

    [agents.billing-bot]
    credential_sha256 = "<64 hex>"   # SHA-256 of the agent's bearer credential, never the credential
    users = ["alice"]                # the users this agent may act for
    suspended = false

An agent is identified only by the credential it presents: `Directory.authenticate` hashes
it and compares it with every agent's hash in constant time. The credential itself is never
stored, logged or put in an error message.
"""

import hashlib
import hmac
import os
import re
import secrets
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final, TypeVar

from pydantic import BaseModel, ConfigDict, StrictBool, StrictStr, ValidationError

#: The directory shipped with the package, for development and demos only.
DEFAULT_DIRECTORY_PATH: Final = Path(__file__).with_name("default_directory.toml")

#: The documented development credential of `demo-agent` in the default directory. Never use it in production.
DEVELOPMENT_AGENT_CREDENTIAL: Final = "dev-agent-credential"

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}")
_EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_SHA256_RE = re.compile(r"[0-9a-fA-F]{64}")
_BARE_KEY_RE = re.compile(r"[A-Za-z0-9_-]+")
_NAME_HELP = "use up to 128 letters, digits, '_', '.', '@' and '-', starting with a letter or digit"


class DirectoryError(Exception):
    """A directory file or entry cannot be used; the message names the file, the entry and the field."""


@dataclass(frozen=True)
class User:
    """A person an agent may act for; `email` identifies them to Rublon."""

    name: str
    email: str
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class Agent:
    """An agent: the hash of its credential, the users it may act for, and whether it is suspended."""

    name: str
    credential_sha256: str = field(repr=False)
    users: tuple[str, ...] = ()
    suspended: bool = False


def hash_credential(credential: str) -> str:
    """In: an agent credential. Out: its SHA-256 as 64 lowercase hex. Errors: ValueError if not UTF-8 encodable."""
    return hashlib.sha256(credential.encode("utf-8")).hexdigest()


def new_credential() -> str:
    """Out: a fresh random agent credential (43 URL-safe characters, 256 bits) for rotation. Errors: none."""
    return secrets.token_urlsafe(32)


class Directory:
    """The users and agents, checked for consistency on construction.

    In: users and agents (names unique, every agent's users known, hashes well-formed and
    distinct), and a `source` for messages. Errors: `DirectoryError` naming the entry and field.
    """

    def __init__(self, *, users: Iterable[User] = (), agents: Iterable[Agent] = (), source: str = "<memory>") -> None:
        self.source = source
        self._users: dict[str, User] = {}
        self._agents: dict[str, Agent] = {}
        for user in users:
            self._add_user(user)
        for agent in agents:
            self._add_agent(agent)

    @property
    def users(self) -> tuple[User, ...]:
        """Every user, in file order."""
        return tuple(self._users.values())

    @property
    def agents(self) -> tuple[Agent, ...]:
        """Every agent, in file order."""
        return tuple(self._agents.values())

    def user(self, name: str) -> User | None:
        """In: a user name. Out: the `User`, or None if unknown."""
        return self._users.get(name)

    def agent(self, name: str) -> Agent | None:
        """In: an agent name. Out: the `Agent`, or None if unknown."""
        return self._agents.get(name)

    def authenticate(self, credential: str) -> Agent | None:
        """Find the agent a presented credential belongs to.

        In: the bearer credential as presented. Out: the `Agent` whose hash matches, or None.
        A suspended agent is still returned, so the caller can record who tried; check
        `agent.suspended` (and `may_act_for`, which refuses suspended agents). Compares with
        every agent in constant time. Errors: none; the credential never appears anywhere.
        """
        if not credential:
            return None
        try:
            presented = hash_credential(credential)
        except ValueError:  # not encodable as UTF-8: cannot be anyone's credential
            return None
        found: Agent | None = None
        for agent in self._agents.values():  # no early exit: the time taken does not depend on which agent matched
            if hmac.compare_digest(presented, agent.credential_sha256) and found is None:
                found = agent
        return found

    def may_act_for(self, agent_name: str, user_name: str) -> bool:
        """In: agent and user names. Out: True only if both exist, the agent is not suspended and lists the user."""
        agent = self._agents.get(agent_name)
        return agent is not None and not agent.suspended and user_name in agent.users and user_name in self._users

    def development_agents(self) -> tuple[str, ...]:
        """Out: names of agents whose credential is the public DEVELOPMENT_AGENT_CREDENTIAL (refuse in production)."""
        development = hash_credential(DEVELOPMENT_AGENT_CREDENTIAL)
        return tuple(a.name for a in self._agents.values() if hmac.compare_digest(a.credential_sha256, development))

    def with_agent(self, agent: Agent) -> "Directory":
        """In: an agent (new, or replacing the one of that name, e.g. after rotating its credential).

        Out: a new `Directory`; this one is unchanged. Errors: `DirectoryError` as for the constructor.
        """
        agents = {**self._agents, agent.name: agent}
        return Directory(users=self.users, agents=agents.values(), source=self.source)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Directory):
            return NotImplemented
        return self.users == other.users and self.agents == other.agents

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Directory(source={self.source!r}, users={list(self._users)}, agents={list(self._agents)})"

    def _fail(self, kind: str, name: str, field_name: str, message: str) -> DirectoryError:
        table = "users" if kind == "user" else "agents"
        where = f"{kind} {name!r} ({table}.{name})" + (f".{field_name}" if field_name else "")
        return DirectoryError(f"{self.source}: {where}: {message}")

    def _add_user(self, user: User) -> None:
        if not _NAME_RE.fullmatch(user.name):
            raise self._fail("user", user.name, "", f"not a usable name; {_NAME_HELP}")
        if user.name in self._users:
            raise self._fail("user", user.name, "", "listed twice; keep one entry per user")
        if not _EMAIL_RE.fullmatch(user.email):
            raise self._fail("user", user.name, "email", f"{user.email!r} is not an email address; write name@domain")
        for index, group in enumerate(user.groups):
            if not group.strip():
                raise self._fail("user", user.name, f"groups[{index}]", "empty group name; remove it")
        self._users[user.name] = user

    def _add_agent(self, agent: Agent) -> None:
        if not _NAME_RE.fullmatch(agent.name):
            raise self._fail("agent", agent.name, "", f"not a usable name; {_NAME_HELP}")
        if agent.name in self._agents:
            raise self._fail("agent", agent.name, "", "listed twice; keep one entry per agent")
        if not _SHA256_RE.fullmatch(agent.credential_sha256):
            # Never echo the value: it may be a credential pasted by mistake.
            raise self._fail(
                "agent",
                agent.name,
                "credential_sha256",
                f"must be 64 hex characters, the SHA-256 of the credential (got {len(agent.credential_sha256)} "
                "characters); store the hash (see hash_credential), never the credential itself",
            )
        agent = replace(agent, credential_sha256=agent.credential_sha256.lower())
        for other in self._agents.values():
            if hmac.compare_digest(other.credential_sha256, agent.credential_sha256):
                raise self._fail(
                    "agent",
                    agent.name,
                    "credential_sha256",
                    f"same credential as agent {other.name!r}; give every agent its own credential",
                )
        for index, user_name in enumerate(agent.users):
            if user_name not in self._users:
                raise self._fail(
                    "agent",
                    agent.name,
                    f"users[{index}]",
                    f"unknown user {user_name!r}; add a [users.{user_name}] table or remove the name",
                )
            if user_name in agent.users[:index]:
                raise self._fail("agent", agent.name, f"users[{index}]", f"user {user_name!r} listed twice")
        self._agents[agent.name] = agent


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


EntryT = TypeVar("EntryT", bound=_Entry)


class _UserEntry(_Entry):
    email: StrictStr
    groups: tuple[StrictStr, ...] = ()


class _AgentEntry(_Entry):
    credential_sha256: StrictStr
    users: tuple[StrictStr, ...] = ()
    suspended: StrictBool = False


def load_directory(path: str | os.PathLike[str]) -> Directory:
    """Read and check a directory file.

    In: the path of a TOML directory file. Out: a `Directory`. Errors: `DirectoryError` if
    the file cannot be read, is not UTF-8 or valid TOML, or an entry is wrong (the message
    names the file, the entry and the field).
    """
    source = os.fspath(path)
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as exc:
        raise DirectoryError(f"{source}: cannot read the directory file ({exc.strerror}); check the path") from None
    except UnicodeDecodeError:
        raise DirectoryError(f"{source}: the directory file is not UTF-8 text; save it as UTF-8") from None
    return parse_directory(text, source=source)


def parse_directory(text: str, *, source: str = "<string>") -> Directory:
    """Check directory text.

    In: TOML text and a `source` name for messages. Out: a `Directory`. Errors: `DirectoryError`
    as for `load_directory`.
    """
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DirectoryError(f"{source}: not valid TOML: {exc}; fix the syntax at that line and column") from None
    for key, value in document.items():
        if key not in ("users", "agents"):
            raise DirectoryError(f"{source}: unknown key {key!r}; use [users.<name>] and [agents.<name>] tables")
        if not isinstance(value, dict):
            raise DirectoryError(f"{source}: {key!r} must hold tables like [{key}.<name>]")
    users = [
        User(name=name, email=entry.email, groups=entry.groups)
        for name, entry in _entries(document, "users", _UserEntry, source)
    ]
    agents = [
        Agent(name=name, credential_sha256=entry.credential_sha256, users=entry.users, suspended=entry.suspended)
        for name, entry in _entries(document, "agents", _AgentEntry, source)
    ]
    return Directory(users=users, agents=agents, source=source)


def _entries(document: dict[str, Any], table: str, model: type[EntryT], source: str) -> list[tuple[str, EntryT]]:
    kind = "user" if table == "users" else "agent"
    entries = []
    for name, raw in document.get(table, {}).items():
        where = f"{kind} {name!r} ({table}.{name})"
        if not isinstance(raw, dict):
            raise DirectoryError(f"{source}: {where}: must be a table; write [{table}.{name}] with its fields below")
        try:
            entries.append((name, model.model_validate(raw)))
        except ValidationError as exc:
            error = exc.errors(include_url=False)[0]
            location = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"])
            if error["type"] == "extra_forbidden":
                message = f"unknown key; use one of: {', '.join(model.model_fields)}"
            elif error["type"] == "missing":
                message = f"required, but missing; add {error['loc'][-1]} = ..."
            else:
                message = error["msg"]
            raise DirectoryError(f"{source}: {where}{location}: {message}") from None
    return entries


def render_directory(directory: Directory) -> str:
    """Write a directory back as TOML (e.g. after rotating a credential); comments are not kept.

    In: a `Directory`. Out: TOML text that `parse_directory` reads back to an equal
    `Directory`. Errors: none.
    """
    blocks = []
    for user in directory.users:
        blocks.append(f"[users.{_key(user.name)}]\nemail = {_string(user.email)}\ngroups = {_array(user.groups)}\n")
    for agent in directory.agents:
        blocks.append(
            f"[agents.{_key(agent.name)}]\n"
            f"credential_sha256 = {_string(agent.credential_sha256)}\n"
            f"users = {_array(agent.users)}\n"
            f"suspended = {'true' if agent.suspended else 'false'}\n"
        )
    return "\n".join(blocks)


_ESCAPES: Final[dict[str, str]] = {
    '"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r",
}  # fmt: skip


def _string(value: str) -> str:
    """A TOML basic string."""
    out = []
    for char in value:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _key(name: str) -> str:
    return name if _BARE_KEY_RE.fullmatch(name) else _string(name)


def _array(values: Iterable[str]) -> str:
    return "[" + ", ".join(_string(value) for value in values) + "]"
