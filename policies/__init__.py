"""The policy engine: which actions an agent may run, which need a person's MFA approval, which never run.

Pure: no I/O beyond reading the policy and directory files it is asked to read, and no
imports from the rest of mfa-gate.

- `model`: the policy file as validated models.
- `conditions`: the `when` condition language (parser and evaluator).
- `loader`: `load_policy` / `parse_policy`, raising `PolicyError`.
- `engine`: `Facts`, `evaluate` -> `Decision`, `explain`.
- `directory`: users and agents (agent credentials as SHA-256 hashes), `DirectoryError`.
"""

from policies.conditions import Condition, parse_condition
from policies.directory import (
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
from policies.engine import NO_RULE_MATCHED, Decision, Facts, RuleMatch, evaluate, explain
from policies.errors import PolicyError
from policies.loader import DEFAULT_POLICY_PATH, load_policy, parse_policy
from policies.model import Defaults, HttpRules, Limits, Policy, Rule

__all__ = [
    "DEFAULT_DIRECTORY_PATH",
    "DEFAULT_POLICY_PATH",
    "NO_RULE_MATCHED",
    "Agent",
    "Condition",
    "Decision",
    "Defaults",
    "Directory",
    "DirectoryError",
    "Facts",
    "HttpRules",
    "Limits",
    "Policy",
    "PolicyError",
    "Rule",
    "RuleMatch",
    "User",
    "evaluate",
    "explain",
    "hash_credential",
    "load_directory",
    "load_policy",
    "parse_condition",
    "parse_directory",
    "parse_policy",
    "render_directory",
]
