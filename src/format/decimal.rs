//! One pass per number: the JSON number grammar checked and its digits gathered into a
//! `u64` significand and a decimal exponent as the bytes are read, then one exact
//! conversion to f64 that does not read the text again.
//!
//! The conversion is correctly rounded (round half to even), so a decimal that an f32
//! or f64 printed parses back to the value printed:
//! - Clinger's fast path: a significand of at most 2^53 and a decimal exponent within
//!   ±22 are both exact f64 values, and one IEEE multiply or divide rounds their
//!   product or quotient correctly.
//! - Otherwise the Eisel–Lemire algorithm on (significand, exponent), as
//!   `lexical-parse-float` implements it (128-bit products with the powers of five).
//! - Where neither decides (more than 19 significant digits, or the rare case where
//!   Eisel–Lemire cannot tell which way to round), the whole token goes to
//!   `lexical_core::parse`, which has the big-number fallback.
//!
//! Digits come eight at a time where eight are available (one 64-bit load, one check
//! that all eight are digits, three multiplies), then one by one.

use lexical_parse_float::lemire::compute_float;

/// Exact powers of ten representable in f64 (10^0 … 10^22).
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// Largest significand that Clinger's fast path takes: every integer up to 2^53 is an
/// exact f64.
const MAX_EXACT: u64 = 1 << 53;

/// Most significant digits a `u64` holds without overflow (10^19 < 2^64).
const MAX_DIGITS: usize = 19;

/// The eight bytes at `s[i..i + 8]` as a little-endian word, when there are eight.
#[inline(always)]
fn word_at(s: &[u8], i: usize) -> Option<u64> {
    let b: [u8; 8] = s.get(i..i + 8)?.try_into().ok()?;
    Some(u64::from_le_bytes(b))
}

/// The bytes of `w` that are not ASCII digits, as their high bits (`0x80` in each such
/// byte); zero exactly when all eight are digits.
#[inline(always)]
fn non_digits(w: u64) -> u64 {
    let a = w.wrapping_add(0x4646_4646_4646_4646);
    let b = w.wrapping_sub(0x3030_3030_3030_3030);
    (a | b) & 0x8080_8080_8080_8080
}

/// Whether all eight bytes of `w` are ASCII digits.
#[inline(always)]
#[cfg(test)]
fn eight_digits(w: u64) -> bool {
    non_digits(w) == 0
}

/// The value of eight ASCII digits (first digit in the lowest byte).
#[inline(always)]
fn eight_digits_value(w: u64) -> u64 {
    const MASK: u64 = 0x0000_00FF_0000_00FF;
    const MUL1: u64 = 0x000F_4240_0000_0064; // 100 + (1_000_000 << 32)
    const MUL2: u64 = 0x0000_2710_0000_0001; // 1 + (10_000 << 32)
    let w = w.wrapping_sub(0x3030_3030_3030_3030);
    let w = w.wrapping_mul(10).wrapping_add(w >> 8);
    (((w & MASK).wrapping_mul(MUL1)).wrapping_add(((w >> 16) & MASK).wrapping_mul(MUL2))) >> 32
}

/// Reads digits from `s[i..]` into `w`; returns the index after them.
///
/// Eight digits at a time while a whole word of them is there (one 64-bit load, one
/// check, three multiplies), then one by one. (Reading a final run of one to seven
/// digits as one word too was tried on 2026-12-03 and measured no faster on the
/// 17-digit tokens, whose final runs are one or two digits: bench/JSONFAST.md.)
#[inline(always)]
fn digits(s: &[u8], mut i: usize, w: &mut u64) -> usize {
    while let Some(word) = word_at(s, i) {
        if non_digits(word) != 0 {
            break;
        }
        *w = w
            .wrapping_mul(100_000_000)
            .wrapping_add(eight_digits_value(word));
        i += 8;
    }
    while let Some(&b) = s.get(i) {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            break;
        }
        *w = w.wrapping_mul(10).wrapping_add(u64::from(d));
        i += 1;
    }
    i
}

/// The JSON number (`-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`) at the start of
/// `s`: its correctly rounded value and its length in bytes.
///
/// `None` when `s` does not start with a complete JSON number, or its value is too
/// large for an f64 (serde_json refuses those too). The number is the longest match:
/// the caller decides whether the byte after it may end a number (a length equal to
/// `s.len()` may continue in the next chunk; a digit, point, sign or `e` after it makes
/// the token invalid, as in `01` or `1.5.2`).
#[inline]
pub fn json_prefix(s: &[u8]) -> Option<(f64, usize)> {
    let neg = s.first() == Some(&b'-');
    let mut i = usize::from(neg);
    let mut w = 0u64;
    // Integer part: `0` or a non-zero digit then digits.
    let int_start = i;
    let int_zero = match s.get(i) {
        Some(b'0') => {
            i += 1;
            true
        }
        Some(b'1'..=b'9') => {
            i = digits(s, i, &mut w);
            false
        }
        _ => return None,
    };
    // Significant digits gathered into `w` (it wraps beyond 19, and is then not used).
    let mut count = if int_zero { 0 } else { i - int_start };
    let mut exp10: i64 = 0;
    // Fraction.
    if s.get(i) == Some(&b'.') {
        i += 1;
        let frac_start = i;
        if int_zero {
            // Leading zeros are not significant.
            while s.get(i) == Some(&b'0') {
                i += 1;
            }
        }
        let sig_start = i;
        i = digits(s, i, &mut w);
        if i == frac_start {
            return None;
        }
        count += i - sig_start;
        exp10 = -((i - frac_start) as i64);
    }
    // Exponent.
    if matches!(s.get(i), Some(b'e' | b'E')) {
        i += 1;
        let eneg = match s.get(i) {
            Some(b'-') => {
                i += 1;
                true
            }
            Some(b'+') => {
                i += 1;
                false
            }
            _ => false,
        };
        let start = i;
        let mut e: i64 = 0;
        while let Some(&b) = s.get(i) {
            let d = b.wrapping_sub(b'0');
            if d > 9 {
                break;
            }
            // Saturates far beyond any f64 exponent, so a long run cannot overflow.
            if e < 1 << 32 {
                e = e * 10 + i64::from(d);
            }
            i += 1;
        }
        if i == start {
            return None;
        }
        exp10 += if eneg { -e } else { e };
    }
    let magnitude = if count > MAX_DIGITS {
        full_parse(&s[usize::from(neg)..i])?
    } else {
        match convert(w, exp10) {
            Some(v) => v,
            None => full_parse(&s[usize::from(neg)..i])?,
        }
    };
    if !magnitude.is_finite() {
        return None;
    }
    Some((if neg { -magnitude } else { magnitude }, i))
}

/// The rare token the fast steps cannot decide, by the full parser (kept out of line so
/// that the hot scan stays small).
#[cold]
#[inline(never)]
fn full_parse(s: &[u8]) -> Option<f64> {
    lexical_core::parse::<f64>(s).ok()
}

/// `w × 10^q` correctly rounded, for `w` of at most 19 digits; `None` when the fast
/// algorithms cannot decide (then the caller uses the full parser). Infinite when the
/// value is beyond f64's range.
#[inline(always)]
fn convert(w: u64, q: i64) -> Option<f64> {
    if w == 0 {
        return Some(0.0);
    }
    if w <= MAX_EXACT && (-22..=22).contains(&q) {
        // (Dividing trailing fraction zeros out first, so that `255.0` needs no f64
        // divide, measured slower on pixel bodies: bench/JSONFAST.md, session 5.)
        let m = w as f64;
        let p = POW10[q.unsigned_abs() as usize];
        return Some(if q < 0 { m / p } else { m * p });
    }
    let fp = compute_float::<f64>(q, w, false);
    if fp.exp < 0 {
        return None;
    }
    let bits = fp.mant | ((fp.exp as u64) << 52);
    Some(f64::from_bits(bits))
}

/// The value of `s` when the whole of it is one JSON number (see [`json_prefix`]).
#[inline]
pub fn json_exact(s: &[u8]) -> Option<f64> {
    match json_prefix(s) {
        Some((v, len)) if len == s.len() => Some(v),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bits(s: &str) -> Option<u64> {
        json_exact(s.as_bytes()).map(f64::to_bits)
    }

    fn std_bits(s: &str) -> u64 {
        s.parse::<f64>().unwrap().to_bits()
    }

    #[test]
    fn eight_digit_words() {
        let w = |s: &[u8; 8]| u64::from_le_bytes(*s);
        assert!(eight_digits(w(b"01234567")));
        assert!(eight_digits(w(b"99999999")));
        for bad in [
            b"0123456/",
            b"0123456:",
            b"a1234567",
            b"1234 678",
            b"\x801234567",
        ] {
            assert!(!eight_digits(w(bad)), "{bad:?}");
        }
        assert_eq!(eight_digits_value(w(b"12345678")), 12_345_678);
        assert_eq!(eight_digits_value(w(b"00000009")), 9);
        assert_eq!(eight_digits_value(w(b"90000000")), 90_000_000);
    }

    /// The word-at-a-time digit reader against one digit at a time, for every run
    /// length 0–20, at every offset, with and without eight bytes after the run.
    #[test]
    fn digit_runs_read_like_one_at_a_time() {
        fn naive(s: &[u8], mut i: usize) -> (u64, usize) {
            let mut w = 0u64;
            while i < s.len() && s[i].is_ascii_digit() {
                w = w.wrapping_mul(10).wrapping_add(u64::from(s[i] - b'0'));
                i += 1;
            }
            (w, i)
        }
        let digits_text = b"98765432109876543210";
        for run in 0..=20 {
            for lead in 0..3 {
                for (tail, stop) in [(&b""[..], b','), (b", 12345678]", b','), (b"e5, 1", b'e')] {
                    let mut s = vec![b' '; lead];
                    s.extend_from_slice(&digits_text[..run]);
                    if !tail.is_empty() {
                        assert_eq!(tail[0], stop);
                    }
                    s.extend_from_slice(tail);
                    let mut w = 3;
                    let end = digits(&s, lead, &mut w);
                    let (want, want_end) = naive(&s, lead);
                    assert_eq!(end, want_end, "{s:?}");
                    let scale = 10u64.wrapping_pow(run as u32);
                    assert_eq!(w, 3u64.wrapping_mul(scale).wrapping_add(want), "{s:?}");
                }
            }
        }
    }

    #[test]
    fn each_path_rounds_like_std() {
        for s in [
            // Clinger's fast path, including trailing fraction zeros.
            "0.5",
            "-1.25",
            "255.0",
            "255.000",
            "12.50",
            "100.0e-3",
            "0.0000",
            "9007199254740990.0",
            "1.0e-22",
            "1e22",
            "9007199254740992e-22",
            // Eisel–Lemire: 17 digits of a widened f32, large and small exponents.
            "0.10000000149011612",
            "-0.0012345678246361017",
            "9007199254740993",
            "1e23",
            "2.2250738585072014e-308",
            "4.9e-324",
            "1.7976931348623157e308",
            // Exactly halfway between two f64 values: ties to even.
            "9007199254740993",
            "9007199254740995",
            // Over 19 significant digits: the full parser.
            "0.1000000000000000055511151231257827",
            "123456789012345678901234567890",
            "0.000000000000000000000000000001",
            // 10^64 wraps a u64 to 0: the digit count, not the word, decides.
            "10000000000000000000000000000000000000000000000000000000000000000",
        ] {
            assert_eq!(bits(s), Some(std_bits(s)), "{s}");
        }
        assert_eq!(bits("-0"), Some((-0.0f64).to_bits()));
        assert_eq!(bits("0e999999999999"), Some(0));
        assert_eq!(bits("1e-400"), Some(0));
        assert_eq!(bits("1e400"), None);
        assert_eq!(bits("-1.8e308"), None);
    }

    #[test]
    fn the_grammar_is_json_and_the_match_is_the_longest() {
        let p = |s: &str| json_prefix(s.as_bytes()).map(|(_, l)| l);
        assert_eq!(p("12.5e3,"), Some(6));
        assert_eq!(p("-0]"), Some(2));
        assert_eq!(p("01"), Some(1)); // the caller sees the `1` and refuses the token
        assert_eq!(p("1.5.2"), Some(3));
        assert_eq!(p("12345678901234567890123"), Some(23));
        for bad in [
            "", "-", "+1", ".5", "1.", "1.e5", "1e", "1e+", "-x", "x", " 1",
        ] {
            assert_eq!(p(bad), None, "{bad}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 20_000, ..ProptestConfig::default() })]

        /// Every finite f64 and f32, as Rust and Python print them, parses back bit
        /// for bit.
        #[test]
        fn printed_floats_round_trip(b64 in any::<u64>(), b32 in any::<u32>()) {
            let d = f64::from_bits(b64);
            if d.is_finite() {
                for s in [format!("{d:?}"), format!("{d:e}"), format!("{d}")] {
                    prop_assert_eq!(bits(&s), Some(b64), "{}", s);
                }
            }
            let f = f32::from_bits(b32);
            if f.is_finite() {
                let wide = f64::from(f);
                let s = format!("{wide:?}");
                prop_assert_eq!(bits(&s), Some(wide.to_bits()), "{}", s);
                let short = format!("{f:?}");
                prop_assert_eq!(json_exact(short.as_bytes()).map(|v| (v as f32).to_bits()), Some(b32), "{}", short);
            }
        }

        /// Short decimals with trailing fraction zeros (what a client prints for f32
        /// pixel values, `255.0`, and longer), with and without an exponent, round
        /// like std's parser.
        #[test]
        fn trailing_zeros_round_like_std(
            int in 0u64..10_000_000,
            frac in "[0-9]{0,7}",
            zeros in 0usize..8,
            exp in proptest::option::of(-30i32..30),
        ) {
            let mut s = format!("{int}.{frac}{}", "0".repeat(zeros));
            if s.ends_with('.') {
                s.push('0');
            }
            if let Some(e) = exp { s.push_str(&format!("e{e}")); }
            let want: f64 = s.parse().unwrap();
            prop_assert_eq!(bits(&s), Some(want.to_bits()), "{}", s);
        }

        /// Arbitrary digit strings and exponents (including around 19–20 significant
        /// digits and leading zeros) round like std's correctly rounded parser.
        #[test]
        fn digit_strings_round_like_std(
            neg in any::<bool>(),
            int in "(0|[1-9][0-9]{0,22})",
            frac in proptest::option::of("[0-9]{1,24}"),
            exp in proptest::option::of(-360i32..330),
        ) {
            let mut s = String::new();
            if neg { s.push('-'); }
            s.push_str(&int);
            if let Some(f) = &frac { s.push('.'); s.push_str(f); }
            if let Some(e) = exp { s.push_str(&format!("e{e}")); }
            let want: f64 = s.parse().unwrap();
            if want.is_finite() {
                prop_assert_eq!(bits(&s), Some(want.to_bits()), "{}", s);
            } else {
                prop_assert_eq!(bits(&s), None, "{}", s);
            }
        }
    }
}
