"""Project-defined wire details of the promptless mode and its confirmation channel.

These paths, field names, message types and close codes are DEFINED BY THIS PROJECT.
They are NOT Rublon's published format: Rublon documents that a promptless mode exists
(app type "Other (Promptless)") but its wire format is not public in any source we could
read (RUBLON_API.md section 3). Every project-defined name lives here, and only here, so
that this one module can be swapped when Rublon's published format is at hand. The
client and the simulator both read it, so they always agree with each other.

Documented calls (app/init, transaction/init, transaction/credentials) keep their paths
in `rublon.client`; the only project addition to them is `CREDENTIALS_TID` below.
"""

from __future__ import annotations

from typing import Final

# --- HTTP calls (same transport, signing and envelope as the documented calls) ---

USER_VERIFY_PATH: Final = "/api/promptless/user/verify"
TRANSACTION_INIT_PATH: Final = "/api/promptless/transaction/init"
TRANSACTION_METHOD_PATH: Final = "/api/promptless/transaction/method"
TRANSACTION_CODE_PATH: Final = "/api/promptless/transaction/code"
TRANSACTION_CANCEL_PATH: Final = "/api/promptless/transaction/cancel"

# --- request fields (systemToken is the documented one) ---

FIELD_SYSTEM_TOKEN: Final = "systemToken"
FIELD_USERNAME: Final = "username"
FIELD_USER_EMAIL: Final = "userEmail"
FIELD_PARAMS: Final = "params"
FIELD_TID: Final = "tid"
FIELD_METHOD: Final = "method"
FIELD_CODE: Final = "code"

# --- OK result fields ---

RESULT_EXISTS: Final = "exists"
RESULT_STATUS: Final = "status"
RESULT_METHODS: Final = "methods"
RESULT_TID: Final = "tid"
RESULT_EXPIRES_IN: Final = "expiresIn"
RESULT_METHOD: Final = "method"
RESULT_SENT: Final = "sent"
RESULT_ACCEPTED: Final = "accepted"
RESULT_CANCELLED: Final = "cancelled"

#: The project's addition to the documented transaction/credentials result: the
#: transaction id the token was issued for, checked against the held action.
CREDENTIALS_TID: Final = "tid"

# --- user statuses returned by user/verify ---

USER_STATUS_ACTIVE: Final = "active"
USER_STATUS_BYPASS: Final = "bypass"
USER_STATUS_DENIED: Final = "denied"

# --- authentication methods ---

METHOD_PUSH: Final = "push"
METHOD_TOTP: Final = "totp"
METHOD_PHONE_CALL: Final = "phoneCall"
METHOD_SMS: Final = "sms"
METHOD_YUBIKEY: Final = "yubikey"
METHOD_EMAIL: Final = "email"
DEFAULT_METHOD: Final = METHOD_PUSH
ALL_METHODS: Final = frozenset({METHOD_PUSH, METHOD_TOTP, METHOD_PHONE_CALL, METHOD_SMS, METHOD_YUBIKEY, METHOD_EMAIL})
#: Methods completed by the person submitting a code through transaction/code.
CODE_METHODS: Final = frozenset({METHOD_TOTP, METHOD_SMS, METHOD_YUBIKEY})

# --- confirmation channel (WebSocket) ---

WS_PATH: Final = "/api/promptless/ws"

MSG_TYPE: Final = "type"
MSG_TID: Final = "tid"
MSG_SYSTEM_TOKEN: Final = "systemToken"
MSG_SIGNATURE: Final = "signature"
MSG_ACCESS_TOKEN: Final = "accessToken"
#: Optional human-readable detail on an `error` message.
MSG_ERROR: Final = "error"

TYPE_SUBSCRIBE: Final = "subscribe"
TYPE_PENDING: Final = "pending"
TYPE_CONFIRMED: Final = "confirmed"
TYPE_DENIED: Final = "denied"
TYPE_EXPIRED: Final = "expired"
TYPE_ERROR: Final = "error"
#: Exactly one of these ends a subscription.
FINAL_TYPES: Final = frozenset({TYPE_CONFIRMED, TYPE_DENIED, TYPE_EXPIRED})
SERVER_TYPES: Final = frozenset({TYPE_PENDING, TYPE_ERROR}) | FINAL_TYPES

#: Close code: bad subscribe signature or unknown System Token. Retrying cannot help.
CLOSE_UNAUTHORIZED: Final = 4401
#: Close code: a client message that is not a JSON object of a known type.
CLOSE_BAD_MESSAGE: Final = 4400
