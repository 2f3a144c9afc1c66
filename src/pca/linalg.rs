//! Thin bridges from nalgebra storage to faer's kernels (docs/DESIGN.md §9: faer runs
//! syrk, gemm and the symmetric eigensolver at numpy/OpenBLAS speed, and works in place
//! on nalgebra's column-major storage, so nalgebra stays the type at the API).
//!
//! Everything here is sequential (`Par::Seq`): the service parallelises across models
//! and requests, and a deterministic order of operations keeps results reproducible.

use faer::linalg::matmul::matmul;
use faer::linalg::matmul::triangular::{self, BlockStructure};
use faer::{Accum, MatMut, MatRef, Par, Side};
use nalgebra::{DMatrix, DVector};

/// A faer view of a column-major nalgebra matrix.
pub(crate) fn view(m: &DMatrix<f64>) -> MatRef<'_, f64> {
    MatRef::from_column_major_slice(m.as_slice(), m.nrows(), m.ncols())
}

/// A mutable faer view of a column-major nalgebra matrix.
pub(crate) fn view_mut(m: &mut DMatrix<f64>) -> MatMut<'_, f64> {
    let (r, c) = m.shape();
    MatMut::from_column_major_slice_mut(m.as_mut_slice(), r, c)
}

/// `dst = a · b` (Replace) or `dst += a · b` (Add), with optional transposes.
pub(crate) fn gemm(
    dst: &mut DMatrix<f64>,
    accum: Accum,
    a: &DMatrix<f64>,
    ta: bool,
    b: &DMatrix<f64>,
    tb: bool,
    alpha: f64,
) {
    let av = if ta { view(a).transpose() } else { view(a) };
    let bv = if tb { view(b).transpose() } else { view(b) };
    matmul(view_mut(dst), accum, av, bv, alpha, Par::Seq);
}

/// `dst += aᵀ · b` for column-major slices `a` (k×m) and `b` (k×n) sharing their row
/// count k; `dst` is m×n. Used where the operands already sit in work buffers, so they
/// need not be copied into matrices first.
pub(crate) fn gemm_tn_add(dst: &mut DMatrix<f64>, a: &[f64], b: &[f64], k: usize) {
    let (m, n) = dst.shape();
    let av = MatRef::from_column_major_slice(a, k, m);
    let bv = MatRef::from_column_major_slice(b, k, n);
    matmul(view_mut(dst), Accum::Add, av.transpose(), bv, 1.0, Par::Seq);
}

/// `a · b` into a new matrix, with optional transposes.
pub(crate) fn mul(a: &DMatrix<f64>, ta: bool, b: &DMatrix<f64>, tb: bool) -> DMatrix<f64> {
    let rows = if ta { a.ncols() } else { a.nrows() };
    let cols = if tb { b.nrows() } else { b.ncols() };
    let mut out = DMatrix::zeros(rows, cols);
    gemm(&mut out, Accum::Replace, a, ta, b, tb, 1.0);
    out
}

/// `a[:, ..k]ᵀ · b` (with `ta`) or `a[:, ..k] · b` into a new matrix: the first `k`
/// columns of `a` (m×p, k ≤ p) read in place. Projections use it so that a request
/// does not copy the m×k leading components first (at m = 784, k = 16 that copy was a
/// quarter of the server's CPU under single-row projections).
pub(crate) fn mul_leading_cols(
    a: &DMatrix<f64>,
    k: usize,
    ta: bool,
    b: &DMatrix<f64>,
) -> DMatrix<f64> {
    let ak = view(a).subcols(0, k);
    let av = if ta { ak.transpose() } else { ak };
    let mut out = DMatrix::zeros(av.nrows(), b.ncols());
    matmul(
        view_mut(&mut out),
        Accum::Replace,
        av,
        view(b),
        1.0,
        Par::Seq,
    );
    out
}

/// Symmetric rank-k update of the lower triangle: `dst_lower += xtᵀ · xt`, with `xt` a
/// k×n column-major slice (column `f` holds feature `f` of the k samples, contiguous).
/// `dst` is ld×n with ld ≥ n (padded storage, see `Accumulator`); only the lower
/// triangle of its top n×n block is read or written.
///
/// The sample-contiguous layout matters: faer's x86 kernel packs and streams along the
/// inner dimension k, and with k-contiguous operands the kernel measured 16.3-18.8 ms
/// against 20.5-22.1 ms with the n×k (row-contiguous) layout at n = 2048, b = 256, and
/// 1.0-1.2x faster at n = 784 (`bench/KERNELS.md`).
pub(crate) fn syrk_lower_add(dst: &mut DMatrix<f64>, xt: &[f64], n: usize, k: usize) {
    let x = MatRef::from_column_major_slice(xt, k, n).transpose();
    triangular::matmul(
        view_mut(dst).submatrix_mut(0, 0, n, n),
        BlockStructure::TriangularLower,
        Accum::Add,
        x,
        BlockStructure::Rectangular,
        x.transpose(),
        BlockStructure::Rectangular,
        1.0,
        Par::Seq,
    );
}

/// Copies the lower triangle of a square matrix onto its upper triangle.
pub(crate) fn symmetrize_from_lower(m: &mut DMatrix<f64>) {
    let n = m.nrows();
    for j in 0..n {
        for i in (j + 1)..n {
            m[(j, i)] = m[(i, j)];
        }
    }
}

/// Eigendecomposition of a symmetric matrix, eigenvalues in *descending* order.
/// Returns `None` if the solver fails or returns non-finite numbers (never trust a
/// solver handed bad input: docs/DESIGN.md §4).
pub(crate) fn eigh_desc(m: &DMatrix<f64>) -> Option<(DVector<f64>, DMatrix<f64>)> {
    let n = m.nrows();
    let evd = view(m).self_adjoint_eigen(Side::Lower).ok()?;
    let s = evd.S();
    let u = evd.U();
    let mut vals = DVector::zeros(n);
    let mut vecs = DMatrix::zeros(n, n);
    for j in 0..n {
        let src = n - 1 - j;
        vals[j] = s[src];
        for i in 0..n {
            vecs[(i, j)] = u[(i, src)];
        }
    }
    (vals.iter().all(|v| v.is_finite()) && vecs.iter().all(|v| v.is_finite()))
        .then_some((vals, vecs))
}

/// Orthonormal basis (n×c, thin Householder QR) of the columns of `m` (n×c, c ≤ n).
/// Householder QR returns orthonormal columns even when `m` is rank deficient; the
/// extra directions are harmless in a Rayleigh–Ritz trial space.
pub(crate) fn orthonormalize(m: &DMatrix<f64>) -> DMatrix<f64> {
    let q = faer::linalg::solvers::Qr::new(view(m)).compute_thin_Q();
    DMatrix::from_fn(q.nrows(), q.ncols(), |i, j| q[(i, j)])
}

/// Solves `m · x = rhs` in place for a symmetric positive-definite `m` (n×n, lower
/// triangle read) by Cholesky. Returns `false` (leaving `rhs` unspecified) when `m` is
/// not positive definite.
pub(crate) fn cholesky_solve_in_place(m: &DMatrix<f64>, rhs: &mut DMatrix<f64>) -> bool {
    use faer::linalg::solvers::Solve;
    match view(m).llt(Side::Lower) {
        Ok(llt) => {
            llt.solve_in_place(view_mut(rhs));
            rhs.iter().all(|v| v.is_finite())
        }
        Err(_) => false,
    }
}

/// Whether `m` (n×n, symmetric, lower triangle read) is positive definite: its Cholesky
/// factorisation succeeds.
pub(crate) fn is_positive_definite(m: &DMatrix<f64>) -> bool {
    view(m).llt(Side::Lower).is_ok()
}
