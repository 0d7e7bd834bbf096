"""The policy package's one exception type.

Every problem with a policy file (unreadable file, broken TOML, unknown key, a condition
that does not parse) is a `PolicyError`; its message names the file, the rule and the
field, and says what to do.
"""


class PolicyError(Exception):
    """A policy file or condition cannot be used; the message says where and what to do."""
