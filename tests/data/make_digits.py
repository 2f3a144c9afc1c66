"""Writes tests/data/digits-images-idx3-ubyte.gz from scikit-learn's copy of the UCI
optical-digits test set (see tests/data/README.md for provenance and licence).

    python3 -m pip install scikit-learn
    python3 tests/data/make_digits.py

The output is an IDX file (the format of MNIST and Fashion-MNIST: magic 0x00000803,
unsigned bytes, three big-endian u32 dimensions 1797 · 8 · 8, then the pixels row-major),
gzip-compressed with a zero timestamp so that the same input gives the same bytes.
Prints the SHA-256 of the uncompressed IDX bytes, which README.md records.
"""
import gzip
import hashlib
import os
import struct

import numpy as np
from sklearn.datasets import load_digits

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "digits-images-idx3-ubyte.gz")


def main():
    images = load_digits().images  # float64, shape (1797, 8, 8), integer values 0..16
    assert images.shape == (1797, 8, 8), images.shape
    pixels = images.astype(np.uint8)
    # The cast is exact: every value is an integer in 0..16.
    assert np.array_equal(pixels.astype(np.float64), images)
    assert pixels.min() == 0 and pixels.max() == 16
    idx = struct.pack(">4B3I", 0, 0, 0x08, 3, *pixels.shape) + pixels.tobytes(order="C")
    with open(OUT, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0,
                                               compresslevel=9) as f:
        f.write(idx)
    print(f"{OUT}: {os.path.getsize(OUT)} bytes gzipped, {len(idx)} bytes of IDX, "
          f"sha256 of the IDX bytes {hashlib.sha256(idx).hexdigest()}")


if __name__ == "__main__":
    main()
