"""One exception root for FreshRec.

Every subclass carries a user-facing message and the HTTP status the serving tier or the CLI maps it
to, so a caller never has to translate exceptions by hand.
"""

from __future__ import annotations


class FreshRecError(Exception):
    """Root of every error FreshRec raises on purpose."""

    http_status: int = 500
    exit_code: int = 1

    def __init__(self, message: str, *, details: dict | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}

    def to_dict(self) -> dict:
        return {"error": type(self).__name__, "message": self.message, **({"details": self.details} if self.details else {})}


class ConfigError(FreshRecError):
    """Settings or a config file are invalid."""

    http_status = 500
    exit_code = 2


class InvalidInput(FreshRecError):
    """A caller passed something malformed (bad CLI argument, bad request field)."""

    http_status = 422
    exit_code = 2


class NotFound(FreshRecError):
    """A version, alias, partition or file that was asked for does not exist."""

    http_status = 404
    exit_code = 3


class Conflict(FreshRecError):
    """A compare-and-set or state transition lost against a concurrent change or is not allowed."""

    http_status = 409
    exit_code = 4


class DataValidationError(FreshRecError):
    """A batch failed validation (schema, quarantine share, expectation suite); nothing was published."""

    http_status = 422
    exit_code = 5


class ArtifactIntegrityError(FreshRecError):
    """An artifact is missing or its checksum does not match the registry."""

    http_status = 500
    exit_code = 6


class GateFailed(FreshRecError):
    """A candidate model failed a quality or latency gate; it is recorded as rejected."""

    http_status = 409
    exit_code = 7


class StageFailed(FreshRecError):
    """A pipeline stage (features, retrain, export, release) ran but could not produce its output."""

    http_status = 500
    exit_code = 11


class ReleaseRolledBack(FreshRecError):
    """A canary release was rolled back (or rejected) instead of promoted."""

    http_status = 409
    exit_code = 8


class Overloaded(FreshRecError):
    """The serving tier is past capacity; the caller should retry later."""

    http_status = 503
    exit_code = 9

    def __init__(self, message: str = "server overloaded, retry later", *, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Unauthorized(FreshRecError):
    """An admin route was called without a valid bearer token."""

    http_status = 401
    exit_code = 10
