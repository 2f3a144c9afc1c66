"""Python client for streampca, the service that learns the ordered principal
components of a live data stream.

- :class:`Client` / :class:`AsyncClient`: the HTTP API with numpy arrays in and out
  (binary ``.npy``/``.npz`` on the wire).
- :mod:`streampca.sklearn`: :class:`~streampca.sklearn.StreamPCA`, a scikit-learn
  estimator backed by the service (needs the ``sklearn`` extra).
"""

from ._errors import (
    ApiError,
    ConflictError,
    FitTimeoutError,
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
    OverloadedError,
    ServerError,
    ServiceUnavailableError,
    StreamPCAError,
    UnauthorizedError,
)
from ._types import Components, IngestReceipt, Limits, ModelStatus, Projection
from .client import DEFAULT_URL, AsyncClient, Client

__all__ = [
    "Client",
    "AsyncClient",
    "DEFAULT_URL",
    "ModelStatus",
    "IngestReceipt",
    "Components",
    "Projection",
    "Limits",
    "StreamPCAError",
    "ApiError",
    "NotFoundError",
    "ConflictError",
    "InvalidInputError",
    "UnauthorizedError",
    "ForbiddenError",
    "OverloadedError",
    "ServerError",
    "FitTimeoutError",
    "ServiceUnavailableError",
]
