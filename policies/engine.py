"""Decide what an action needs: allow, mfa or deny.

Every rule whose action glob matches and whose `when` conditions all hold is considered,
and the strictest outcome wins: deny over mfa over allow. No matching rule means mfa with
the `[defaults]`. Among the rule(s) with the winning outcome, the first in file order is
the deciding rule (its name goes in `Decision.rule` and `Decision.reason`).

When several mfa rules match, their settings combine as follows:
- `methods` and `mode` come from the first matching mfa rule (or `[defaults]` if it omits them);
- `timeout_seconds` is the shortest of the matching mfa rules' timeouts;
- `on_unavailable` and `on_bypass` are "block" if any matching mfa rule says "block".
So adding an mfa rule can only make an approval quicker to expire and more likely to fail
closed, never the opposite.

Evaluation is pure and never raises on odd params or context: a condition that cannot be
evaluated on the values seen is false.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from policies.conditions import Check, Condition, show
from policies.model import FailMode, Mode, Outcome, Policy, Rule

#: `Decision.rule` when no rule matched and the default (mfa) applied.
NO_RULE_MATCHED: Final = "(default: no rule matched)"

_STRICTNESS: Final[dict[str, int]] = {"allow": 0, "mfa": 1, "deny": 2}
_VERBS: Final[dict[str, str]] = {"allow": "allows it", "mfa": "requires MFA", "deny": "denies it"}


@dataclass(frozen=True)
class Facts:
    """What the server knows for certain about a request (never taken from the agent's word).

    `now` may be naive (taken as UTC) or aware (converted to UTC).
    """

    agent: str
    user: str
    groups: tuple[str, ...]
    source_ip: str | None
    now: datetime


@dataclass(frozen=True)
class RuleMatch:
    """A rule that matched: its name, its outcome, and the reasons (conditions that held, with the values seen)."""

    rule: str
    outcome: Outcome
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class Decision:
    """The policy's answer for one action.

    `rule` names the deciding rule (or NO_RULE_MATCHED); `matched` lists every matching rule
    in file order. The mfa settings (`methods` .. `mode`) are what the gate must use when
    `outcome` is "mfa"; for allow and deny they carry `[defaults]` and mean nothing.
    `policy_hash` identifies the policy version; `reason` is one plain sentence.
    """

    outcome: Outcome
    rule: str
    matched: tuple[RuleMatch, ...]
    methods: tuple[str, ...]
    timeout_seconds: int
    on_unavailable: FailMode
    on_bypass: FailMode
    mode: Mode
    policy_hash: str
    reason: str


@dataclass(frozen=True)
class _RuleCheck:
    rule: Rule
    action_matched: bool
    checks: tuple[tuple[Condition, Check], ...]

    @property
    def matched(self) -> bool:
        return self.action_matched and all(check.held for _, check in self.checks)

    def action_reason(self, action: str) -> str:
        return f"action {show(action)} matches {self.rule.action!r}"

    def reasons(self, action: str) -> tuple[str, ...]:
        held = tuple(condition.describe(check) for condition, check in self.checks)
        return (self.action_reason(action), *held) if self.rule.action != "*" else held


def evaluate(
    policy: Policy,
    *,
    action: str,
    params: Mapping[str, object],
    facts: Facts,
    context: Mapping[str, object],
) -> Decision:
    """Decide whether an action is allowed, needs MFA, or is denied.

    In: the policy; the action name and its params; the server-known `facts`; the
    agent-supplied `context`. Out: a `Decision` (see the module docstring for how matching
    rules combine). Errors: none for any params/context; odd values make conditions false.
    """
    results = _check_rules(policy, action=action, params=params, facts=facts, context=context)
    hits = [result for result in results if result.matched]
    matched = tuple(RuleMatch(r.rule.name, r.rule.outcome, r.reasons(action)) for r in hits)
    defaults = policy.defaults
    if not hits:
        return Decision(
            outcome="mfa",
            rule=NO_RULE_MATCHED,
            matched=(),
            methods=tuple(defaults.methods),
            timeout_seconds=defaults.timeout_seconds,
            on_unavailable=defaults.on_unavailable,
            on_bypass=defaults.on_bypass,
            mode=defaults.mode,
            policy_hash=policy.policy_hash,
            reason=f"no rule matched action {show(action)}, so MFA is required (the default)",
        )
    outcome = max((hit.rule.outcome for hit in hits), key=_STRICTNESS.__getitem__)
    winners = [hit for hit in hits if hit.rule.outcome == outcome]
    deciding = winners[0]
    methods, timeout, on_unavailable, on_bypass, mode = (
        defaults.methods,
        defaults.timeout_seconds,
        defaults.on_unavailable,
        defaults.on_bypass,
        defaults.mode,
    )
    if outcome == "mfa":
        rules = [winner.rule for winner in winners]
        first = rules[0]
        methods = first.methods or defaults.methods
        mode = first.mode or defaults.mode
        timeout = min(rule.timeout_seconds or defaults.timeout_seconds for rule in rules)
        on_unavailable = _strictest_fail_mode(rule.on_unavailable or defaults.on_unavailable for rule in rules)
        on_bypass = _strictest_fail_mode(rule.on_bypass or defaults.on_bypass for rule in rules)
    return Decision(
        outcome=outcome,
        rule=deciding.rule.name,
        matched=matched,
        methods=tuple(methods),
        timeout_seconds=timeout,
        on_unavailable=on_unavailable,
        on_bypass=on_bypass,
        mode=mode,
        policy_hash=policy.policy_hash,
        reason=_sentence(deciding, action),
    )


def explain(
    policy: Policy,
    *,
    action: str,
    params: Mapping[str, object],
    facts: Facts,
    context: Mapping[str, object],
) -> str:
    """Explain a decision for a person: every rule, whether it matched, and why (not).

    In: the same arguments as `evaluate`. Out: multi-line text, one block per rule in file
    order (a rule that did not match lists the conditions that failed), then the decision.
    Errors: none.
    """
    results = _check_rules(policy, action=action, params=params, facts=facts, context=context)
    decision = evaluate(policy, action=action, params=params, facts=facts, context=context)
    lines = [
        f"policy {policy.source} (sha256 {policy.policy_hash})",
        f"action {show(action)} for user {show(facts.user)} by agent {show(facts.agent)}",
    ]
    if not results:
        lines.append("no rules in this policy")
    for index, result in enumerate(results):
        rule = result.rule
        if result.matched:
            lines.append(f"rules[{index}] {rule.name!r} ({rule.outcome}): matched")
            lines += [f"    {reason}" for reason in result.reasons(action) or ("it applies to every action",)]
        elif not result.action_matched:
            lines.append(f"rules[{index}] {rule.name!r} ({rule.outcome}): not matched")
            lines.append(f"    action {show(action)} does not match {rule.action!r}")
        else:
            lines.append(f"rules[{index}] {rule.name!r} ({rule.outcome}): not matched")
            lines += [f"    {condition.describe(check)}" for condition, check in result.checks if not check.held]
    lines.append(f"decision: {decision.outcome} (rule {decision.rule!r}): {decision.reason}")
    if decision.outcome == "mfa":
        lines.append(
            f"    methods {list(decision.methods)}, timeout {decision.timeout_seconds}s, mode {decision.mode}, "
            f"on_unavailable {decision.on_unavailable}, on_bypass {decision.on_bypass}"
        )
    return "\n".join(lines)


def subject_of(
    *, action: str, params: Mapping[str, object], facts: Facts, context: Mapping[str, object]
) -> dict[str, object]:
    """The values a condition's path can reach, keyed by path root (see `policies.conditions`).

    In: the request. Out: a dict; `source_ip` is absent when unknown. Errors: none.
    """
    now = facts.now.replace(tzinfo=UTC) if facts.now.tzinfo is None else facts.now.astimezone(UTC)
    subject: dict[str, object] = {
        "action": action,
        "params": params if isinstance(params, Mapping) else {},
        "context": context if isinstance(context, Mapping) else {},
        "agent": facts.agent,
        "user": facts.user,
        "user.groups": list(facts.groups),
        "time.hour": now.hour,
        "time.weekday": now.weekday(),
    }
    if facts.source_ip is not None:
        subject["source_ip"] = facts.source_ip
    return subject


def _check_rules(
    policy: Policy,
    *,
    action: str,
    params: Mapping[str, object],
    facts: Facts,
    context: Mapping[str, object],
) -> list[_RuleCheck]:
    subject = subject_of(action=action, params=params, facts=facts, context=context)
    results = []
    for rule in policy.rules:
        action_matched = rule.matches_action(action)
        checks = tuple((condition, condition.evaluate(subject)) for condition in rule.when) if action_matched else ()
        results.append(_RuleCheck(rule=rule, action_matched=action_matched, checks=checks))
    return results


def _strictest_fail_mode(modes: Iterable[FailMode]) -> FailMode:
    return "block" if "block" in set(modes) else "allow"


def _sentence(result: _RuleCheck, action: str) -> str:
    """One sentence: the deciding rule, what it does, and the conditions that made it match."""
    held = [condition.describe(check) for condition, check in result.checks]
    because = held or [result.action_reason(action) if result.rule.action != "*" else "it applies to every action"]
    return f"rule {result.rule.name!r} {_VERBS[result.rule.outcome]}: {' and '.join(because)}"
