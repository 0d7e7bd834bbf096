"""Read a policy file into a `Policy`, or say precisely what is wrong with it.

Every failure is a `PolicyError` whose message starts with the file, then the rule (name
and index) and the field, then what to do, e.g.

    policy.toml: rule 'x' (rules[2]).when[0]: unknown operator '=~'; use one of ==, !=, ...
"""

import hashlib
import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from policies.errors import PolicyError
from policies.model import Policy, known_keys

#: The policy shipped with the package, used when a deployment names none.
DEFAULT_POLICY_PATH = Path(__file__).with_name("default_policy.toml")


def load_policy(path: str | os.PathLike[str]) -> Policy:
    """Read and validate a policy file.

    In: the path of a TOML policy file. Out: a `Policy` whose `policy_hash` is the SHA-256
    of the file's bytes. Errors: `PolicyError` if the file cannot be read, is not UTF-8, is
    not valid TOML, or breaks a rule of the format (the message names file, rule and field).
    """
    source = os.fspath(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise PolicyError(f"{source}: cannot read the policy file ({exc.strerror}); check the path") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise PolicyError(f"{source}: the policy file is not UTF-8 text; save it as UTF-8") from None
    return _parse(text, source=source, sha256=hashlib.sha256(data).hexdigest())


def parse_policy(text: str, *, source: str = "<string>") -> Policy:
    """Validate policy text.

    In: the TOML text and a `source` name used in messages. Out: a `Policy` whose
    `policy_hash` is the SHA-256 of the text's UTF-8 bytes. Errors: `PolicyError` as for
    `load_policy`.
    """
    sha256 = hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()
    return _parse(text, source=source, sha256=sha256)


def _parse(text: str, *, source: str, sha256: str) -> Policy:
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{source}: not valid TOML: {exc}; fix the syntax at that line and column") from None
    try:
        return Policy.model_validate(document, context={"source": source, "sha256": sha256})
    except ValidationError as exc:
        problems = [_describe(error, document, source) for error in exc.errors(include_url=False)]
        raise PolicyError("\n".join(problems)) from None


def _describe(error: ErrorDetails, document: dict[str, Any], source: str) -> str:
    """One line for one validation error: where, then what is wrong and what to do."""
    context = error.get("ctx") or {}
    location: list[str | int] = list(error["loc"])
    at = str(context.get("at", ""))
    if at:
        location += [int(part) if part.isdigit() else part for part in at.split(".")]
    kind = error["type"]
    if kind == "policy":
        message = str(context["message"])
    elif kind == "extra_forbidden":
        allowed = ", ".join(known_keys(tuple(location[:-1])))
        message = f"unknown key '{location[-1]}'; remove it or use one of: {allowed}"
    elif kind == "missing":
        example = "1 at the top of the file" if location == ["version"] else "..."
        message = f"required, but missing; add {location[-1]} = {example}" if location else "required, but missing"
    else:
        message = error["msg"]
    return f"{source}: {_where(location, document)}: {message}"


def _where(location: list[str | int], document: dict[str, Any]) -> str:
    """Render a location: rule 'x' (rules[2]).when[0], defaults.methods[1], version."""
    if not location:
        return "(top level)"
    text = ""
    parts = list(location)
    if len(parts) >= 2 and parts[0] == "rules" and isinstance(parts[1], int):
        index = parts[1]
        rules = document.get("rules")
        rule = rules[index] if isinstance(rules, list) and index < len(rules) else None
        name = rule.get("name") if isinstance(rule, dict) else None
        text = f"rule {name!r} (rules[{index}])" if isinstance(name, str) else f"rules[{index}]"
        parts = parts[2:]
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text
