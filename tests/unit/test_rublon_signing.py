"""Signatures: the HMAC-SHA256 of exact bytes, and of canonical subscribe messages."""

from __future__ import annotations

import json

from rublon.signing import canonical_message, sign, sign_message, verify, verify_message

# The well-known HMAC-SHA256 test vector (key "key").
FOX = b"The quick brown fox jumps over the lazy dog"
FOX_SIGNATURE = "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"


def test_sign_is_lower_case_hex_hmac_sha256_of_the_exact_bytes() -> None:
    assert sign("key", FOX) == FOX_SIGNATURE
    assert sign("key", FOX + b" ") != FOX_SIGNATURE


def test_verify_accepts_the_right_signature_in_either_case() -> None:
    assert verify("key", FOX, FOX_SIGNATURE)
    assert verify("key", FOX, FOX_SIGNATURE.upper())


def test_verify_refuses_missing_wrong_or_odd_signatures() -> None:
    assert not verify("key", FOX, None)
    assert not verify("key", FOX, "")
    assert not verify("other key", FOX, FOX_SIGNATURE)
    assert not verify("key", FOX + b"!", FOX_SIGNATURE)
    assert not verify("key", FOX, FOX_SIGNATURE[:-1])
    assert not verify("key", FOX, "é" * 64)


def test_canonical_message_is_compact_json_with_sorted_keys() -> None:
    assert canonical_message({"tid": "t1", "type": "subscribe", "a": [1, {"z": 1, "b": "é"}]}) == (
        '{"a":[1,{"b":"é","z":1}],"tid":"t1","type":"subscribe"}'.encode()
    )


def test_sign_message_covers_the_message_without_its_signature_field() -> None:
    message = {"type": "subscribe", "systemToken": "T", "tid": "t1"}
    expected = sign("secret", b'{"systemToken":"T","tid":"t1","type":"subscribe"}')

    assert sign_message("secret", message) == expected
    assert sign_message("secret", {**message, "signature": "anything"}) == expected


def test_verify_message_accepts_only_an_unaltered_signed_message() -> None:
    message = {"type": "subscribe", "systemToken": "T", "tid": "t1"}
    signed = {**message, "signature": sign_message("secret", message)}
    # Key order on the wire does not matter: both ends canonicalize.
    reordered = json.loads(json.dumps(dict(reversed(list(signed.items())))))

    assert verify_message("secret", signed)
    assert verify_message("secret", reordered)
    assert not verify_message("other", signed)
    assert not verify_message("secret", {**signed, "tid": "t2"})
    assert not verify_message("secret", message)
    assert not verify_message("secret", {**message, "signature": 42})
