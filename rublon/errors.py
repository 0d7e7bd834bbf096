"""The exceptions of the Rublon client: one small hierarchy for the whole boundary.

```
RublonError
├── RublonUnavailable        no usable answer: 5xx, timeout, refused, malformed envelope
│   └── RublonMalformedResponse   a signed OK answer whose result lacks what the call needs
├── RublonBadSignature       an OK answer whose X-Rublon-Signature is missing or wrong
├── RublonApiError           Rublon's HTTP 400 error envelope, one subclass per known name
│   ├── UserNotFound, UserBypassed, UserDenied, ...
└── ChannelClosed            the confirmation WebSocket is closed or could not be opened
```

Callers fail closed on every one of them; which fail mode applies is their decision,
not this package's. No message built here ever contains the Secret Key or an access
token: the client redacts them from anything the server echoes back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class RublonError(Exception):
    """Base of every error raised by the Rublon client and the confirmation channel."""


class RublonUnavailable(RublonError):
    """Rublon gave no usable answer: any HTTP status other than 200/400, a timeout, a
    connection error, or a body that is not the documented envelope.

    What to do next: apply the caller's fail mode (deny unless a policy says bypass) and
    retry later with backoff.
    """


class RublonMalformedResponse(RublonUnavailable):
    """A correctly signed OK answer whose `result` lacks a field the call needs, or holds
    it with the wrong type. Treated like unavailability: nothing in it can be trusted as
    an answer.
    """


class RublonBadSignature(RublonError):
    """An OK answer whose `X-Rublon-Signature` header is missing or does not match its body.

    What to do next: nothing in that answer may be used. Check that the configured Secret
    Key belongs to the System Token, and suspect anything between this host and Rublon.
    """


class RublonApiError(RublonError):
    """Rublon answered with its HTTP 400 error envelope.

    Attributes:
        exception: the wire name, e.g. ``"UserNotFoundException"``.
        code: the numeric error code from the envelope, when there is one (45 for a
            bypassed user).
        message: Rublon's `errorMessage`, with secrets redacted.
        details: the envelope's `details` (``None`` or an object), as sent.
        field: the field a `MissingFieldException` names (`result.name`), else ``None``.
    """

    def __init__(
        self,
        exception: str,
        code: int | None,
        message: str,
        details: Any = None,
        field: str | None = None,
    ) -> None:
        self.exception = exception
        self.code = code
        self.message = message
        self.details = details
        self.field = field
        text = f"Rublon refused the call: {exception}"
        if code is not None:
            text += f" (code {code})"
        if field:
            text += f", field {field!r}"
        if message:
            text += f": {message}"
        super().__init__(text)


class AccessTokenExpired(RublonApiError):
    """The access token is too old to be exchanged; the approval has to be asked again."""


class ApplicationDenied(RublonApiError):
    """The application is not allowed to make this call."""


class ApplicationDisabled(RublonApiError):
    """The application is disabled in the Rublon Admin Console."""


class ApplicationNotFound(RublonApiError):
    """The System Token names no application; check RUBLON_SYSTEM_TOKEN."""


class BusinessEditionLimitExceeded(RublonApiError):
    """The organisation's Business Edition limit is exceeded."""


class EmptyInput(RublonApiError):
    """A required field was sent empty."""


class ForbiddenMethod(RublonApiError):
    """The authentication method is not allowed for this user or transaction."""


class InvalidJSON(RublonApiError):
    """Rublon could not read the request body as JSON."""


class InvalidSignature(RublonApiError):
    """Rublon rejected the request signature; check that RUBLON_SECRET_KEY matches the System Token."""


class MissingField(RublonApiError):
    """A required field is missing from the request; `.field` names it."""


class MissingHeader(RublonApiError):
    """A required HTTP header (e.g. X-Rublon-Signature) is missing from the request."""


class PersonalEditionLimited(RublonApiError):
    """The call is not available in the Personal Edition."""


class SubscriptionExpired(RublonApiError):
    """The organisation's Rublon subscription has expired."""


class TransactionLocked(RublonApiError):
    """The transaction can no longer be changed (it is final or in use)."""


class UnauthorizedUser(RublonApiError):
    """The user may not authenticate to this application."""


class UnknownAccessToken(RublonApiError):
    """The access token is unknown or was already exchanged (tokens are single use)."""


class UnsupportedVersion(RublonApiError):
    """Rublon does not support this client's version."""


class UserBypassed(RublonApiError):
    """The user is set to bypass MFA (code 45). For a gate on a critical action this
    project's default is: not approved.
    """


class UserDenied(RublonApiError):
    """An administrator denied this user; the action is blocked, not rejected."""


class UserNotFound(RublonApiError):
    """Rublon knows no such user."""


#: Wire name (as sent in `result.exception`) -> exception class. Names not listed here
#: become a plain `RublonApiError`, so a new server-side name never breaks the client.
API_EXCEPTIONS: dict[str, type[RublonApiError]] = {
    "AccessTokenExpiredException": AccessTokenExpired,
    "ApplicationDeniedException": ApplicationDenied,
    "ApplicationDisabledException": ApplicationDisabled,
    "ApplicationNotFoundException": ApplicationNotFound,
    "BusinessEditionLimitExceededException": BusinessEditionLimitExceeded,
    "EmptyInputException": EmptyInput,
    "ForbiddenMethodException": ForbiddenMethod,
    "InvalidJSONException": InvalidJSON,
    "InvalidSignatureException": InvalidSignature,
    "MissingFieldException": MissingField,
    "MissingHeaderException": MissingHeader,
    "PersonalEditionLimitedException": PersonalEditionLimited,
    "SubscriptionExpiredException": SubscriptionExpired,
    "TransactionLockedException": TransactionLocked,
    "UnauthorizedUserException": UnauthorizedUser,
    "UnknownAccessTokenException": UnknownAccessToken,
    "UnsupportedVersionException": UnsupportedVersion,
    "UserBypassedException": UserBypassed,
    "UserDeniedException": UserDenied,
    "UserNotFoundException": UserNotFound,
}


def api_error_from_result(result: Mapping[str, Any], *, redact: tuple[str, ...] = ()) -> RublonApiError:
    """Build the exception for the `result` object of an HTTP 400 error envelope.

    Args:
        result: the envelope's `result`; must hold `exception` as a string (the caller
            checks that, since without it the envelope is malformed).
        redact: secret values (Secret Key, access tokens) to blank out of the message and
            the field name, in case the server echoes them back.

    Returns:
        An instance of the `API_EXCEPTIONS` class for the wire name, or of
        `RublonApiError` for a name this client does not know.
    """
    name = str(result["exception"])
    raw_code = result.get("code")
    # bool is an int subclass; a `true` code is not a code.
    code = raw_code if isinstance(raw_code, int) and not isinstance(raw_code, bool) else None
    raw_message = result.get("errorMessage")
    message = redact_secrets(raw_message if isinstance(raw_message, str) else "", redact)
    raw_field = result.get("name")
    field = redact_secrets(raw_field, redact) if isinstance(raw_field, str) else None
    cls = API_EXCEPTIONS.get(name, RublonApiError)
    return cls(redact_secrets(name, redact), code, message, result.get("details"), field)


def redact_secrets(text: str, secrets: tuple[str, ...]) -> str:
    """Return `text` with every non-empty value of `secrets` replaced by ``[redacted]``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return text


class ChannelClosed(RublonError):
    """The confirmation WebSocket was closed by the server or the network, or could not
    be opened.

    Attributes:
        code: the WebSocket close code the server sent (4401: bad subscribe signature or
            unknown System Token), or ``None`` when the connection dropped without a close
            frame or never opened.
        reason: the close reason, or what went wrong while opening.

    What to do next: for 4401 fix the credentials (retrying cannot help); otherwise open
    the channel again with backoff and re-subscribe every pending tid.
    """

    def __init__(self, code: int | None, reason: str = "") -> None:
        self.code = code
        self.reason = reason
        text = "confirmation channel closed"
        if code is not None:
            text += f" with code {code}"
        if reason:
            text += f": {reason}"
        super().__init__(text)
