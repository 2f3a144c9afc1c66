//! Numbers: where a number token ends, whether it is a JSON number or a lenient text
//! field, and its correctly rounded value.
//!
//! Two grammars share one conversion ([`lexical_core`], correctly rounded: a decimal
//! printed from an f32 or f64 parses back to the same value):
//! - JSON (RFC 8259): `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`; a value too large
//!   for f64 is refused, as serde_json refuses it.
//! - Text fields (CSV, NDJSON array lines): Rust's float syntax, i.e. an optional sign,
//!   digits with an optional point (`1.`, `.5`), an optional exponent, or `inf`,
//!   `infinity`, `nan` in any case; surrounding blanks and one pair of double quotes are
//!   dropped. Non-finite values parse (so that [`crate::pca::Batch::new`] can name them).

/// Longest number token accepted, in bytes: far above the 24 characters the shortest
/// repr of any f64 needs, and it bounds the carry a token split across chunks needs.
pub const MAX_NUMBER_LEN: usize = 512;

/// Whether `b` can continue a number token (JSON or text): digits, sign, point, `e`.
#[inline]
pub fn is_number_byte(b: u8) -> bool {
    matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
}

/// Length of the run of number bytes at the start of `s`.
#[inline]
pub fn number_run(s: &[u8]) -> usize {
    s.iter()
        .position(|&b| !is_number_byte(b))
        .unwrap_or(s.len())
}

/// Whether `s` is exactly one JSON number.
pub fn is_json_number(s: &[u8]) -> bool {
    let mut i = 0;
    let n = s.len();
    if i < n && s[i] == b'-' {
        i += 1;
    }
    match s.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            while i < n && s[i].is_ascii_digit() {
                i += 1;
            }
        }
        _ => return false,
    }
    if i < n && s[i] == b'.' {
        i += 1;
        let start = i;
        while i < n && s[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    if i < n && (s[i] == b'e' || s[i] == b'E') {
        i += 1;
        if i < n && (s[i] == b'+' || s[i] == b'-') {
            i += 1;
        }
        let start = i;
        while i < n && s[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    i == n
}

/// Length of the JSON number at the start of `s` (`-?(0|[1-9][0-9]*)(\.[0-9]+)?
/// ([eE][+-]?[0-9]+)?`), scanned in one pass; `None` when `s` does not start with one.
/// A result equal to `s.len()` may continue past the end of `s`.
#[inline]
pub fn json_number_len(s: &[u8]) -> Option<usize> {
    let n = s.len();
    let mut i = usize::from(s.first() == Some(&b'-'));
    match s.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            i += 1;
            while i < n && s[i].is_ascii_digit() {
                i += 1;
            }
        }
        _ => return None,
    }
    if i < n && s[i] == b'.' {
        i += 1;
        let start = i;
        while i < n && s[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return (i == n).then_some(i);
        }
    }
    if i < n && (s[i] | 0x20) == b'e' {
        i += 1;
        if i < n && (s[i] == b'+' || s[i] == b'-') {
            i += 1;
        }
        let start = i;
        while i < n && s[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return (i == n).then_some(i);
        }
    }
    Some(i)
}

/// The value of a decimal in the grammar both formats share (after their own checks),
/// correctly rounded to f64.
#[inline]
pub fn decimal(s: &[u8]) -> Option<f64> {
    lexical_core::parse::<f64>(s).ok()
}

/// The value of a JSON number token, or `None` when it is not one or is too large for
/// an f64 (serde_json refuses those too).
#[inline]
pub fn json_number(s: &[u8]) -> Option<f64> {
    if !is_json_number(s) {
        return None;
    }
    decimal(s).filter(|v| v.is_finite())
}

/// The value of a text field (CSV field, NDJSON array element): blanks and one pair of
/// double quotes around it dropped, then Rust's float syntax including `nan` and `inf`.
/// `None` when it is not a number.
pub fn text_field(s: &[u8]) -> Option<f64> {
    let s = s.trim_ascii();
    let s = match s {
        [b'"', inner @ .., b'"'] => inner.trim_ascii(),
        _ => s,
    };
    let (neg, body) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let special = if body.eq_ignore_ascii_case(b"inf") || body.eq_ignore_ascii_case(b"infinity") {
        Some(f64::INFINITY)
    } else if body.eq_ignore_ascii_case(b"nan") {
        Some(f64::NAN)
    } else {
        None
    };
    if let Some(v) = special {
        return Some(if neg { -v } else { v });
    }
    if !is_text_decimal(body) {
        return None;
    }
    decimal(body).map(|v| if neg { -v } else { v })
}

/// Unsigned decimal in Rust's syntax: `digits[.digits]` or `.digits`, with at least one
/// digit before the exponent, then an optional `e[+-]digits`.
fn is_text_decimal(s: &[u8]) -> bool {
    let n = s.len();
    let mut i = 0;
    let mut digits = 0;
    while i < n && s[i].is_ascii_digit() {
        i += 1;
        digits += 1;
    }
    if i < n && s[i] == b'.' {
        i += 1;
        while i < n && s[i].is_ascii_digit() {
            i += 1;
            digits += 1;
        }
    }
    if digits == 0 {
        return false;
    }
    if i < n && (s[i] == b'e' || s[i] == b'E') {
        i += 1;
        if i < n && (s[i] == b'+' || s[i] == b'-') {
            i += 1;
        }
        let start = i;
        while i < n && s[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    i == n
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn json_grammar_is_strict() {
        for ok in [
            "0",
            "-0",
            "1",
            "-12",
            "1.5",
            "1e5",
            "1E+5",
            "1e-05",
            "0.0e0",
            "123.456e78",
        ] {
            assert!(is_json_number(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "", "-", "+1", "01", ".5", "1.", "1e", "1e+", "--1", "1.2.3", "1e5e5", "0x1", "1-",
        ] {
            assert!(!is_json_number(bad.as_bytes()), "{bad}");
        }
        assert_eq!(json_number(b"1e400"), None);
        assert_eq!(json_number(b"-1e400"), None);
        assert_eq!(json_number(b"1e-400").map(f64::to_bits), Some(0));
    }

    #[test]
    fn json_number_len_finds_the_end_in_one_pass() {
        let l = |s: &str| json_number_len(s.as_bytes());
        assert_eq!(l("12.5e3,"), Some(6));
        assert_eq!(l("-0]"), Some(2));
        assert_eq!(l("01"), Some(1));
        assert_eq!(l("1."), Some(2));
        assert_eq!(l("1.x"), None);
        assert_eq!(l("1e"), Some(2));
        assert_eq!(l("1e+x"), None);
        assert_eq!(l("-x"), None);
        assert_eq!(l(".5"), None);
    }

    #[test]
    fn text_fields_follow_rust_syntax_with_quotes_and_blanks() {
        let v = |s: &str| text_field(s.as_bytes());
        assert_eq!(v(" 1.5 "), Some(1.5));
        assert_eq!(v("\"-2\""), Some(-2.0));
        assert_eq!(v("+.5"), Some(0.5));
        assert_eq!(v("3."), Some(3.0));
        assert_eq!(v("1e200"), Some(1e200));
        assert_eq!(v("1e400"), Some(f64::INFINITY));
        assert_eq!(v("-Infinity"), Some(f64::NEG_INFINITY));
        assert!(v("NaN").is_some_and(f64::is_nan));
        for bad in [
            "", "x", "1,2", ".", "e5", "1e", "--1", "\"\"", "1 2", "0x10", "in",
        ] {
            assert_eq!(v(bad), None, "{bad}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 20_000, ..ProptestConfig::default() })]

        /// Exact round trip of what f64 and f32 print (Rust and Python both print the
        /// shortest repr that round-trips), and agreement with std's correctly rounded
        /// parser on arbitrary digit strings.
        #[test]
        fn printed_floats_parse_back_bit_for_bit(bits in any::<u64>(), bits32 in any::<u32>()) {
            let d = f64::from_bits(bits);
            if d.is_finite() {
                for s in [format!("{d}"), format!("{d:e}"), format!("{d:?}")] {
                    prop_assert_eq!(json_number(s.as_bytes()).map(f64::to_bits), Some(bits), "{}", s);
                    prop_assert_eq!(text_field(s.as_bytes()).map(f64::to_bits), Some(bits), "{}", s);
                }
            }
            let f = f32::from_bits(bits32);
            if f.is_finite() {
                // What json.dumps(float(np.float32(v))) prints: the shortest f64 repr of
                // the widened value, which parses back to that exact f64.
                let wide = f64::from(f);
                let s = format!("{wide:?}");
                prop_assert_eq!(json_number(s.as_bytes()).map(f64::to_bits), Some(wide.to_bits()));
                let short = format!("{f:e}");
                let back = json_number(short.as_bytes()).map(|v| v as f32);
                prop_assert_eq!(back.map(f32::to_bits), Some(bits32));
            }
        }

        #[test]
        fn long_digit_strings_round_like_std(
            int in "[1-9][0-9]{0,30}",
            frac in "[0-9]{1,30}",
            exp in -340i32..310,
        ) {
            let s = format!("{int}.{frac}e{exp}");
            let want: f64 = s.parse().unwrap();
            let got = json_number(s.as_bytes());
            if want.is_finite() {
                prop_assert_eq!(got.map(f64::to_bits), Some(want.to_bits()), "{}", s);
            } else {
                prop_assert_eq!(got, None);
            }
        }
    }
}
