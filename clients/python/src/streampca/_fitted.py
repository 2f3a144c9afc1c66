"""scikit-learn's fitted attributes of ``StreamPCA`` from the service's fit.

:func:`fitted_attributes` turns a served fit (:class:`streampca.Components`) into
``components_``, ``explained_variance_``, … with scikit-learn's conventions (documented
on :mod:`streampca.sklearn`): ``svd_flip``'s signs, an orthonormal completion of
rank-deficient fits, ``noise_variance_`` and ``singular_values_`` as
:class:`sklearn.decomposition.PCA` defines them, and ``var_`` from the estimator's own
per-feature statistics of the rows it sent.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import numpy as np

__all__ = ["fitted_attributes"]


def _svd_flip_rows(v: np.ndarray) -> np.ndarray:
    """scikit-learn's sign convention: each row's largest-magnitude entry positive."""
    if v.size == 0:
        return v
    idx = np.argmax(np.abs(v), axis=1)
    signs = np.sign(v[np.arange(v.shape[0]), idx])
    signs[signs == 0] = 1.0
    return v * signs[:, None]


def fitted_attributes(
    fit: Any,
    p: int,
    d: int,
    stats: Optional[Tuple[int, np.ndarray, np.ndarray]],
    dtype: Any,
) -> Dict[str, Any]:
    """The fitted attributes (``p`` components of ``d`` features, as arrays of
    ``dtype``) of the service's fit ``fit``; ``stats``: the rows' per-feature (count,
    mean, sum of squared deviations), or ``None`` (``var_`` is then NaN)."""
    V = _svd_flip_rows(fit.components[:p])
    ev = fit.eigenvalues[:p]
    ratio = fit.explained_variance_ratio[:p]
    total = float(ev[0] / ratio[0]) if ev.size and ratio[0] > 0 else float(np.sum(ev))
    r = V.shape[0]
    if r < p:
        # Rank-deficient data: the service reports the r components with positive
        # variance; complete them with an orthonormal basis of the rest (variance 0),
        # as an SVD does.
        basis = np.linalg.svd(V if r else np.zeros((1, d)), full_matrices=True)[2]
        V = np.vstack([V, _svd_flip_rows(basis[r:p])])
        ev = np.concatenate([ev, np.zeros(p - r)])
        ratio = np.concatenate([ratio, np.zeros(p - r)])
    n = float(fit.samples)
    q = min(d, n)
    noise = max((total - float(ev.sum())) / (q - p), 0.0) if p < q else 0.0
    var = stats[2] / stats[0] if stats is not None else np.full(d, np.nan)
    cast = lambda a: np.asarray(a, dtype=dtype)  # noqa: E731
    return {
        "components_": cast(V),
        "explained_variance_": cast(ev),
        "explained_variance_ratio_": cast(ratio),
        "singular_values_": cast(np.sqrt(ev * max(n - 1.0, 0.0))),
        "mean_": cast(fit.mean),
        "var_": cast(var),
        "noise_variance_": np.dtype(dtype).type(noise),
    }
