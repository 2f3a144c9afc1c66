"""``StreamPCA``'s constructor-parameter checks, with scikit-learn's messages.

:func:`validate_params` checks every parameter of an estimator and raises scikit-learn's
``InvalidParameterError`` (a ``ValueError`` and a ``TypeError``) naming the first one
that is of the wrong type or out of range.
"""

from __future__ import annotations

import numbers
import re
from typing import Any

import numpy as np

try:
    from sklearn.utils._param_validation import InvalidParameterError
except ImportError:  # pragma: no cover - older scikit-learn

    class InvalidParameterError(ValueError, TypeError):  # type: ignore[no-redef]
        """A constructor parameter of the wrong type or out of range."""


__all__ = ["InvalidParameterError", "validate_params"]

#: A served model's name, as the service accepts it.
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def _check_param(name: str, value: Any, ok: bool, expected: str) -> None:
    if not ok:
        raise InvalidParameterError(
            f"The {name!r} parameter of StreamPCA must be {expected}. Got {value!r} instead."
        )


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))


def _is_real(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))


def validate_params(est: Any) -> None:
    """Checks the parameters of the ``StreamPCA`` ``est`` (its constructor arguments,
    as ``set_params`` may have changed them)."""
    p = est.n_components
    _check_param(
        "n_components", p, p is None or (_is_int(p) and p >= 1),
        "an int in the range [1, inf) or None",
    )
    for flag in ("whiten", "copy"):
        v = getattr(est, flag)
        _check_param(flag, v, isinstance(v, (bool, np.bool_)), "an instance of 'bool'")
    b = est.batch_size
    _check_param(
        "batch_size", b, b is None or (_is_int(b) and b >= 1),
        "an int in the range [1, inf) or None",
    )
    for s in ("url", "api_key"):
        v = getattr(est, s)
        _check_param(s, v, v is None or isinstance(v, str), "a str or None")
    m = est.model
    _check_param(
        "model", m, m is None or (isinstance(m, str) and bool(_NAME.match(m))),
        "a str matching [a-z0-9][a-z0-9_-]{0,63} or None",
    )
    h = est.half_life
    _check_param(
        "half_life", h, h is None or (_is_real(h) and np.isfinite(h) and h > 0),
        "a float in the range (0, inf) or None",
    )
    t = est.tolerance
    _check_param(
        "tolerance", t, _is_real(t) and 0 < t < 1, "a float in the range (0, 1)"
    )
    f = est.fit_timeout
    _check_param("fit_timeout", f, _is_real(f) and f > 0, "a float in the range (0, inf)")
    b = est.buffer_bytes
    _check_param("buffer_bytes", b, _is_int(b) and b >= 0, "an int in the range [0, inf)")
    m = est.max_in_flight
    _check_param(
        "max_in_flight", m, _is_int(m) and 0 <= m <= 64, "an int in the range [0, 64]"
    )
