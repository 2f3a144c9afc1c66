//! The common form of a CSV or NDJSON row, read in one pass straight from the chunk:
//! JSON numbers separated by `,` (CSV: `1.5,-2,3e4`; NDJSON: `[1.5, -2, 3e4]`), then the
//! line's end. Anything else (blanks around fields, quotes, `nan`, `+1`, `.5`, a header,
//! an object line, a line that continues into the next chunk) is left to the general
//! line grammar ([`super::lines`]), which accepts the same rows with the same values:
//! every JSON number is a text number of the same value.

use super::decimal;
use super::number::is_number_byte;

/// Blanks JSON allows between tokens of an NDJSON array (`\r` may end the line).
#[inline(always)]
fn is_blank(b: u8) -> bool {
    matches!(b, b' ' | b'\t')
}

/// The index after the line's end at `s[i..]`: `\n` or `\r\n`, both inside `s`.
#[inline(always)]
fn line_end(s: &[u8], i: usize) -> Option<usize> {
    match s.get(i)? {
        b'\n' => Some(i + 1),
        b'\r' if s.get(i + 1) == Some(&b'\n') => Some(i + 2),
        _ => None,
    }
}

/// One JSON number at `s[i..]` that ends inside `s` at a byte that cannot continue it;
/// its value and the index after it.
#[inline(always)]
fn number(s: &[u8], i: usize) -> Option<(f64, usize)> {
    let (v, len) = decimal::json_prefix(s.get(i..)?)?;
    let end = i + len;
    match s.get(end) {
        Some(&b) if !is_number_byte(b) => Some((v, end)),
        _ => None,
    }
}

/// A CSV row of JSON numbers at the start of `s`, ended by a newline inside `s`: its
/// values appended to `out`, and the bytes used (newline included). `None` (and `out`
/// as it was) for any other line.
#[inline]
pub(crate) fn csv_row(s: &[u8], out: &mut Vec<f64>) -> Option<usize> {
    let start = out.len();
    let mut i = 0;
    let r = loop {
        let Some((v, end)) = number(s, i) else {
            break None;
        };
        out.push(v);
        match s[end] {
            b',' => i = end + 1,
            _ => break line_end(s, end),
        }
    };
    if r.is_none() {
        out.truncate(start);
    }
    r
}

/// An NDJSON array line of JSON numbers (`[…]`, blanks allowed between tokens) at the
/// start of `s`, ended by a newline inside `s`: its values appended to `out`, and the
/// bytes used. `None` (and `out` as it was) for any other line.
#[inline]
pub(crate) fn ndjson_row(s: &[u8], out: &mut Vec<f64>) -> Option<usize> {
    let start = out.len();
    let r = ndjson_inner(s, out);
    if r.is_none() {
        out.truncate(start);
    }
    r
}

#[inline(always)]
fn ndjson_inner(s: &[u8], out: &mut Vec<f64>) -> Option<usize> {
    let skip = |mut i: usize| {
        while s.get(i).is_some_and(|&b| is_blank(b)) {
            i += 1;
        }
        i
    };
    let mut i = skip(0);
    if s.get(i) != Some(&b'[') {
        return None;
    }
    i = skip(i + 1);
    if s.get(i) == Some(&b']') {
        // An empty row: the general path names its length.
        return None;
    }
    loop {
        let (v, end) = number(s, i)?;
        out.push(v);
        i = skip(end);
        match s.get(i)? {
            b',' => i = skip(i + 1),
            b']' => return line_end(s, skip(i + 1)),
            _ => return None,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::super::lines::{csv_line, ndjson_line, LineKind};
    use super::*;
    use crate::pca::Shape;
    use proptest::prelude::*;

    #[test]
    fn common_rows_are_read_and_the_rest_left_alone() {
        let mut out = vec![9.0];
        assert_eq!(csv_row(b"1.5,-2,3e4\nnext", &mut out), Some(11));
        assert_eq!(out, [9.0, 1.5, -2.0, 3e4]);
        assert_eq!(csv_row(b"0.25\r\n", &mut out), Some(6));
        assert_eq!(ndjson_row(b" [1, 2.5 ,-3] \r\nx", &mut out), Some(16));
        assert_eq!(out, [9.0, 1.5, -2.0, 3e4, 0.25, 1.0, 2.5, -3.0]);
        for other in [
            &b"1,2"[..], // no newline yet
            b"1, 2\n",
            b"a,b\n",
            b"\"1\",2\n",
            b"1,nan\n",
            b"+1\n",
            b".5\n",
            b"01\n",
            b"1,2,\n",
            b"1e400\n",
            b"\n",
        ] {
            assert_eq!(csv_row(other, &mut out), None, "{other:?}");
        }
        for other in [
            &b"[1,2]"[..],
            b"[]\n",
            b"[1,]\n",
            b"[1 2]\n",
            b"[1,2] x\n",
            b"{\"x\": [1]}\n",
            b"[nan]\n",
            b"[1,2\n",
        ] {
            assert_eq!(ndjson_row(other, &mut out), None, "{other:?}");
        }
        assert_eq!(out.len(), 8);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 5000, ..ProptestConfig::default() })]

        /// Whatever the fast path takes, the general grammar takes with the same
        /// values, bit for bit.
        #[test]
        fn agrees_with_the_general_grammar(
            fields in proptest::collection::vec(
                prop_oneof![
                    any::<f64>().prop_map(|v| format!("{v:?}")),
                    any::<f32>().prop_map(|v| format!("{:?}", f64::from(v))),
                    "[-+ .0-9eE]{1,6}",
                    Just("nan".to_string()),
                ],
                1..6,
            ),
            sep in prop_oneof![Just(","), Just(", "), Just(" ,")],
            end in prop_oneof![Just("\n"), Just("\r\n"), Just(""), Just(" \n")],
        ) {
            let body = fields.join(sep);
            let csv = format!("{body}{end}");
            let mut fast = Vec::new();
            if let Some(used) = csv_row(csv.as_bytes(), &mut fast) {
                prop_assert_eq!(used, csv.len());
                let mut slow = Vec::new();
                let line = csv.trim_end_matches(['\n', '\r']);
                prop_assert_eq!(csv_line(line.as_bytes(), false, &mut slow).unwrap(), LineKind::Row);
                prop_assert_eq!(fast.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                                slow.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
            }
            let nd = format!("[{body}]{end}");
            let mut fast = Vec::new();
            if let Some(used) = ndjson_row(nd.as_bytes(), &mut fast) {
                prop_assert_eq!(used, nd.len());
                let mut slow = Vec::new();
                let line = nd.trim_end_matches(['\n', '\r']);
                let kind = ndjson_line(line.as_bytes(), Shape::inputs(fast.len()), &mut slow).unwrap();
                prop_assert_eq!(kind, LineKind::Row);
                prop_assert_eq!(fast.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                                slow.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
            }
        }
    }
}
