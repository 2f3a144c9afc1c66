//! The demo's data set: seeded Gaussian rows with a known spectrum along known
//! directions, so the learned components can be compared with the truth.
//!
//! Covariance `Σ = Q diag(λ) Qᵀ` with `λ_i = 10 · 0.6^i` (well separated, so a few
//! thousand rows pin the leading directions down) and `Q = H₄H₃H₂H₁`, a product of four
//! random Householder reflections `H = I − 2vvᵀ` (orthogonal, and cheap to apply at any
//! dimension). Rows are `x = μ + Q diag(√λ) z` with `z ~ N(0, I)` and `μ_i = 3 + 0.1 i`.

use rand::{rngs::StdRng, Rng, SeedableRng};

/// A seeded synthetic stream with its true eigenpairs.
#[derive(Debug)]
pub struct Synthetic {
    dim: usize,
    reflectors: Vec<Vec<f64>>,
    scale: Vec<f64>,
    rng: StdRng,
}

impl Synthetic {
    /// A stream of `dim`-dimensional rows from `seed`.
    pub fn new(dim: usize, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let reflectors = (0..4)
            .map(|_| {
                let v: Vec<f64> = (0..dim)
                    .map(|_| rng.sample(rand_distr::StandardNormal))
                    .collect();
                let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
                v.into_iter().map(|x| x / norm).collect()
            })
            .collect();
        let scale = (0..dim).map(|i| Self::eigenvalue(i).sqrt()).collect();
        Self {
            dim,
            reflectors,
            scale,
            rng,
        }
    }

    /// The true `i`-th eigenvalue (0-based), `10 · 0.6^i`.
    pub fn eigenvalue(i: usize) -> f64 {
        10.0 * 0.6f64.powi(i32::try_from(i).unwrap_or(i32::MAX))
    }

    /// The true `i`-th eigenvector (unit length): `Q e_i`.
    pub fn eigenvector(&self, i: usize) -> Vec<f64> {
        let mut e = vec![0.0; self.dim];
        e[i] = 1.0;
        self.rotate(&mut e);
        e
    }

    fn rotate(&self, z: &mut [f64]) {
        for v in &self.reflectors {
            let d: f64 = z.iter().zip(v).map(|(a, b)| a * b).sum();
            z.iter_mut().zip(v).for_each(|(a, b)| *a -= 2.0 * d * b);
        }
    }

    /// Appends `rows` rows (row-major) to `out`.
    pub fn fill(&mut self, rows: usize, out: &mut Vec<f64>) {
        let mut z = vec![0.0; self.dim];
        for _ in 0..rows {
            for (zi, s) in z.iter_mut().zip(&self.scale) {
                *zi = s * self.rng.sample::<f64, _>(rand_distr::StandardNormal);
            }
            self.rotate(&mut z);
            out.extend(z.iter().enumerate().map(|(i, v)| v + 3.0 + 0.1 * i as f64));
        }
    }
}

/// Sign-insensitive angle between two unit vectors, in radians; accurate when small.
pub fn angle(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let perp: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - dot * y).powi(2))
        .sum::<f64>()
        .sqrt();
    perp.atan2(dot.abs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn true_eigenvectors_are_orthonormal() {
        let s = Synthetic::new(7, 1);
        for i in 0..7 {
            for j in 0..7 {
                let d: f64 = s
                    .eigenvector(i)
                    .iter()
                    .zip(s.eigenvector(j))
                    .map(|(a, b)| a * b)
                    .sum();
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((d - want).abs() < 1e-12, "{i},{j}: {d}");
            }
        }
    }
}
