"""Wire formats: ``.npy`` request bodies and ``.npz`` answers."""

from __future__ import annotations

import io
from typing import Dict, Tuple

import numpy as np

NPY = "application/x-npy"
NPZ = "application/x-npz"

_MAGIC = b"\x93NUMPY"


def as_matrix(X, what: str = "X") -> np.ndarray:
    """``X`` as a 2-D float32 or float64 array (float32 stays float32, float64 stays
    float64, anything else becomes float64). A 1-D array is refused: say whether it is
    one row (``X[None, :]``) or one column (``X[:, None]``)."""
    a = np.asarray(X)
    if a.dtype not in (np.float32, np.float64):
        if a.dtype.kind not in "biuf":
            raise TypeError(f"{what} must hold real numbers, got dtype {a.dtype}")
        a = a.astype(np.float64)
    if a.ndim != 2:
        raise ValueError(
            f"{what} must be 2-D (rows, values per row), got shape {a.shape}; "
            "reshape one row with X[None, :] or one column with X[:, None]"
        )
    return a


def check_finite(a: np.ndarray, what: str = "X") -> None:
    """Raises ValueError naming the first NaN or infinity by its numpy index
    (``X[row, column]``, 0-based; the server's messages count rows from 1)."""
    if not np.isfinite(a).all():
        r, c = np.argwhere(~np.isfinite(a))[0]
        raise ValueError(f"{what}[{r}, {c}] is {a[r, c]}: values must be finite")


def npy_bytes(a: np.ndarray) -> bytes:
    """A ``.npy`` (version 1.0) file holding the 2-D array ``a`` (float32 or float64,
    little-endian), in C order, or in Fortran order when ``a`` is stored that way (no
    copy to reorder it)."""
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    fortran = a.flags.f_contiguous and not a.flags.c_contiguous
    if not fortran:
        a = np.ascontiguousarray(a)
    descr = "<f4" if a.dtype == np.float32 else "<f8"
    header = "{'descr': '%s', 'fortran_order': %s, 'shape': (%d, %d), }" % (
        descr,
        "True" if fortran else "False",
        a.shape[0],
        a.shape[1],
    )
    pad = -(10 + len(header) + 1) % 64
    header = (header + " " * pad + "\n").encode("latin1")
    data = a.T.tobytes() if fortran else a.tobytes()
    return b"".join([_MAGIC, b"\x01\x00", len(header).to_bytes(2, "little"), header, data])


def read_npz(content: bytes) -> Dict[str, np.ndarray]:
    """Every array of an ``.npz`` answer, by name (whatever arrays are present)."""
    with np.load(io.BytesIO(content), allow_pickle=False) as z:
        return {name: z[name] for name in z.files}


def split_rows(n: int, batch: int) -> "list[Tuple[int, int]]":
    """``[start, stop)`` ranges of at most ``batch`` rows covering ``n`` rows."""
    batch = max(1, int(batch))
    return [(i, min(i + batch, n)) for i in range(0, n, batch)]
