"""The payload hash and the binding tag that tie an approval to one action.

payload hash = SHA-256 over the RFC 8785 canonical JSON of (action, params, user, agent).
binding tag  = HMAC-SHA256(binding key, action id || payload hash), a server-side key an
agent never holds, so a transaction an agent opens itself cannot carry a valid tag.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import rfc8785

# Reserved keys of the Rublon transaction params: the gate's own, refused from agents.
PARAM_ACTION_ID = "mfaGateActionId"
PARAM_PAYLOAD_HASH = "mfaGatePayloadHash"
PARAM_BINDING_TAG = "mfaGateBindingTag"
PARAM_SUMMARY = "mfaGateSummary"
RESERVED_PARAMS = frozenset({PARAM_ACTION_ID, PARAM_PAYLOAD_HASH, PARAM_BINDING_TAG, PARAM_SUMMARY})


def payload_hash(*, action: str, params: dict[str, Any], user: str, agent: str) -> str:
    """SHA-256 hex of the canonical JSON of the payload an approval is bound to.

    Raises:
        rfc8785.CanonicalizationError: params hold values JSON cannot carry exactly
            (NaN, infinities, integers beyond 2**53).
    """
    canonical = rfc8785.dumps({"action": action, "params": params, "user": user, "agent": agent})
    return hashlib.sha256(canonical).hexdigest()


def binding_tag(key: bytes, *, action_id: str, payload_hash: str) -> str:
    """The HMAC that only the server can compute for (action id, payload hash)."""
    return hmac.new(key, f"{action_id}\n{payload_hash}".encode(), hashlib.sha256).hexdigest()


def short_code(payload_hash: str) -> str:
    """Six characters of the payload hash, shown on the push so a person can match it."""
    return payload_hash[:6].upper()


def transaction_params(key: bytes, *, action_id: str, payload_hash: str, summary: str) -> dict[str, str]:
    """The params a gate transaction carries and the credentials answer must echo."""
    return {
        PARAM_ACTION_ID: action_id,
        PARAM_PAYLOAD_HASH: payload_hash,
        PARAM_BINDING_TAG: binding_tag(key, action_id=action_id, payload_hash=payload_hash),
        PARAM_SUMMARY: summary,
    }
