"""One error hierarchy for the whole pipeline.

Step Functions `Retry`/`Catch` match on the class name (Lambda reports it as
`errorType`), and the HTTP layer maps these to status codes in one place
(`ctr.serving.errors`). Keep names stable: the state machine refers to them.
"""

from __future__ import annotations


class DomainError(Exception):
    """Base of every error the pipeline raises on purpose."""

    http_status = 500

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, object]:
        return {"error": type(self).__name__, "message": self.message, **self.details}


class ConfigError(DomainError):
    """A required setting is missing or invalid (fails at cold start)."""


class TransientError(DomainError):
    """Worth retrying: throttling, a lost race on a conditional write, a server briefly down."""

    http_status = 503


class ConflictError(TransientError):
    """A conditional write lost a race with another writer; retry re-reads state."""


class DataError(DomainError):
    """Input data is unusable as a whole (e.g. reject share above the threshold)."""

    http_status = 422


class NotFoundError(DomainError):
    http_status = 404


class NoModelError(DomainError):
    """No production model exists yet (serving answers 503, not 500)."""

    http_status = 503


class ValidationError(DomainError):
    """A request or event failed validation; `details['errors']` lists field-level problems."""

    http_status = 422
