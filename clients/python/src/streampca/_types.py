"""What the client methods return: small dataclasses of plain values and numpy arrays."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import numpy as np


@dataclass(frozen=True)
class ModelStatus:
    """A model's configuration and counters (``GET /v1/models/{name}``).

    ``samples`` is a weighted count under forgetting (``half_life``); ``sequence`` is the
    last acknowledged batch, ``fitted_sequence`` the batch the published fit saw;
    ``loss`` and ``max_error_bound`` (radians) are ``None`` before the first fit.
    ``raw`` is the whole JSON object, fields this version does not know included.
    """

    name: str
    dim: int
    components: int
    target_dim: Optional[int]
    half_life: Optional[float]
    optimizer: Optional[str]
    tolerance: Optional[float]
    samples: float
    batches: int
    sequence: int
    fitted_sequence: int
    steps: int
    loss: Optional[float]
    converged: bool
    max_error_bound: Optional[float]
    raw: Dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @property
    def fitted(self) -> bool:
        """True once a fit has been published."""
        return self.max_error_bound is not None

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "ModelStatus":
        return cls(
            name=d["name"],
            dim=int(d["dim"]),
            components=int(d["components"]),
            target_dim=d.get("target_dim"),
            half_life=d.get("half_life"),
            optimizer=d.get("optimizer"),
            tolerance=d.get("tolerance"),
            samples=float(d.get("samples", 0.0)),
            batches=int(d.get("batches", 0)),
            sequence=int(d.get("sequence", 0)),
            fitted_sequence=int(d.get("fitted_sequence", 0)),
            steps=int(d.get("steps", 0)),
            loss=d.get("loss"),
            converged=bool(d.get("converged", False)),
            max_error_bound=d.get("max_error_bound"),
            raw=dict(d),
        )


@dataclass(frozen=True)
class IngestReceipt:
    """What :meth:`Client.ingest` sent: ``rows`` in ``batches`` requests, the model's
    ``samples`` after the last one, and the ``first_sequence`` .. ``sequence`` numbers
    the batches got."""

    rows: int
    batches: int
    samples: float
    first_sequence: int
    sequence: int


@dataclass(frozen=True)
class Components:
    """The latest published fit (``GET /v1/models/{name}/components``).

    Arrays (k = components returned, n = dim; empty before the first fit):
    ``components`` (k×n, unit rows, ordered), ``eigenvalues`` (k, sample covariance,
    divisor N−1), ``explained_variance_ratio`` (k), ``error_bounds`` (k, radians to the
    exact eigenvector), ``relative_gaps`` (k), ``mean`` (n), ``mean_y`` (target_dim, for
    regression models, else ``None``). ``samples`` is the (weighted) count N the fit saw,
    ``sequence`` the batch it covered.
    """

    components: np.ndarray
    eigenvalues: np.ndarray
    explained_variance_ratio: np.ndarray
    error_bounds: np.ndarray
    relative_gaps: np.ndarray
    mean: np.ndarray
    mean_y: Optional[np.ndarray]
    samples: float
    sequence: int
    steps: int
    converged: bool
    loss: Optional[float]

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "Components":
        mean = np.asarray(d.get("mean", []), dtype=np.float64)
        comps = np.asarray(d.get("components", []), dtype=np.float64)
        if comps.size == 0:
            comps = np.zeros((0, mean.shape[0]))
        vec = lambda key: np.asarray(d.get(key, []), dtype=np.float64)  # noqa: E731
        mean_y = d.get("mean_y")
        return cls(
            components=comps,
            eigenvalues=vec("eigenvalues"),
            explained_variance_ratio=vec("explained_variance_ratio"),
            error_bounds=vec("error_bounds"),
            relative_gaps=vec("relative_gaps"),
            mean=mean,
            mean_y=None if mean_y is None else np.asarray(mean_y, dtype=np.float64),
            samples=float(d.get("samples", 0.0)),
            sequence=int(d.get("sequence", 0)),
            steps=int(d.get("steps", 0)),
            converged=bool(d.get("converged", False)),
            loss=d.get("loss"),
        )


@dataclass(frozen=True)
class Projection:
    """Rows projected onto the first ``k`` components (``POST .../project``).

    ``scores`` (rows×k; divided by √eigenvalue when whitened), ``residual_norms``
    (rows: the norm of what the k components miss), ``reconstructions`` (rows×n, when
    asked for, else ``None``), the fit's ``sequence``, and ``arrays``: every array of the
    answer by name, including any this version does not know (e.g. monitoring
    statistics).
    """

    scores: np.ndarray
    residual_norms: np.ndarray
    reconstructions: Optional[np.ndarray]
    k: int
    sequence: int
    arrays: Dict[str, np.ndarray] = field(repr=False, compare=False, default_factory=dict)

    @classmethod
    def from_arrays(cls, arrays: Dict[str, np.ndarray]) -> "Projection":
        recon = arrays.get("reconstructions")
        return cls(
            scores=np.asarray(arrays["scores"], dtype=np.float64),
            residual_norms=np.asarray(arrays["residual_norms"], dtype=np.float64),
            reconstructions=None if recon is None else np.asarray(recon, dtype=np.float64),
            k=int(arrays["k"]),
            sequence=int(arrays["sequence"]),
            arrays=arrays,
        )

    @classmethod
    def from_json(cls, d: Dict[str, Any], dim: int) -> "Projection":
        arrays: Dict[str, np.ndarray] = {}
        for key, value in d.items():
            if key in ("k", "sequence"):
                arrays[key] = np.asarray(value, dtype=np.int64)
            elif isinstance(value, list):
                a = np.asarray(value, dtype=np.float64)
                if key in ("scores", "reconstructions") and a.size == 0:
                    a = a.reshape(0, int(d.get("k", 0)) if key == "scores" else dim)
                arrays[key] = a
        return cls.from_arrays(arrays)

    @staticmethod
    def concat(parts: "list[Projection]") -> "Projection":
        """Row-wise concatenation of projections by the same fit."""
        if len(parts) == 1:
            return parts[0]
        arrays: Dict[str, np.ndarray] = {}
        for key, first in parts[0].arrays.items():
            if first.ndim == 0:
                arrays[key] = first
            else:
                arrays[key] = np.concatenate([p.arrays[key] for p in parts], axis=0)
        return Projection.from_arrays(arrays)
