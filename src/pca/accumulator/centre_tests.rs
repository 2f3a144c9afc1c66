//! `centre` against a plain loop over rows and features, to the bit: the blocked,
//! tiled, four-rows-at-a-time transpose must write the same values and add each
//! column's squares in the same order.

use super::centre;
use nalgebra::DVector;

/// The reference: batch mean by row-order sums, then every entry and every column's
/// sum of squares in row order, then the Chan row.
fn reference<T: Copy + Into<f64>>(
    data: &[T],
    n: usize,
    b: usize,
    mean: &DVector<f64>,
    sw: f64,
    n1: f64,
) -> (Vec<f64>, Vec<f64>, DVector<f64>) {
    let k = b + 1;
    let mut bm = vec![0.0; n];
    for r in 0..b {
        for f in 0..n {
            bm[f] += data[r * n + f].into();
        }
    }
    let inv_b = 1.0 / b as f64;
    bm.iter_mut().for_each(|m| *m *= inv_b);
    let mut buf = vec![0.0; n * k];
    let mut sq = vec![0.0; n];
    for f in 0..n {
        for r in 0..b {
            let c = data[r * n + f].into() - bm[f];
            buf[f * k + r] = c;
            sq[f] += c * c;
        }
    }
    let mut new_mean = mean.clone();
    for f in 0..n {
        let d = bm[f] - mean[f];
        buf[f * k + b] = sw * d;
        sq[f] += (sw * d) * (sw * d);
        new_mean[f] += d * (b as f64 / n1);
    }
    (buf, sq, new_mean)
}

fn values(len: usize, seed: u64) -> Vec<f64> {
    // A small LCG: varied magnitudes and signs, reproducible.
    let mut s = seed;
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let u = (s >> 11) as f64 / (1u64 << 53) as f64;
            (u - 0.3) * 10f64.powi((s % 7) as i32 - 3)
        })
        .collect()
}

fn check<T: Copy + Into<f64>>(data: &[T], n: usize, b: usize) {
    let mean = DVector::from_vec(values(n, 99));
    let (sw, n1) = (0.75, 1000.0);
    let (want_buf, want_sq, want_mean) = reference(data, n, b, &mean, sw, n1);
    // Reused buffers holding stale values, as a partition's scratch does.
    let mut buf = vec![f64::NAN; 3];
    let mut sq = vec![f64::NAN; 5];
    let got_mean = centre(data, n, b, &mean, sw, n1, &mut buf, &mut sq).expect("finite");
    assert_eq!(buf.len(), want_buf.len());
    for (i, (g, w)) in buf.iter().zip(&want_buf).enumerate() {
        assert_eq!(
            g.to_bits(),
            w.to_bits(),
            "entry {i} (n {n}, b {b}): {g} vs {w}"
        );
    }
    for (f, (g, w)) in sq.iter().zip(&want_sq).enumerate() {
        assert_eq!(g.to_bits(), w.to_bits(), "column {f}'s squares: {g} vs {w}");
    }
    assert_eq!(got_mean, want_mean);
}

#[test]
fn the_blocked_transpose_equals_the_plain_loop_to_the_bit() {
    // Widths around the 16-feature block, batches around the 4-row step and the
    // 64-row tile (remainders of every kind).
    for &n in &[1usize, 5, 16, 17, 37, 64] {
        for &b in &[1usize, 2, 3, 4, 5, 63, 64, 65, 70, 131] {
            let x = values(n * b, (n * 1000 + b) as u64);
            check(&x, n, b);
            let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
            check(&x32, n, b);
        }
    }
}

#[test]
fn a_non_finite_value_is_reported_as_none() {
    let mut x = values(17 * 9, 3);
    x[17 * 5 + 3] = f64::INFINITY;
    let mean = DVector::zeros(17);
    let (mut buf, mut sq) = (Vec::new(), Vec::new());
    assert!(centre(&x, 17, 9, &mean, 1.0, 10.0, &mut buf, &mut sq).is_none());
}
