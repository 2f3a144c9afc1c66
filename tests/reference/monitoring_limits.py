#!/usr/bin/env python3
"""Independent reference for the monitoring control limits (src/pca/monitoring.rs).

Reads a JSON fixture written by the Rust test `pca::monitoring_tests::
limits_match_an_independent_scipy_reference` and prints, as JSON, the limits computed
here from a full eigendecomposition (numpy.linalg.eigh) and scipy.stats quantiles:

- "datasets": rows (N×n, row-major) -> covariance with divisor N-1 (np.cov) or the
  correlation matrix (np.corrcoef, constant columns zeroed) -> eigenvalues -> theta.
- "spectra": a full eigenvalue list (divisor N-1) and a sample count N given directly.
- "quantiles": [distribution, a, b, alpha] -> the upper-alpha quantile (scipy isf) of
  F(a, b), chi2(a) or the standard normal.

For each requested (k, alpha): T2 = k(N-1)(N+1)/(N(N-k)) F_{1-a}(k, N-k); SPE by
Jackson-Mudholkar (Box's g chi2_{1-a}(h) when h0 <= 0); spe_box = g chi2_{1-a}(h).
Usage: monitoring_limits.py FIXTURE.json
"""

import json
import sys

import numpy as np
from scipy import stats


def covariance(rows, standardize):
    x = np.asarray(rows, dtype=np.float64)
    c = np.cov(x, rowvar=False, ddof=1)
    if not standardize:
        return c
    s = np.sqrt(np.diag(c))
    keep = s > 1e-12 * s.max()
    inv = np.where(keep, 1.0 / np.where(keep, s, 1.0), 0.0)
    return c * np.outer(inv, inv)


def limits(eigenvalues, n, k, alpha):
    lam = np.sort(np.asarray(eigenvalues, dtype=np.float64))[::-1]
    tail = lam[k:]
    t1, t2, t3 = (float(np.sum(tail**i)) for i in (1, 2, 3))
    f = stats.f.ppf(1.0 - alpha, k, n - k)
    t2_limit = k * (n - 1.0) * (n + 1.0) / (n * (n - k)) * f
    g, h = t2 / t1, t1 * t1 / t2
    spe_box = g * stats.chi2.ppf(1.0 - alpha, h)
    h0 = 1.0 - 2.0 * t1 * t3 / (3.0 * t2 * t2)
    if h0 > 0:
        c = stats.norm.isf(alpha)
        base = c * np.sqrt(2.0 * t2 * h0 * h0) / t1 + 1.0 + t2 * h0 * (h0 - 1.0) / (t1 * t1)
        spe = t1 * base ** (1.0 / h0)
    else:
        spe = spe_box
    return {
        "k": k,
        "alpha": alpha,
        "t2": t2_limit,
        "spe": float(spe),
        "spe_box": float(spe_box),
        "h0": h0,
        "theta": [t1, t2, t3],
    }


def main():
    with open(sys.argv[1], encoding="utf-8") as fh:
        fixture = json.load(fh)
    out = {"datasets": [], "spectra": []}
    for d in fixture["datasets"]:
        n_var = d["dim"]
        rows = np.asarray(d["rows"], dtype=np.float64).reshape(-1, n_var)
        lam = np.linalg.eigh(covariance(rows, d["standardize"]))[0]
        n = float(rows.shape[0])
        out["datasets"].append(
            [limits(lam, n, k, a) for k in d["ks"] for a in d["alphas"]]
        )
    for s in fixture["spectra"]:
        out["spectra"].append(
            [limits(s["eigenvalues"], s["samples"], k, a) for k in s["ks"] for a in s["alphas"]]
        )
    quantile = {
        "f": lambda a, b, alpha: stats.f.isf(alpha, a, b),
        "chi2": lambda a, b, alpha: stats.chi2.isf(alpha, a),
        "norm": lambda a, b, alpha: stats.norm.isf(alpha),
    }
    out["quantiles"] = [float(quantile[d](a, b, alpha)) for d, a, b, alpha in fixture["quantiles"]]
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
