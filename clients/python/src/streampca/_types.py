"""What the client methods return: small dataclasses of plain values and numpy arrays."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import numpy as np


@dataclass(frozen=True)
class ModelStatus:
    """A model's configuration and counters (``GET /v1/models/{name}``).

    ``samples`` is a weighted count under forgetting (``half_life``); ``sequence`` is the
    highest acknowledged batch, ``fitted_sequence`` the batch up to which the published
    fit covers every batch; ``loss`` and ``max_error_bound`` (radians) are ``None``
    before the first fit. ``partitions`` (independent accumulators merged for each fit),
    ``standardize`` (PCA of the correlation matrix) and ``alpha`` (the false-alarm rate
    of the model's control limits) are ``None`` from a server without them. ``raw`` is
    the whole JSON object, fields this version does not know included.
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
    partitions: Optional[int] = None
    standardize: Optional[bool] = None
    alpha: Optional[float] = None
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
            partitions=None if d.get("partitions") is None else int(d["partitions"]),
            standardize=None if d.get("standardize") is None else bool(d["standardize"]),
            alpha=None if d.get("alpha") is None else float(d["alpha"]),
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
class Limits:
    """Control limits of Hotelling's T² and of the SPE (``GET .../limits``) for the fit
    of ``samples`` (N) rows, at ``k`` components and false-alarm rate ``alpha``.

    ``t2`` = k(N−1)(N+1)/(N(N−k))·F₁₋α(k, N−k) (the limit for a new row); ``spe`` is
    Jackson–Mudholkar's limit, or Box's (``spe_box``, g·χ²₁₋α(h)) when
    ``spe_method == "box"`` (h₀ ≤ 0); ``theta`` = [θ₁, θ₂, θ₃], θᵢ = Σ_{j>k} λⱼⁱ over the
    eigenvalues the k components leave out (divisor N−1); ``h0`` = 1 − 2θ₁θ₃/(3θ₂²).
    """

    k: int
    alpha: float
    samples: float
    t2: float
    spe: float
    spe_box: float
    spe_method: str
    theta: np.ndarray
    h0: float

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "Limits":
        return cls(
            k=int(d["k"]),
            alpha=float(d["alpha"]),
            samples=float(d["samples"]),
            t2=float(d["t2"]),
            spe=float(d["spe"]),
            spe_box=float(d["spe_box"]),
            spe_method=str(d["spe_method"]),
            theta=np.asarray(d["theta"], dtype=np.float64),
            h0=float(d["h0"]),
        )


#: Answer arrays of one value per row and a type other than float64.
_BOOL_ARRAYS = ("outlier_t2", "outlier_spe")
#: Answer arrays of one row of n values per row.
_ROW_MATRICES = ("reconstructions", "contributions_t2", "contributions_spe")


@dataclass(frozen=True)
class Projection:
    """Rows projected onto the first ``k`` components (``POST .../project``), with each
    row's monitoring statistics.

    ``scores`` (rows×k; divided by √eigenvalue when whitened), ``residual_norms``
    (rows: the norm of what the k components miss), ``reconstructions`` (rows×n, when
    asked for, else ``None``), ``t2`` (Hotelling's T², Σ score²/λ over the k
    components, unaffected by whitening) and ``spe`` (squared prediction error,
    ‖residual‖²) per row; with ``alpha`` the limits ``limit_t2`` and ``limit_spe`` and
    the per-row booleans ``outlier_t2`` and ``outlier_spe`` (statistic above its
    limit); with ``contributions``, ``contributions_t2`` and ``contributions_spe``
    (rows×n: each row sums to its T², resp. is its squared residual per variable). For a
    standardised model scores and statistics are in the scaled space, reconstructions
    in the original units. ``k``, the fit's ``sequence``, and ``arrays``: every array of
    the answer by name, including any this version does not know.
    """

    scores: np.ndarray
    residual_norms: np.ndarray
    reconstructions: Optional[np.ndarray]
    k: int
    sequence: int
    t2: Optional[np.ndarray] = None
    spe: Optional[np.ndarray] = None
    outlier_t2: Optional[np.ndarray] = None
    outlier_spe: Optional[np.ndarray] = None
    limit_t2: Optional[float] = None
    limit_spe: Optional[float] = None
    contributions_t2: Optional[np.ndarray] = None
    contributions_spe: Optional[np.ndarray] = None
    arrays: Dict[str, np.ndarray] = field(repr=False, compare=False, default_factory=dict)

    @classmethod
    def from_arrays(cls, arrays: Dict[str, np.ndarray]) -> "Projection":
        def f64(key: str) -> Optional[np.ndarray]:
            a = arrays.get(key)
            return None if a is None else np.asarray(a, dtype=np.float64)

        def flags(key: str) -> Optional[np.ndarray]:
            a = arrays.get(key)
            return None if a is None else np.asarray(a, dtype=bool)

        def scalar(key: str) -> Optional[float]:
            a = arrays.get(key)
            return None if a is None else float(a)

        return cls(
            scores=np.asarray(arrays["scores"], dtype=np.float64),
            residual_norms=np.asarray(arrays["residual_norms"], dtype=np.float64),
            reconstructions=f64("reconstructions"),
            k=int(arrays["k"]),
            sequence=int(arrays["sequence"]),
            t2=f64("t2"),
            spe=f64("spe"),
            outlier_t2=flags("outlier_t2"),
            outlier_spe=flags("outlier_spe"),
            limit_t2=scalar("limit_t2"),
            limit_spe=scalar("limit_spe"),
            contributions_t2=f64("contributions_t2"),
            contributions_spe=f64("contributions_spe"),
            arrays=arrays,
        )

    @classmethod
    def from_json(cls, d: Dict[str, Any], dim: int) -> "Projection":
        """The JSON answer as the arrays the ``.npz`` answer holds (``limits`` becomes
        the 0-d ``limit_t2`` and ``limit_spe``)."""
        arrays: Dict[str, np.ndarray] = {}
        for key, value in d.items():
            if key in ("k", "sequence"):
                arrays[key] = np.asarray(value, dtype=np.int64)
            elif key == "limits" and isinstance(value, dict):
                arrays["limit_t2"] = np.asarray(value["t2"], dtype=np.float64)
                arrays["limit_spe"] = np.asarray(value["spe"], dtype=np.float64)
            elif key in _BOOL_ARRAYS:
                arrays[key] = np.asarray(value, dtype=bool)
            elif isinstance(value, list):
                a = np.asarray(value, dtype=np.float64)
                if a.size == 0 and key == "scores":
                    a = a.reshape(0, int(d.get("k", 0)))
                elif a.size == 0 and key in _ROW_MATRICES:
                    a = a.reshape(0, dim)
                arrays[key] = a
        return cls.from_arrays(arrays)

    @staticmethod
    def concat(parts: "list[Projection]") -> "Projection":
        """Row-wise concatenation of projections by the same fit (0-d arrays, such as
        ``k`` and the limits, are the same in every part)."""
        if len(parts) == 1:
            return parts[0]
        arrays: Dict[str, np.ndarray] = {}
        for key, first in parts[0].arrays.items():
            if first.ndim == 0:
                arrays[key] = first
            else:
                arrays[key] = np.concatenate([p.arrays[key] for p in parts], axis=0)
        return Projection.from_arrays(arrays)
