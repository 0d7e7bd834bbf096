"""The policy engine: loading, the condition language, strictest-wins decisions, explanations."""

import hashlib
import math
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies import (
    DEFAULT_POLICY_PATH,
    NO_RULE_MATCHED,
    Facts,
    Policy,
    PolicyError,
    evaluate,
    explain,
    load_policy,
    parse_condition,
    parse_policy,
)

MONDAY_NOON = datetime(2024, 6, 3, 12, 0, tzinfo=UTC)


def facts(**overrides: object) -> Facts:
    values: dict[str, object] = {
        "agent": "billing-bot",
        "user": "alice",
        "groups": ("finance",),
        "source_ip": "10.1.2.3",
        "now": MONDAY_NOON,
    }
    values.update(overrides)
    return Facts(**values)  # type: ignore[arg-type]


def policy(rules: str = "", head: str = "") -> Policy:
    return parse_policy(f"version = 1\n{head}\n{rules}", source="policy.toml")


def decide(pol: Policy, action: str = "payments.send", params: dict | None = None, context: dict | None = None,
           **fact_overrides: object):  # fmt: skip
    return evaluate(pol, action=action, params=params or {}, facts=facts(**fact_overrides), context=context or {})


def holds(condition: str, params: dict | None = None, context: dict | None = None, **fact_overrides: object) -> bool:
    """Whether a single mfa rule with this one condition matches."""
    pol = policy(f'[[rules]]\nname = "r"\noutcome = "mfa"\nwhen = [{condition!r}]\n')
    decision = evaluate(pol, action="payments.send", params=params or {}, facts=facts(**fact_overrides),
                        context=context or {})  # fmt: skip
    return decision.rule == "r"


# --- Strictest wins -------------------------------------------------------------------

STRICTEST = """
[[rules]]
name = "allow-payments"
action = "payments.*"
outcome = "allow"

[[rules]]
name = "big-payments"
action = "payments.*"
when = ["params.amount >= 1000"]
outcome = "mfa"

[[rules]]
name = "sanctioned"
action = "payments.*"
when = ["params.country in ['XX']"]
outcome = "deny"
"""


def test_allow_when_only_the_allow_rule_matches() -> None:
    decision = decide(policy(STRICTEST), params={"amount": 10, "country": "PL"})
    assert decision.outcome == "allow"
    assert decision.rule == "allow-payments"


def test_mfa_beats_allow() -> None:
    decision = decide(policy(STRICTEST), params={"amount": 5000, "country": "PL"})
    assert decision.outcome == "mfa"
    assert decision.rule == "big-payments"
    assert [m.rule for m in decision.matched] == ["allow-payments", "big-payments"]


def test_deny_beats_mfa_and_allow_regardless_of_file_order() -> None:
    decision = decide(policy(STRICTEST), params={"amount": 5000, "country": "XX"})
    assert decision.outcome == "deny"
    assert decision.rule == "sanctioned"
    assert [(m.rule, m.outcome) for m in decision.matched] == [
        ("allow-payments", "allow"),
        ("big-payments", "mfa"),
        ("sanctioned", "deny"),
    ]


def test_no_matching_rule_requires_mfa_with_the_defaults() -> None:
    pol = policy(
        STRICTEST,
        head='[defaults]\nmethods = ["totp"]\ntimeout_seconds = 120\non_unavailable = "allow"\nmode = "prompt"\n',
    )
    decision = decide(pol, action="records.delete")
    assert decision.outcome == "mfa"
    assert decision.rule == NO_RULE_MATCHED == "(default: no rule matched)"
    assert decision.matched == ()
    assert decision.methods == ("totp",)
    assert decision.timeout_seconds == 120
    assert decision.on_unavailable == "allow"
    assert decision.on_bypass == "block"
    assert decision.mode == "prompt"
    assert "no rule matched" in decision.reason


def test_empty_policy_requires_mfa_for_everything() -> None:
    assert decide(policy(), action="reports.read").outcome == "mfa"


def test_several_mfa_rules_combine_to_the_strictest_settings() -> None:
    pol = policy(
        """
[[rules]]
name = "first"
outcome = "mfa"
methods = ["totp", "push"]
mode = "prompt"
timeout_seconds = 900
on_unavailable = "allow"
on_bypass = "allow"

[[rules]]
name = "second"
outcome = "mfa"
methods = ["yubikey"]
mode = "promptless"
timeout_seconds = 60
on_unavailable = "block"
on_bypass = "allow"
""",
    )
    decision = decide(pol)
    assert decision.rule == "first"
    assert decision.methods == ("totp", "push")  # first matching mfa rule
    assert decision.mode == "prompt"  # first matching mfa rule
    assert decision.timeout_seconds == 60  # shortest
    assert decision.on_unavailable == "block"  # block wins
    assert decision.on_bypass == "allow"  # both said allow


def test_mfa_rule_without_settings_takes_them_from_defaults_when_combining() -> None:
    pol = policy(
        '[[rules]]\nname = "a"\noutcome = "mfa"\ntimeout_seconds = 900\non_bypass = "allow"\n'
        '[[rules]]\nname = "b"\noutcome = "mfa"\n',
        head="[defaults]\ntimeout_seconds = 200\n",
    )
    decision = decide(pol)
    assert decision.timeout_seconds == 200
    assert decision.on_bypass == "block"  # rule b falls back to the default "block"


def test_reason_names_the_rule_the_condition_and_the_value_seen() -> None:
    pol = policy('[[rules]]\nname = "large-transfers"\naction = "payments.*"\nwhen = ["params.amount >= 1000"]\n'
                 'outcome = "mfa"\n')  # fmt: skip
    decision = decide(pol, params={"amount": 5000})
    assert decision.reason == "rule 'large-transfers' requires MFA: params.amount >= 1000 (was 5000)"
    assert decision.matched[0].reasons == (
        "action 'payments.send' matches 'payments.*'",
        "params.amount >= 1000 (was 5000)",
    )


def test_decision_carries_the_policy_hash() -> None:
    text = 'version = 1\n[[rules]]\nname = "a"\noutcome = "allow"\n'
    pol = parse_policy(text, source="p.toml")
    assert decide(pol).policy_hash == hashlib.sha256(text.encode()).hexdigest()


def test_rule_action_glob_limits_the_rule() -> None:
    pol = policy('[[rules]]\nname = "reports"\naction = "reports.*"\noutcome = "allow"\n')
    assert decide(pol, action="reports.daily").outcome == "allow"
    assert decide(pol, action="payments.send").outcome == "mfa"
    assert decide(pol, action="Reports.daily").outcome == "mfa"  # case-sensitive


# --- Context can only ask for more ----------------------------------------------------


def test_allow_rule_testing_context_is_rejected_naming_file_rule_and_field(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(
        'version = 1\n[[rules]]\nname = "ok"\noutcome = "mfa"\n'
        '[[rules]]\nname = "trusting"\noutcome = "allow"\nwhen = ["params.amount < 10", "context.risk == \'low\'"]\n'
    )
    with pytest.raises(PolicyError) as error:
        load_policy(path)
    message = str(error.value)
    assert message.startswith(f"{path}: rule 'trusting' (rules[1]).when[1]: ")
    assert "context" in message and "only ask for more" in message


def test_mfa_and_deny_rules_may_test_context() -> None:
    pol = policy(
        '[[rules]]\nname = "geo"\noutcome = "mfa"\nwhen = ["context.geo.country not in [\'PL\']"]\n'
        '[[rules]]\nname = "risky"\noutcome = "deny"\nwhen = ["context.risk == \'high\'"]\n'
        '[[rules]]\nname = "all"\noutcome = "allow"\n'
    )
    assert decide(pol, context={"geo": {"country": "PL"}}).outcome == "allow"
    assert decide(pol, context={"geo": {"country": "RU"}}).outcome == "mfa"
    assert decide(pol, context={"risk": "high"}).outcome == "deny"


# --- Operators ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "params", "expected"),
    [
        ("params.amount == 5", {"amount": 5}, True),
        ("params.amount == 5", {"amount": 5.0}, True),
        ("params.amount == 5", {"amount": 6}, False),
        ("params.name == 'x'", {"name": "x"}, True),
        ('params.name == "x"', {"name": "x"}, True),
        ("params.flag == true", {"flag": True}, True),
        ("params.flag == false", {"flag": True}, False),
        ("params.amount != 5", {"amount": 6}, True),
        ("params.amount != 5", {"amount": 5}, False),
        ("params.amount < 5", {"amount": 4}, True),
        ("params.amount < 5", {"amount": 5}, False),
        ("params.amount <= 5", {"amount": 5}, True),
        ("params.amount > 5", {"amount": 5.5}, True),
        ("params.amount > 5", {"amount": 5}, False),
        ("params.amount >= 5", {"amount": 5}, True),
        ("params.amount >= 5", {"amount": 4.99}, False),
        ("params.amount>=5", {"amount": 7}, True),
        ("params.day < '2024-06-01'", {"day": "2024-05-31"}, True),
        ("params.currency in ['EUR', 'USD']", {"currency": "USD"}, True),
        ("params.currency in ['EUR', 'USD']", {"currency": "PLN"}, False),
        ("params.currency not in ['EUR', 'USD']", {"currency": "PLN"}, True),
        ("params.currency not in ['EUR', 'USD']", {"currency": "EUR"}, False),
        ("params.tags contains 'urgent'", {"tags": ["a", "urgent"]}, True),
        ("params.tags contains 'urgent'", {"tags": ["a"]}, False),
        ("params.note contains 'refund'", {"note": "a refund now"}, True),
        ("params.table matches 'prod_*'", {"table": "prod_users"}, True),
        ("params.table matches 'prod_*'", {"table": "staging_users"}, False),
        ("params.table matches 'prod_*'", {"table": "PROD_users"}, False),
        ("params.to exists", {"to": None}, True),
        ("params.to exists", {}, False),
        ("params.to missing", {}, True),
        ("params.to missing", {"to": "x"}, False),
        ("params.items.1.sku == 'b'", {"items": [{"sku": "a"}, {"sku": "b"}]}, True),
        ("params.items.5.sku == 'b'", {"items": [{"sku": "a"}]}, False),
        ("params.a.b.c == 1", {"a": {"b": {"c": 1}}}, True),
        ("params.list == [1, 2]", {"list": [1, 2]}, True),
        ("params.n == -1.5", {"n": -1.5}, True),
        ("params.n == 1_000", {"n": 1000}, True),
    ],
)
def test_each_operator(condition: str, params: dict, expected: bool) -> None:
    assert holds(condition, params=params) is expected


@pytest.mark.parametrize(
    ("condition", "fact_overrides", "expected"),
    [
        ("agent == 'billing-bot'", {}, True),
        ("agent == 'other-bot'", {}, False),
        ("user == 'alice'", {}, True),
        ("user.groups contains 'finance'", {}, True),
        ("user.groups contains 'ops'", {}, False),
        ("user.groups contains 'finance'", {"groups": ()}, False),
        ("action matches 'payments.*'", {}, True),
        ("action == 'payments.refund'", {}, False),
        ("time.hour == 12", {}, True),
        ("time.weekday == 0", {}, True),
        ("time.weekday >= 5", {}, False),
        # An aware time in another zone is converted to UTC.
        ("time.hour == 12", {"now": datetime(2024, 6, 3, 14, 0, tzinfo=timezone(timedelta(hours=2)))}, True),
        # A naive time is taken as UTC.
        ("time.hour == 23", {"now": datetime(2024, 6, 3, 23, 30)}, True),
    ],
)
def test_server_facts(condition: str, fact_overrides: dict, expected: bool) -> None:
    assert holds(condition, **fact_overrides) is expected


@pytest.mark.parametrize(
    ("condition", "source_ip", "expected"),
    [
        ("source_ip in_cidr '10.0.0.0/8'", "10.1.2.3", True),
        ("source_ip in_cidr '10.0.0.0/8'", "11.1.2.3", False),
        ("source_ip in_cidr ['192.168.0.0/16', '10.0.0.0/8']", "10.1.2.3", True),
        ("source_ip in_cidr '2001:db8::/32'", "2001:db8::1", True),
        ("source_ip in_cidr '2001:db8::/32'", "10.1.2.3", False),
        ("source_ip in_cidr '10.0.0.0/8'", "::ffff:10.1.2.3", True),  # IPv4-mapped IPv6
        ("source_ip in_cidr '10.0.0.0/8'", "not-an-ip", False),
        ("source_ip in_cidr '10.0.0.0/8'", None, False),
        ("source_ip missing", None, True),
        ("source_ip == '10.1.2.3'", "10.1.2.3", True),
    ],
)
def test_cidr_and_source_ip(condition: str, source_ip: str | None, expected: bool) -> None:
    assert holds(condition, source_ip=source_ip) is expected


@pytest.mark.parametrize(
    "condition",
    [
        "params.x == 1",
        "params.x != 1",
        "params.x < 1",
        "params.x >= 1",
        "params.x in [1]",
        "params.x not in [1]",
        "params.x contains 1",
        "params.x matches '*'",
        "params.x in_cidr '0.0.0.0/0'",
        "params.x exists",
        "params.x.y == 1",
        "context.geo.country not in ['PL']",
    ],
)
def test_a_missing_path_makes_every_comparison_false(condition: str) -> None:
    assert holds(condition, params={"other": 1}, context={}) is False


def test_missing_holds_for_a_missing_path_even_below_a_scalar() -> None:
    assert holds("params.x.y missing", params={"x": 3}) is True


@pytest.mark.parametrize(
    ("condition", "params"),
    [
        ("params.amount >= 1000", {"amount": "5000"}),  # a string is not a number
        ("params.amount == 1", {"amount": True}),  # a bool is not a number
        ("params.flag == true", {"flag": 1}),
        ("params.amount != 5", {"amount": "abc"}),
        ("params.amount < 5", {"amount": [1]}),
        ("params.amount < 5", {"amount": None}),
        ("params.amount < 5", {"amount": {"value": 1}}),
        ("params.name < 'm'", {"name": 3}),
        ("params.currency in ['EUR']", {"currency": ["EUR"]}),
        ("params.currency not in ['EUR']", {"currency": ["USD"]}),
        ("params.currency not in ['EUR']", {"currency": None}),
        ("params.note contains 1", {"note": "1"}),
        ("params.table matches 'prod*'", {"table": 5}),
        ("params.ip in_cidr '10.0.0.0/8'", {"ip": 167772161}),
        ("params.list == [1, 2]", {"list": [1, True]}),
        ("params.amount > 5", {"amount": math.nan}),
    ],
)
def test_comparing_incompatible_types_is_false_never_an_error(condition: str, params: dict) -> None:
    assert holds(condition, params=params) is False


def test_true_inside_a_quoted_string_stays_a_string() -> None:
    condition = parse_condition("params.note == 'true or false'")
    assert condition.literal == "true or false"
    assert parse_condition("params.flags == [true, false]").literal == [True, False]


# --- Load-time errors -----------------------------------------------------------------


def load_error(rules: str, head: str = "") -> str:
    with pytest.raises(PolicyError) as error:
        policy(rules, head=head)
    return str(error.value)


def test_unknown_operator_names_rule_field_and_the_operators_to_use() -> None:
    message = load_error(
        '[[rules]]\nname = "a"\noutcome = "mfa"\n[[rules]]\nname = "b"\noutcome = "mfa"\n'
        '[[rules]]\nname = "x"\noutcome = "mfa"\nwhen = ["params.a == 1", "params.a =~ \'x\'"]\n'
    )
    assert message.startswith("policy.toml: rule 'x' (rules[2]).when[1]: unknown operator '=~'; use one of ==, !=")


@pytest.mark.parametrize(
    ("condition", "fragment"),
    [
        ("", "empty condition"),
        ("amount > 5", "unknown path 'amount'"),
        ("user.email == 'x'", "unknown path 'user.email'"),
        ("params > 5", "needs a key"),
        ("params.a", "missing operator"),
        ("params.a ==", "missing value"),
        ("params.a == 5 5", "cannot read the value"),
        ("params.a == yes", "unknown word 'yes'"),
        ("params.a == None", "unknown word 'None'"),
        ("params.a == True", "unknown word 'True'"),
        ("params.a == {'k': 1}", "unsupported value"),
        ("params.a == (1, 2)", "unsupported value"),
        ("params.a == [[1]]", "lists may not nest"),
        ("params.a == 1e999", "unsupported value"),
        ("params.a == 'open", "cannot read the value"),
        ("params.a in 'abc'", "'in' needs a list"),
        ("params.a > [1]", "needs a number or a string"),
        ("params.a > true", "needs a number or a string"),
        ("params.a matches 5", "'matches' needs a quoted glob"),
        ("source_ip in_cidr '10.0.0.300/8'", "is not a network"),
        ("source_ip in_cidr []", "at least one network"),
        ("params.a exists 1", "'exists' takes no value"),
        ("params.a == __import__('os')", "unknown word"),
    ],
)
def test_bad_conditions_are_load_errors_that_say_what_is_wrong(condition: str, fragment: str) -> None:
    message = load_error(f'[[rules]]\nname = "r"\noutcome = "mfa"\nwhen = [{condition!r}]\n')
    assert message.startswith("policy.toml: rule 'r' (rules[0]).when[0]: ")
    assert fragment in message


@pytest.mark.parametrize(
    ("document", "fragment"),
    [
        ('[[rules]]\nname = "r"\noutcome = "mfa"\nwhen = ["params.a > 1"]\nwehn = []\n',
         "rule 'r' (rules[0]).wehn: unknown key 'wehn'; remove it or use one of: name, action, outcome, when"),
        ('[[rules]]\nname = "r"\noutcome = "maybe"\n', "rule 'r' (rules[0]).outcome: Input should be 'allow', 'mfa'"),
        ('[[rules]]\nname = "r"\n', "rule 'r' (rules[0]).outcome: required, but missing"),
        ('[[rules]]\noutcome = "mfa"\n', "rules[0].name: required, but missing"),
        ('[[rules]]\nname = "r"\noutcome = "mfa"\nmethods = ["push", "fax"]\n', "rule 'r' (rules[0]).methods[1]: "),
        ('[[rules]]\nname = "r"\noutcome = "mfa"\nmethods = []\n', "rule 'r' (rules[0]).methods: "),
        ('[[rules]]\nname = "r"\noutcome = "mfa"\nmethods = ["push", "push"]\n', "lists a method twice"),
        ('[[rules]]\nname = "r"\noutcome = "mfa"\ntimeout_seconds = 5\n', "(rules[0]).timeout_seconds: "),
        ('[[rules]]\nname = "r"\noutcome = "mfa"\ntimeout_seconds = 86401\n', "(rules[0]).timeout_seconds: "),
        ('[[rules]]\nname = "r"\noutcome = "mfa"\ntimeout_seconds = "60"\n', "(rules[0]).timeout_seconds: "),
        ('[[rules]]\nname = "r"\noutcome = "deny"\nmethods = ["push"]\n',
         "rule 'r' (rules[0]).methods: only an mfa rule may set it"),
        ('[[rules]]\nname = "r"\noutcome = "allow"\non_bypass = "allow"\n', "(rules[0]).on_bypass: only an mfa rule"),
        ('[[rules]]\nname = "r"\noutcome = "mfa"\non_unavailable = "open"\n', "(rules[0]).on_unavailable: "),
        ('[[rules]]\nname = "r"\noutcome = "mfa"\nwhen = "params.a > 1"\n', "when: must be a list of condition"),
        ('[[rules]]\nname = "r"\noutcome = "mfa"\n[[rules]]\nname = "r"\noutcome = "deny"\n',
         "rule 'r' (rules[1]).name: duplicate rule name 'r'"),
        ('[[rules]]\nname = "has space"\noutcome = "mfa"\n', "not a usable rule name"),
        ("[defaults]\nmethods = ['carrier-pigeon']\n", "defaults.methods[0]: "),
        ("[limits]\nmax_pending_per_user = 0\n", "limits.max_pending_per_user: "),
        ("[limits]\nmax_amount_per_user_window = -1\n", "limits.max_amount_per_user_window: "),
        ("[limits]\nmax_pending_per_users = 3\n", "limits.max_pending_per_users: unknown key"),
        ("[http]\nallowed_hosts = ['https://example.com/x']\n", "http.allowed_hosts[0]: "),
        ("[http]\nallowed_schemes = ['ftp']\n", "http.allowed_schemes[0]: "),
        ("colour = 'red'\n", "policy.toml: colour: unknown key 'colour'"),
    ],
)  # fmt: skip
def test_invalid_policies_are_rejected_naming_the_field(document: str, fragment: str) -> None:
    assert fragment in load_error(document)


def test_version_is_required_and_must_be_1() -> None:
    with pytest.raises(PolicyError, match="version: required, but missing; add version = 1"):
        parse_policy("", source="policy.toml")
    with pytest.raises(PolicyError, match="version: unsupported version 2"):
        parse_policy("version = 2", source="policy.toml")


def test_broken_toml_reports_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('version = 1\n[[rules]]\nname = "a\n')
    with pytest.raises(PolicyError) as error:
        load_policy(path)
    assert str(error.value).startswith(f"{path}: not valid TOML: ")
    assert "line 3" in str(error.value)


def test_unreadable_file_is_a_policy_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read the policy file"):
        load_policy(tmp_path / "absent.toml")


def test_non_utf8_file_is_a_policy_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b"version = 1\n# caf\xe9\n")
    with pytest.raises(PolicyError, match="not UTF-8"):
        load_policy(path)


def test_every_problem_is_reported_at_once() -> None:
    message = load_error('[[rules]]\nname = "a"\noutcome = "nope"\n[limits]\nwindow_seconds = 0\n')
    assert len(message.splitlines()) == 2


# --- Hash -----------------------------------------------------------------------------


def test_policy_hash_is_the_sha256_of_the_file_bytes_and_changes_with_content(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    first = b'version = 1\n[[rules]]\nname = "a"\noutcome = "allow"\n'
    path.write_bytes(first)
    before = load_policy(path)
    path.write_bytes(first + b"# a comment is a change too\n")
    after = load_policy(path)
    assert before.policy_hash == hashlib.sha256(first).hexdigest()
    assert after.policy_hash != before.policy_hash
    assert before.source == str(path)


def test_policy_built_without_the_loader_still_has_a_stable_hash() -> None:
    one = Policy.model_validate({"version": 1, "rules": [{"name": "a", "outcome": "mfa", "when": ["params.a > 1"]}]})
    two = Policy.model_validate({"version": 1, "rules": [{"name": "a", "outcome": "mfa", "when": ["params.a > 1"]}]})
    three = Policy.model_validate({"version": 1, "rules": [{"name": "a", "outcome": "mfa", "when": ["params.a > 2"]}]})
    assert one.policy_hash == two.policy_hash != three.policy_hash
    assert len(one.policy_hash) == 64


# --- Explain --------------------------------------------------------------------------


def test_explain_lists_every_rule_matched_or_not_and_why() -> None:
    pol = policy(STRICTEST + '[[rules]]\nname = "weekend"\nwhen = ["time.weekday >= 5"]\noutcome = "mfa"\n')
    text = explain(pol, action="payments.send", params={"amount": 5000, "country": "PL"}, facts=facts(), context={})
    lines = text.splitlines()
    assert "rules[0] 'allow-payments' (allow): matched" in lines
    assert "rules[1] 'big-payments' (mfa): matched" in lines
    assert "    params.amount >= 1000 (was 5000)" in lines
    assert "rules[2] 'sanctioned' (deny): not matched" in lines
    assert "    params.country in ['XX'] did not hold (was 'PL')" in lines
    assert "rules[3] 'weekend' (mfa): not matched" in lines
    assert "    time.weekday >= 5 did not hold (was 0)" in lines
    assert any(line.startswith("decision: mfa (rule 'big-payments')") for line in lines)
    assert pol.policy_hash in text


def test_explain_says_when_the_action_glob_does_not_match_and_when_a_value_is_missing() -> None:
    pol = policy(STRICTEST)
    text = explain(pol, action="reports.read", params={}, facts=facts(), context={})
    assert "    action 'reports.read' does not match 'payments.*'" in text
    text = explain(pol, action="payments.send", params={}, facts=facts(), context={})
    assert "params.amount >= 1000 did not hold (params.amount is missing)" in text
    assert "decision: allow (rule 'allow-payments')" in text


def test_explain_escapes_agent_supplied_newlines() -> None:
    pol = policy('[[rules]]\nname = "r"\noutcome = "mfa"\nwhen = ["params.note == \'x\'"]\n')
    forged = "a\nrules[9] 'fake' (allow): matched"
    text = explain(pol, action=forged, params={"note": "y\nz"}, facts=facts(), context={})
    assert "fake" in text
    assert not any(line.startswith("rules[9]") for line in text.splitlines())


# --- The shipped default policy -------------------------------------------------------


def test_default_policy_loads_and_decides_as_documented() -> None:
    pol = load_policy(DEFAULT_POLICY_PATH)
    assert decide(pol, action="reports.daily").outcome == "allow"
    assert decide(pol, action="http.request", params={"method": "GET"}).outcome == "allow"
    assert decide(pol, action="http.request", params={"method": "POST"}).outcome == "mfa"
    big = decide(pol, action="payments.send", params={"amount": 5000})
    assert (big.outcome, big.rule, big.methods) == ("mfa", "large-payments", ("push", "totp"))
    assert decide(pol, action="records.delete").outcome == "mfa"
    infra = decide(pol, action="infra.scale")
    assert (infra.outcome, infra.on_unavailable) == ("mfa", "block")
    assert decide(pol, action="prod.drop_database").outcome == "deny"
    assert decide(pol, action="reports.daily", context={"geo": {"country": "KP"}}).outcome == "mfa"
    assert decide(pol, action="something.else").rule == NO_RULE_MATCHED
    assert pol.http.host_allowed("127.0.0.1") and pol.http.host_allowed("LOCALHOST")
    assert not pol.http.host_allowed("evil.example.net")
    assert pol.limits.max_pending_per_user == 5


def test_http_host_globs_match_subdomains_only() -> None:
    pol = policy("", head="[http]\nallowed_hosts = ['*.example.com']\n")
    assert pol.http.host_allowed("api.example.com")
    assert not pol.http.host_allowed("example.com")
    assert not pol.http.host_allowed("example.com.evil.net")
    assert pol.http.scheme_allowed("HTTPS") and not pol.http.scheme_allowed("http")


# --- Properties -----------------------------------------------------------------------

FRAGMENTS = st.sampled_from(
    [
        "params.amount", "context.geo.country", "user.groups", "source_ip", "time.hour", "action", "agent",
        "params", "user.x", " ", "==", "!=", "<", ">=", "in", "not in", "contains", "matches", "in_cidr", "exists",
        "missing", "=~", "1000", "-1.5", "1e999", "'x'", '"y"', "'", "true", "false", "None", "[", "]", ",",
        "['a', 1]", "'10.0.0.0/8'", "'::1/128'", "[[1]]", "{", "}", "(", ")", "\\", "__import__('os')", "0x10",
        "1_0", "\n", "\x00", "\ud800", "é",
    ]
)  # fmt: skip


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=60), st.lists(FRAGMENTS, max_size=8).map(" ".join)))
def test_random_condition_strings_parse_or_raise_policy_error(text: str) -> None:
    try:
        condition = parse_condition(text)
    except PolicyError as exc:
        assert str(exc)
    else:
        assert condition.op in condition.text


JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=10))
JSON = st.recursive(
    JSON_SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)
KEYS = st.sampled_from(["amount", "currency", "tags", "to", "geo", "country", "items", "0", "1", "x"])
NESTED = st.recursive(
    JSON_SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(KEYS, inner, max_size=4)),
    max_leaves=10,
)
EVERY_OPERATOR = policy(
    """
[[rules]]
name = "all-ops"
outcome = "mfa"
when = ["params.amount >= 1000", "params.currency in ['EUR', 1]", "params.tags contains 'x'", "params.to exists",
        "params.items.0 != 'a'", "context.geo.country not in ['PL']", "context.x matches 'a*'",
        "params.x in_cidr ['10.0.0.0/8', '::/0']", "params.amount < 'z'", "params.geo missing", "params.x == [1, 'a']"]

[[rules]]
name = "deny-some"
outcome = "deny"
when = ["context.country == true", "params.amount <= 5"]

[[rules]]
name = "allow-rest"
outcome = "allow"
when = ["params.currency == 'EUR'"]
"""
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    params=st.one_of(st.dictionaries(KEYS, NESTED, max_size=6), st.dictionaries(st.text(max_size=5), JSON, max_size=4)),
    context=st.dictionaries(KEYS, NESTED, max_size=4),
    action=st.text(max_size=20),
    source_ip=st.one_of(st.none(), st.ip_addresses().map(str), st.text(max_size=10)),
)
def test_evaluate_never_raises_on_random_params_and_context(
    params: dict, context: dict, action: str, source_ip: str | None
) -> None:
    request_facts = facts(source_ip=source_ip)
    decision = evaluate(EVERY_OPERATOR, action=action, params=params, facts=request_facts, context=context)
    assert decision.outcome in ("allow", "mfa", "deny")
    assert explain(EVERY_OPERATOR, action=action, params=params, facts=request_facts, context=context)
