"""The policy file as typed, validated models.

A policy file (TOML) has five parts: `version`, `[defaults]` for mfa outcomes, the
`[[rules]]` in file order, `[limits]` against push fatigue and runaway agents, and `[http]`
for the built-in `http.request` action. Unknown keys are errors everywhere, so a typo never
silently weakens a policy. Build a `Policy` with `policies.loader`, which also records the
file's hash and turns validation errors into `PolicyError` messages.

Validators below raise `PydanticCustomError` with a plain `message` and, when the problem
sits deeper than the field being validated, an `at` (dotted path, e.g. "0" for `when[0]`)
that the loader appends to the location.
"""

import fnmatch
import hashlib
import json
import re
from typing import Annotated, Final, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictStr,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from policies.conditions import Condition, parse_condition
from policies.errors import PolicyError

Outcome = Literal["allow", "mfa", "deny"]
Method = Literal["push", "totp", "phoneCall", "sms", "yubikey", "email"]
FailMode = Literal["block", "allow"]
Mode = Literal["promptless", "prompt"]
Scheme = Literal["https", "http"]

OUTCOMES: Final[tuple[str, ...]] = get_args(Outcome)
METHODS: Final[tuple[str, ...]] = get_args(Method)

#: Shortest and longest time a person may be given to answer, in seconds.
MIN_TIMEOUT_SECONDS: Final = 10
MAX_TIMEOUT_SECONDS: Final = 86_400

#: The only policy file format this code reads.
POLICY_VERSION: Final = 1

#: The settings of an mfa rule that fall back to `[defaults]`; an allow or deny rule may not set them.
MFA_SETTINGS: Final[tuple[str, ...]] = ("methods", "timeout_seconds", "on_unavailable", "on_bypass", "mode")

_RULE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_HOST_RE = re.compile(r"[a-z0-9*?\[\]!._:-]+")

Timeout = Annotated[int, Field(strict=True, ge=MIN_TIMEOUT_SECONDS, le=MAX_TIMEOUT_SECONDS)]
Methods = Annotated[tuple[Method, ...], Field(min_length=1)]
Count = Annotated[int, Field(strict=True, ge=1)]
CountOrOff = Annotated[int, Field(strict=True, ge=0)]
AmountOrOff = Annotated[float, Field(strict=True, ge=0)]


def located(message: str, at: str = "") -> PydanticCustomError:
    """Build the validation error the loader understands: a message, and where below the field it sits."""
    return PydanticCustomError("policy", "{message}", {"message": message, "at": at})


def _unique_methods(methods: tuple[str, ...] | None) -> tuple[str, ...] | None:
    if methods is not None and len(set(methods)) != len(methods):
        raise located(f"lists a method twice: {list(methods)}; name each method once")
    return methods


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


class Defaults(_Section):
    """Settings an mfa outcome uses when its rule leaves them out (and when no rule matched)."""

    methods: Methods = ("push",)
    timeout_seconds: Timeout = 300
    on_unavailable: FailMode = "block"  # Rublon unreachable: "block" fails closed
    on_bypass: FailMode = "block"  # Rublon reports the user as bypassed: "block" fails closed
    mode: Mode = "promptless"

    _methods_unique = field_validator("methods")(_unique_methods)


class Rule(_Section):
    """One `[[rules]]` entry. Conditions in `when` are parsed at load time; all must hold.

    An allow rule may not test `context.*`: the agent supplies the context, so it may only
    ever ask for more checks, never fewer. The mfa settings are None when the rule leaves
    them to `[defaults]`, and only mfa rules may set them.
    """

    name: StrictStr
    action: Annotated[StrictStr, Field(min_length=1)] = "*"
    outcome: Outcome  # declared before `when`, so the `when` validator can see it
    when: tuple[Condition, ...] = ()
    methods: Methods | None = None
    timeout_seconds: Timeout | None = None
    on_unavailable: FailMode | None = None
    on_bypass: FailMode | None = None
    mode: Mode | None = None
    description: StrictStr = ""

    _methods_unique = field_validator("methods")(_unique_methods)

    @field_validator("name")
    @classmethod
    def _name_is_plain(cls, name: str) -> str:
        if not _RULE_NAME_RE.fullmatch(name):
            raise located(f"{name!r} is not a usable rule name; use up to 64 letters, digits, '-', '_' and '.'")
        return name

    @field_validator("when", mode="before")
    @classmethod
    def _parse_when(cls, value: object, info: ValidationInfo) -> tuple[Condition, ...]:
        if not isinstance(value, list | tuple):
            raise located('must be a list of condition strings, e.g. when = ["params.amount >= 1000"]')
        outcome = info.data.get("outcome")
        conditions: list[Condition] = []
        for index, item in enumerate(value):
            if isinstance(item, Condition):
                condition = item
            else:
                try:
                    condition = parse_condition(item)
                except PolicyError as exc:
                    raise located(str(exc), at=str(index)) from None
            if outcome == "allow" and condition.tests_context:
                raise located(
                    f"an allow rule may not test agent-supplied context ('{condition.path}'): context can only ask "
                    "for more, never for less; move this condition to an mfa or deny rule",
                    at=str(index),
                )
            conditions.append(condition)
        return tuple(conditions)

    @field_serializer("when")
    def _when_as_text(self, when: tuple[Condition, ...]) -> list[str]:
        return [condition.text for condition in when]

    @model_validator(mode="after")
    def _mfa_settings_only_on_mfa(self) -> "Rule":
        if self.outcome != "mfa":
            for name in MFA_SETTINGS:
                if getattr(self, name) is not None:
                    raise located(
                        f"only an mfa rule may set it (this rule's outcome is '{self.outcome}'); "
                        'remove it or set outcome = "mfa"',
                        at=name,
                    )
        return self

    def matches_action(self, action: str) -> bool:
        """In: an action name. Out: whether this rule's `action` glob matches it (case-sensitive)."""
        return fnmatch.fnmatchcase(action, self.action)


class Limits(_Section):
    """Push-fatigue and cumulative limits; the server enforces them, this only validates them."""

    max_pending_per_user: Count = 5  # open approval requests per person
    max_pending_per_agent: Count = 20  # open approval requests per agent
    max_requests_per_agent_per_hour: Count = 100  # submissions per agent per rolling hour
    suspend_agent_after_refusals: Count = 5  # consecutive rejected/expired requests before suspension
    window_seconds: Count = 3600  # the window of the four cumulative caps below
    max_count_per_agent_window: CountOrOff = 0  # 0 = off
    max_amount_per_agent_window: AmountOrOff = 0  # sum of params.amount; 0 = off
    max_count_per_user_window: CountOrOff = 0  # 0 = off
    max_amount_per_user_window: AmountOrOff = 0  # 0 = off


class HttpRules(_Section):
    """Where the built-in `http.request` action may go; anything not listed is refused.

    Host entries are lowercase names, addresses or globs (`*.example.com` matches any
    subdomain, not `example.com` itself).
    """

    allowed_schemes: tuple[Scheme, ...] = ("https",)
    allowed_hosts: tuple[StrictStr, ...] = ()

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts_are_plain(cls, hosts: tuple[str, ...]) -> tuple[str, ...]:
        for index, host in enumerate(hosts):
            if not _HOST_RE.fullmatch(host):
                raise located(
                    f"{host!r} is not a host; write a lowercase host name, address or glob like '*.example.com' "
                    "(no scheme, path or port)",
                    at=str(index),
                )
        return hosts

    def scheme_allowed(self, scheme: str) -> bool:
        """In: a URL scheme. Out: whether it is listed (case-insensitive)."""
        return scheme.lower() in self.allowed_schemes

    def host_allowed(self, host: str) -> bool:
        """In: a host name or address (no port). Out: whether a listed entry matches it (case-insensitive)."""
        name = host.lower().rstrip(".")
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.allowed_hosts)


class Policy(_Section):
    """A whole policy file.

    `policy_hash` is the SHA-256 of the file's bytes when built by `policies.loader` (which
    validates with context={"source": ..., "sha256": ...}).
    """

    version: Annotated[int, Field(strict=True)]
    defaults: Defaults = Defaults()
    rules: tuple[Rule, ...] = ()
    limits: Limits = Limits()
    http: HttpRules = HttpRules()

    _sha256: str = PrivateAttr(default="")
    _source: str = PrivateAttr(default="<memory>")

    @field_validator("version")
    @classmethod
    def _known_version(cls, version: int) -> int:
        if version != POLICY_VERSION:
            raise located(f"unsupported version {version}; this mfa-gate reads version = {POLICY_VERSION}")
        return version

    @model_validator(mode="after")
    def _record_origin(self, info: ValidationInfo) -> "Policy":
        # The loader passes context={"source": ..., "sha256": ...}; the file's bytes are not part of the model.
        context = info.context if isinstance(info.context, dict) else {}
        self._source = str(context.get("source", self._source))
        self._sha256 = str(context.get("sha256", ""))
        return self

    @model_validator(mode="after")
    def _rule_names_unique(self) -> "Policy":
        seen: dict[str, int] = {}
        for index, rule in enumerate(self.rules):
            if rule.name in seen:
                raise located(
                    f"duplicate rule name '{rule.name}' (first used by rules[{seen[rule.name]}]); give each rule "
                    "its own name",
                    at=f"rules.{index}.name",
                )
            seen[rule.name] = index
        return self

    @property
    def policy_hash(self) -> str:
        """SHA-256 hex of the policy file's bytes (of a canonical JSON form when not loaded from a file)."""
        if not self._sha256:
            canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
            self._sha256 = hashlib.sha256(canonical.encode()).hexdigest()
        return self._sha256

    @property
    def source(self) -> str:
        """Where the policy came from (a file path, or the `source` given to `parse_policy`)."""
        return self._source


def known_keys(section: tuple[str | int, ...]) -> tuple[str, ...]:
    """In: a location such as ("rules", 3) or ("limits",). Out: the keys allowed in that table (empty if unknown)."""
    names = tuple(part for part in section if isinstance(part, str))
    models: dict[tuple[str, ...], type[BaseModel]] = {
        (): Policy,
        ("defaults",): Defaults,
        ("rules",): Rule,
        ("limits",): Limits,
        ("http",): HttpRules,
    }
    model = models.get(names)
    return tuple(model.model_fields) if model is not None else ()
