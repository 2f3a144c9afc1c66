"""Exceptions: every error answer of the API becomes an :class:`ApiError` carrying the
API's stable ``code`` and its ``message``; the subclass says what kind of failure it is."""

from __future__ import annotations

from typing import Optional


class StreamPCAError(Exception):
    """Base class of every exception this package raises on purpose."""


class ApiError(StreamPCAError):
    """The service answered with an error.

    Attributes:
        status: the HTTP status (e.g. 404).
        code: the API's stable error code (e.g. ``"model_not_found"``).
        message: the API's message, which names the problem.
        retry_after: seconds from a ``Retry-After`` header, if any.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        retry_after: Optional[float] = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after


class NotFoundError(ApiError, LookupError):
    """404: no such model (``model_not_found``) or route."""


class ConflictError(ApiError):
    """409: ``model_exists``, ``not_fitted`` or ``too_many_models``."""


class InvalidInputError(ApiError, ValueError):
    """400, 413, 415 or 422: the request was refused as invalid (bad parameter, shape,
    non-finite value, malformed body, body or row count over a limit)."""


class UnauthorizedError(ApiError, PermissionError):
    """401 ``unauthorized``: no API key, or a wrong one."""


class ForbiddenError(UnauthorizedError):
    """403 ``forbidden``: the read key was used on a write route."""


class OverloadedError(ApiError):
    """503 (``overloaded``, ``timeout``, ``unavailable``, ``storage_unavailable``) that
    persisted through the client's retries."""


class ServerError(ApiError):
    """Any other 5xx (``internal``)."""


class FitTimeoutError(StreamPCAError, TimeoutError):
    """:meth:`Client.wait_until_fitted` gave up before a fit covered every batch."""


class ServiceUnavailableError(StreamPCAError, ConnectionError):
    """The service could not be reached (connection refused, reset, or timed out)."""


def error_for(
    status: int, code: str, message: str, retry_after: Optional[float] = None
) -> ApiError:
    """The exception for an error answer."""
    if status == 404:
        cls: type = NotFoundError
    elif status == 409:
        cls = ConflictError
    elif status in (400, 413, 415, 422):
        cls = InvalidInputError
    elif status == 401:
        cls = UnauthorizedError
    elif status == 403:
        cls = ForbiddenError
    elif status == 503:
        cls = OverloadedError
    elif status >= 500:
        cls = ServerError
    else:
        cls = ApiError
    return cls(status, code, message, retry_after)
