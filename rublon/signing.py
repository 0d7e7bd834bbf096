"""Request, response and subscribe signatures (RUBLON_API.md section 1).

A signature is the lower-case hex HMAC-SHA256 of the exact bytes, keyed with the app's
Secret Key. There is no timestamp and no path in it, which is why the client serializes
a body once and sends those same bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

#: Name of the HTTP header that carries a signature, on requests and OK responses.
SIGNATURE_HEADER = "X-Rublon-Signature"

#: Field of a WebSocket subscribe message that carries its signature (project-defined;
#: repeated in promptless_mapping so both read the same).
_MESSAGE_SIGNATURE_FIELD = "signature"


def sign(secret: str, body: bytes) -> str:
    """Sign `body` with `secret`.

    Returns:
        64 lower-case hex characters (HMAC-SHA256).
    """
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, signature: str | None) -> bool:
    """Tell whether `signature` is the signature of `body` under `secret`.

    The comparison is constant-time. A missing (``None``) or empty signature is never
    valid; hex case is ignored. Never raises for odd input (non-ASCII, wrong length):
    it is simply not valid.
    """
    if not signature:
        return False
    expected = sign(secret, body).encode("ascii")
    # Compare bytes: hmac.compare_digest refuses non-ASCII str, and a header may hold anything.
    given = signature.strip().lower().encode("utf-8", errors="replace")
    return hmac.compare_digest(expected, given)


def canonical_message(obj: Mapping[str, Any]) -> bytes:
    """Serialize a WebSocket message the one way both ends sign it: compact JSON
    (no spaces), keys sorted, UTF-8 (non-ASCII kept as is).

    Raises:
        TypeError / ValueError: `obj` holds something JSON cannot represent.
    """
    return json.dumps(obj, separators=(",", ":"), sort_keys=True, ensure_ascii=False, allow_nan=False).encode("utf-8")


def sign_message(secret: str, obj: Mapping[str, Any]) -> str:
    """Signature of a subscribe message: the HMAC of `canonical_message` of the message
    without its `signature` field (so a message can be signed or checked as received).
    """
    unsigned = {key: value for key, value in obj.items() if key != _MESSAGE_SIGNATURE_FIELD}
    return sign(secret, canonical_message(unsigned))


def verify_message(secret: str, obj: Mapping[str, Any]) -> bool:
    """Tell whether `obj` carries in its `signature` field the valid `sign_message`
    signature (constant-time). A missing or non-string signature is never valid.

    Raises:
        TypeError / ValueError: the message holds something JSON cannot represent.
    """
    signature = obj.get(_MESSAGE_SIGNATURE_FIELD)
    unsigned = {key: value for key, value in obj.items() if key != _MESSAGE_SIGNATURE_FIELD}
    return verify(secret, canonical_message(unsigned), signature if isinstance(signature, str) else None)
