"""Every error the system reports on purpose, as one tree.

    OAError                      code              HTTP
    ├── InvalidRequest           invalid_request   400
    │   └── PayloadTooLarge      invalid_request   413
    ├── Unauthorized             unauthorized      401
    │   └── TokenRejected        (one code each)   401   a sync token the verifier refused:
    │       ├── TokenMalformed       token_malformed       not three base64url JSON parts
    │       ├── TokenTooLarge        token_too_large       longer than the verifier accepts
    │       ├── AlgNotAllowed        alg_not_allowed       `none`, HS256-with-public-key, ...
    │       ├── UnknownKid           unknown_kid           not in the JWKS, even after a refetch
    │       ├── BadSignature         bad_signature         tampered header, payload or scopes
    │       ├── WrongIssuer          wrong_issuer
    │       ├── WrongAudience        wrong_audience        minted for another resource
    │       ├── TokenExpired         token_expired
    │       ├── TokenNotYetValid     token_not_yet_valid   `nbf`/`iat` in the future
    │       ├── MissingClaim         missing_claim
    │       ├── BadClaims            bad_claims            wrong types, sub/user mismatch, TTL
    │       ├── BadScopes            bad_scopes            unknown or empty sync scopes
    │       ├── TokenRevoked         token_revoked         its `jti` was revoked
    │       ├── SessionRevoked       session_revoked       its session (`sid`) was revoked
    │       └── OriginNotAllowed     origin_not_allowed    Origin outside the allow-list
    ├── Forbidden                forbidden         403
    │   └── ForbiddenTopic       forbidden_topic   403   the sync token does not grant the topic
    ├── NotFound                 not_found         404
    ├── Conflict                 conflict          409
    │   ├── InvalidTransition    conflict          409
    │   ├── SeqMismatch          conflict          409
    │   └── IdempotencyConflict  conflict          409
    ├── StaleCursor              stale_cursor      410
    ├── RateLimited              rate_limited      429
    └── InternalError            internal_error    500

Each carries a message that says what was wrong and how to fix it, and `details` a
client can act on. The HTTP layer turns them into `{"error": {code, message, details}}`.
"""

from __future__ import annotations

from typing import Any, ClassVar


class OAError(Exception):
    code: ClassVar[str] = "internal_error"
    status: ClassVar[int] = 500

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details or {}

    def envelope(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class InvalidRequest(OAError):
    code = "invalid_request"
    status = 400


class PayloadTooLarge(InvalidRequest):
    status = 413


class Unauthorized(OAError):
    code = "unauthorized"
    status = 401


class TokenRejected(Unauthorized):
    """A sync token was refused; `code` says exactly why (see the tree above)."""

    code = "token_rejected"


class TokenMalformed(TokenRejected):
    code = "token_malformed"


class TokenTooLarge(TokenRejected):
    code = "token_too_large"


class AlgNotAllowed(TokenRejected):
    code = "alg_not_allowed"


class UnknownKid(TokenRejected):
    code = "unknown_kid"


class BadSignature(TokenRejected):
    code = "bad_signature"


class WrongIssuer(TokenRejected):
    code = "wrong_issuer"


class WrongAudience(TokenRejected):
    code = "wrong_audience"


class TokenExpired(TokenRejected):
    code = "token_expired"


class TokenNotYetValid(TokenRejected):
    code = "token_not_yet_valid"


class MissingClaim(TokenRejected):
    code = "missing_claim"


class BadClaims(TokenRejected):
    code = "bad_claims"


class BadScopes(TokenRejected):
    code = "bad_scopes"


class TokenRevoked(TokenRejected):
    code = "token_revoked"


class SessionRevoked(TokenRejected):
    code = "session_revoked"


class OriginNotAllowed(TokenRejected):
    code = "origin_not_allowed"


class Forbidden(OAError):
    code = "forbidden"
    status = 403


class ForbiddenTopic(Forbidden):
    code = "forbidden_topic"


class NotFound(OAError):
    code = "not_found"
    status = 404


class Conflict(OAError):
    code = "conflict"
    status = 409


class InvalidTransition(Conflict):
    """The run (or worker) state machine does not allow this event now."""


class SeqMismatch(Conflict):
    """`expected_previous_seq` is not the stream's current last seq."""


class IdempotencyConflict(Conflict):
    """An idempotency key (or frame id) was reused with a different payload."""


class StaleCursor(OAError):
    code = "stale_cursor"
    status = 410


class RateLimited(OAError):
    """Too many attempts (e.g. failed sign-ins); `details.retry_after_s` says when to retry."""

    code = "rate_limited"
    status = 429


class InternalError(OAError):
    code = "internal_error"
    status = 500


ERROR_CODES = (
    "unauthorized",
    "forbidden",
    "invalid_request",
    "not_found",
    "conflict",
    "stale_cursor",
    "internal_error",
)
