"""The identity module's errors: a stable ``code`` and an HTTP status each."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from engineroom.core.errors import AppError, Conflict, Forbidden, NotFound, Unauthorized

_BEARER = {"WWW-Authenticate": "Bearer"}


class TokenInvalid(Unauthorized):
    code = "token_invalid"

    def __init__(self, message: str = "The access token is not valid.") -> None:
        super().__init__(message, headers=_BEARER)


class TokenExpired(Unauthorized):
    code = "token_expired"

    def __init__(self, message: str = "The access token has expired.") -> None:
        super().__init__(message, headers=_BEARER)


class InvalidCredentials(Unauthorized):
    """Wrong email or password; deliberately the same for both (no enumeration)."""

    code = "invalid_credentials"

    def __init__(self, message: str = "The email or password is incorrect.") -> None:
        super().__init__(message)


class RefreshTokenInvalid(Unauthorized):
    code = "refresh_token_invalid"

    def __init__(self, message: str = "The refresh token is not valid.") -> None:
        super().__init__(message)


class AccountDisabled(Forbidden):
    code = "account_disabled"


class UserNotFound(NotFound):
    code = "user_not_found"


class RoleNotFound(NotFound):
    code = "role_not_found"


class ValidationFailed(AppError):
    """Input that is well-formed JSON but breaks a rule (taken email, weak password)."""

    code = "validation_failed"
    status = 422

    def __init__(self, field_errors: Mapping[str, Sequence[str]]) -> None:
        super().__init__(
            "The request is not valid; see errors for each field.", field_errors=field_errors
        )


class EmailTaken(Conflict):
    code = "email_taken"


class UsernameTaken(Conflict):
    code = "username_taken"


class RoleExists(Conflict):
    code = "role_exists"


class BuiltinRole(Conflict):
    """Built-in roles cannot be deleted or redefined."""

    code = "builtin_role"


class WrongPassword(Forbidden):
    """The current password given to confirm a change is wrong."""

    code = "wrong_password"


class LastAdmin(Conflict):
    code = "last_admin"


class SecondFactorRequired(Forbidden):
    """The account uses MFA and this flow has no second step (RealWorld login)."""

    code = "mfa_required"
