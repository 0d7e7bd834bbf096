"""The condition language of policy rules: one parser, one evaluator.

A condition is `<path> <op> <literal>`, or `<path> exists` / `<path> missing`:

    params.amount >= 1000
    user.groups contains 'finance'
    source_ip in_cidr ['10.0.0.0/8', '192.168.0.0/16']
    context.geo.country not in ['PL', 'DE']

Paths: `action`, `params.<dotted>`, `context.<dotted>` (supplied by the agent, untrusted),
and the facts the server knows: `agent`, `user`, `user.groups`, `source_ip`, `time.hour`
(0-23, UTC), `time.weekday` (0 = Monday). A numeric segment indexes into a list
(`params.items.0.sku`).

Literals: numbers, 'single' or "double" quoted strings, true/false, and flat lists of those.
They are read with `ast.literal_eval` after true/false are mapped to Python's spelling;
nothing is ever evaluated as code.

Evaluation never raises. A missing path makes every comparison false (only `missing` holds);
comparing values of different kinds (a string with a number, a bool with a number, a list
with `<`) is false as well, for every operator including `!=` and `not in`. Strings compare
case-sensitively; `matches` is a case-sensitive glob (fnmatch).
"""

import ast
import fnmatch
import ipaddress
import math
import re
import reprlib
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from policies.errors import PolicyError

Scalar = bool | int | float | str
Literal_ = Scalar | list[Scalar]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Every operator, in the order error messages list them.
OPERATORS: Final[tuple[str, ...]] = (
    "==", "!=", "<", "<=", ">", ">=", "in", "not in", "contains", "matches", "in_cidr", "exists", "missing",
)  # fmt: skip

#: Path roots that stand alone, and the two roots that take a dotted key.
FACT_PATHS: Final[tuple[str, ...]] = (
    "action",
    "agent",
    "user",
    "user.groups",
    "source_ip",
    "time.hour",
    "time.weekday",
)
KEYED_ROOTS: Final[tuple[str, ...]] = ("params", "context")

_PATH_HELP = "use action, params.<name>, context.<name>, agent, user, user.groups, source_ip, time.hour or time.weekday"
_OPERATOR_HELP = "use one of " + ", ".join(OPERATORS)
_LITERAL_HELP = "write a number, a quoted string ('text'), true/false, or a list like ['a', 'b']"

_PATH_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_-]+)*")
_WORD_OP_RE = re.compile(r"(not\s+in|in_cidr|in|contains|matches|exists|missing)(?![A-Za-z0-9_])")
_SYMBOL_OPS: Final[tuple[str, ...]] = ("==", "!=", "<=", ">=", "<", ">")  # two-character ones first
_WORD_RE = re.compile(r"[A-Za-z0-9_.]+")
_INDEX_RE = re.compile(r"[0-9]+")
_TOKEN_RE = re.compile(r"[A-Za-z0-9_]{1,20}|[^\sA-Za-z0-9_'\"\[]{1,5}")

_MISSING: Final = object()

_shower = reprlib.Repr()
_shower.maxstring = 60
_shower.maxother = 60
_shower.maxlist = 8
_shower.maxdict = 6
_shower.maxlevel = 2


def show(value: object) -> str:
    """Render a value seen at evaluation time for a reason or an explanation.

    In: any value (agent-supplied, possibly huge or hostile). Out: a short, single-line,
    repr-style text (newlines escaped, long values cut). Errors: none.
    """
    if isinstance(value, tuple):
        value = list(value)
    try:
        return _shower.repr(value)
    except Exception:  # a hostile __repr__ or an int too long to print must not break a decision
        return f"<{type(value).__name__}>"


@dataclass(frozen=True)
class Check:
    """The outcome of evaluating one condition: whether it held and what value was seen."""

    held: bool
    found: bool
    value: object = None


@dataclass(frozen=True)
class Condition:
    """One parsed condition; build it with `parse_condition`.

    `root` is one of FACT_PATHS or KEYED_ROOTS; `keys` is the dotted key under `params` or
    `context` (empty for facts). `literal` is None only for `exists` / `missing`.
    """

    text: str
    path: str
    root: str
    keys: tuple[str, ...]
    op: str
    literal: Literal_ | None
    literal_text: str
    _pattern: re.Pattern[str] | None = field(default=None, repr=False, compare=False)
    _networks: tuple[Network, ...] = field(default=(), repr=False, compare=False)

    @property
    def tests_context(self) -> bool:
        """True when the condition reads agent-supplied context."""
        return self.root == "context"

    def evaluate(self, subject: Mapping[str, object]) -> Check:
        """Evaluate against a subject (see `policies.engine`; keys are the path roots).

        In: a mapping from each path root to its value (a root absent from it is missing).
        Out: a `Check`. Errors: none; odd values make the condition false.
        """
        found, value = _resolve(subject, self.root, self.keys)
        if self.op == "exists":
            return Check(held=found, found=found, value=value)
        if self.op == "missing":
            return Check(held=not found, found=found, value=value)
        if not found:
            return Check(held=False, found=False)
        try:
            held = self._compare(value)
        except Exception:  # belt and braces: a comparison must never break a decision
            held = False
        return Check(held=held, found=True, value=value)

    def describe(self, check: Check) -> str:
        """One line saying how the condition fared, with the value seen.

        In: the `Check` from `evaluate`. Out: e.g. "params.amount >= 1000 (was 5000)" when it
        held, "params.amount >= 1000 did not hold (was 50)" or "... (params.amount is missing)"
        when not. Errors: none.
        """
        seen = f"was {show(check.value)}" if check.found else f"{self.path} is missing"
        if self.op in ("exists", "missing"):
            seen = "present" if check.found else "absent"
        if check.held:
            return f"{self.text} ({seen})"
        return f"{self.text} did not hold ({seen})"

    def _compare(self, value: object) -> bool:
        op, literal = self.op, self.literal
        if op == "==":
            return _equal(value, literal)
        if op == "!=":
            return _kind(value) is not None and _kind(value) == _kind(literal) and not _equal(value, literal)
        if op in ("<", "<=", ">", ">="):
            return _ordered(value, op, literal)
        if op in ("in", "not in"):
            if _kind(value) not in ("bool", "number", "str") or not isinstance(literal, list):
                return False
            present = any(_equal(value, item) for item in literal)
            return present if op == "in" else not present
        if op == "contains":
            if isinstance(value, list | tuple):
                return any(_equal(item, literal) for item in value)
            return isinstance(value, str) and isinstance(literal, str) and literal in value
        if op == "matches":
            return isinstance(value, str) and self._pattern is not None and self._pattern.fullmatch(value) is not None
        if op == "in_cidr":
            return _in_networks(value, self._networks)
        return False


def parse_condition(text: str) -> Condition:
    """Parse one condition string.

    In: e.g. "params.amount >= 1000". Out: a `Condition`. Errors: `PolicyError` naming what
    is wrong (unknown path, unknown operator, unreadable literal, literal unfit for the
    operator) and how to write it instead.
    """
    if not isinstance(text, str):
        raise PolicyError(f'a condition must be a string like "params.amount >= 1000", not {type(text).__name__}')
    source = text.strip()
    if not source:
        raise PolicyError("empty condition; write '<path> <op> <literal>', e.g. \"params.amount >= 1000\"")
    path_match = _PATH_RE.match(source)
    if path_match is None:
        raise PolicyError(f"condition {show(source)} must start with a path; {_PATH_HELP}")
    path = path_match.group(0)
    root, keys = _parse_path(path)
    position = _skip_spaces(source, path_match.end())
    if position == path_match.end() and position < len(source) and source[position] not in "=!<>":
        raise PolicyError(f"unknown path {show(source.split()[0])}; {_PATH_HELP}")
    op, position = _parse_operator(source, position, path)
    rest = source[position:].strip()
    if op in ("exists", "missing"):
        if rest:
            raise PolicyError(f"'{op}' takes no value; remove {show(rest)}")
        return Condition(text=f"{path} {op}", path=path, root=root, keys=keys, op=op, literal=None, literal_text="")
    if not rest:
        raise PolicyError(f"missing value after '{op}' in {show(source)}; {_LITERAL_HELP}")
    literal = _parse_literal(rest)
    pattern, networks = _check_literal_fits(op, literal)
    return Condition(
        text=f"{path} {op} {rest}",
        path=path,
        root=root,
        keys=keys,
        op=op,
        literal=literal,
        literal_text=rest,
        _pattern=pattern,
        _networks=networks,
    )


def _skip_spaces(text: str, position: int) -> int:
    while position < len(text) and text[position].isspace():
        position += 1
    return position


def _parse_path(path: str) -> tuple[str, tuple[str, ...]]:
    parts = path.split(".")
    if parts[0] in KEYED_ROOTS:
        if len(parts) < 2:
            raise PolicyError(f"'{path}' needs a key, e.g. '{path}.amount'; {_PATH_HELP}")
        return parts[0], tuple(parts[1:])
    if path in FACT_PATHS:
        return path, ()
    raise PolicyError(f"unknown path '{path}'; {_PATH_HELP}")


def _parse_operator(text: str, position: int, path: str) -> tuple[str, int]:
    if position >= len(text):
        raise PolicyError(f"missing operator after '{path}'; {_OPERATOR_HELP}")
    for symbol in _SYMBOL_OPS:
        if text.startswith(symbol, position):
            return symbol, position + len(symbol)
    word = _WORD_OP_RE.match(text, position)
    if word is not None:
        return " ".join(word.group(1).split()), word.end()
    token = _TOKEN_RE.match(text, position)
    raise PolicyError(f"unknown operator {show(token.group(0) if token else text[position])}; {_OPERATOR_HELP}")


def _parse_literal(text: str) -> Literal_:
    python_text = _map_words(text)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. invalid escape sequences in a quoted string
            value = ast.literal_eval(python_text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError, OverflowError):
        raise PolicyError(f"cannot read the value {show(text)}; {_LITERAL_HELP}") from None
    if _is_scalar(value):
        return value
    if isinstance(value, list) and all(_is_scalar(item) for item in value):
        return value
    raise PolicyError(f"unsupported value {show(text)}; {_LITERAL_HELP} (lists may not nest)")


def _map_words(text: str) -> str:
    """Turn true/false into True/False outside quoted strings; refuse any other bare word."""
    out: list[str] = []
    position, quote = 0, ""
    while position < len(text):
        char = text[position]
        if quote:
            out.append(char)
            if char == "\\" and position + 1 < len(text):
                out.append(text[position + 1])
                position += 1
            elif char == quote:
                quote = ""
            position += 1
            continue
        if char in "'\"":
            quote = char
            out.append(char)
            position += 1
            continue
        word = _WORD_RE.match(text, position)
        if word is None:
            out.append(char)
            position += 1
            continue
        token = word.group(0)
        if token[0].isalpha() or token[0] == "_":
            if token == "true":
                token = "True"
            elif token == "false":
                token = "False"
            else:
                raise PolicyError(
                    f"unknown word {show(token)} in the value {show(text)}; quote strings ('{token}') "
                    "and write booleans as true/false"
                )
        out.append(token)
        position = word.end()
    return "".join(out)


def _is_scalar(value: object) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, bool | int | str)


def _check_literal_fits(op: str, literal: Literal_) -> tuple[re.Pattern[str] | None, tuple[Network, ...]]:
    """Refuse a literal the operator cannot use; precompile globs and networks."""
    if op in ("in", "not in") and not isinstance(literal, list):
        raise PolicyError(f"'{op}' needs a list, e.g. ['a', 'b']; got {show(literal)}")
    if op in ("<", "<=", ">", ">=") and _kind(literal) not in ("number", "str"):
        raise PolicyError(f"'{op}' needs a number or a string; got {show(literal)}")
    if op == "matches":
        if not isinstance(literal, str):
            raise PolicyError(f"'matches' needs a quoted glob like 'reports.*'; got {show(literal)}")
        return re.compile(fnmatch.translate(literal)), ()
    if op == "in_cidr":
        items = literal if isinstance(literal, list) else [literal]
        networks: list[Network] = []
        for item in items:
            if not isinstance(item, str):
                raise PolicyError(f"'in_cidr' needs CIDR strings like '10.0.0.0/8'; got {show(item)}")
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise PolicyError(
                    f"{show(item)} is not a network; write CIDRs like '10.0.0.0/8' or '::1/128'"
                ) from None
        if not networks:
            raise PolicyError("'in_cidr' needs at least one network, e.g. ['10.0.0.0/8']")
        return None, tuple(networks)
    return None, ()


def _resolve(subject: Mapping[str, object], root: str, keys: tuple[str, ...]) -> tuple[bool, object]:
    value = subject.get(root, _MISSING)
    for key in keys:
        if isinstance(value, Mapping):
            value = value.get(key, _MISSING)
        elif isinstance(value, list | tuple) and _INDEX_RE.fullmatch(key):
            index = int(key)
            value = value[index] if index < len(value) else _MISSING
        else:
            value = _MISSING
        if value is _MISSING:
            return False, None
    if value is _MISSING:
        return False, None
    return True, value


def _kind(value: object) -> str | None:
    """The comparison family of a value; values of different families never compare."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "str"
    if isinstance(value, list | tuple):
        return "list"
    return None


def _equal(left: object, right: object) -> bool:
    kind = _kind(left)
    if kind is None or kind != _kind(right):
        return False
    if kind == "list":
        assert isinstance(left, list | tuple) and isinstance(right, list | tuple)
        return len(left) == len(right) and all(_equal(a, b) for a, b in zip(left, right, strict=True))
    return left == right


def _ordered(value: object, op: str, literal: object) -> bool:
    kind = _kind(value)
    if kind not in ("number", "str") or kind != _kind(literal):
        return False
    left, right = value, literal
    if op == "<":
        return left < right  # type: ignore[operator]
    if op == "<=":
        return left <= right  # type: ignore[operator]
    if op == ">":
        return left > right  # type: ignore[operator]
    return left >= right  # type: ignore[operator]


def _in_networks(value: object, networks: tuple[Network, ...]) -> bool:
    if not isinstance(value, str):
        return False
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        mapped = address.ipv4_mapped
        return any(address in network or mapped in network for network in networks)
    return any(address in network for network in networks)
