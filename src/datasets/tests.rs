//! The IDX reader against files written here (plain and gzipped, whole, cut and
//! corrupted), the optional-data-set rule, and the shipped digits.

#![allow(clippy::unwrap_used, reason = "tests")]

use std::io::Write;

use super::*;

/// An IDX header of unsigned bytes with these dimensions.
fn header(dims: &[u32]) -> Vec<u8> {
    let mut h = vec![0, 0, TYPE_U8, dims.len() as u8];
    for d in dims {
        h.extend_from_slice(&d.to_be_bytes());
    }
    h
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn file_with(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn problem(result: Result<impl std::fmt::Debug, DatasetError>) -> IdxProblem {
    match result {
        Err(DatasetError::Format { problem, .. }) => problem,
        other => panic!("expected a format error, got {other:?}"),
    }
}

#[test]
fn plain_and_gzipped_files_read_back_the_same_dimensions_and_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let pixels: Vec<u8> = (0..3 * 2 * 5).map(|i| (i * 7 % 256) as u8).collect();
    let mut bytes = header(&[3, 2, 5]);
    bytes.extend_from_slice(&pixels);
    for path in [
        file_with(&dir, "plain", &bytes),
        file_with(&dir, "packed", &gzip(&bytes)),
    ] {
        let idx = read_idx(&path).unwrap();
        assert_eq!(idx.dims, vec![3, 2, 5]);
        assert_eq!(idx.data, pixels);
        let images = Images::read(&path).unwrap();
        assert_eq!((images.rows, images.dim), (3, 10));
        // every value converts exactly: back to the same bytes
        let f32_back: Vec<u8> = images.to_f32().iter().map(|v| *v as u8).collect();
        let f64_back: Vec<u8> = images.to_f64().iter().map(|v| *v as u8).collect();
        assert_eq!((f32_back, f64_back), (pixels.clone(), pixels.clone()));
    }
    // a label file (rank 1) is an IDX file but not images
    let mut labels = header(&[4]);
    labels.extend_from_slice(&[1, 2, 3, 4]);
    let path = file_with(&dir, "labels", &labels);
    assert_eq!(read_idx(&path).unwrap().dims, vec![4]);
    assert_eq!(
        problem(Images::read(&path)),
        IdxProblem::NotImages { dims: vec![4] }
    );
}

#[test]
fn a_short_file_is_an_error_naming_the_missing_bytes_plain_or_gzipped() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = header(&[10, 28, 28]);
    bytes.extend(std::iter::repeat_n(9u8, 10 * 784 - 1));
    for (name, content) in [("plain", bytes.clone()), ("packed", gzip(&bytes))] {
        let path = file_with(&dir, name, &content);
        assert_eq!(
            problem(read_idx(&path)),
            IdxProblem::Truncated {
                dims: vec![10, 28, 28],
                expected: 7840,
                found: 7839
            },
            "{name}"
        );
    }
    // cut inside the header: after the magic number, and inside it
    let path = file_with(&dir, "head", &bytes[..9]);
    assert_eq!(
        problem(read_idx(&path)),
        IdxProblem::ShortHeader {
            expected: 16,
            found: 9
        }
    );
    let path = file_with(&dir, "magic", &bytes[..3]);
    assert_eq!(
        problem(read_idx(&path)),
        IdxProblem::ShortHeader {
            expected: 4,
            found: 3
        }
    );
    let path = file_with(&dir, "empty", &[]);
    assert!(matches!(
        problem(read_idx(&path)),
        IdxProblem::ShortHeader { found: 0, .. }
    ));
}

#[test]
fn a_cut_or_corrupt_gzip_stream_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = header(&[50, 8, 8]);
    bytes.extend((0..50 * 64).map(|i| (i % 17) as u8));
    let packed = gzip(&bytes);
    let cut = file_with(&dir, "cut", &packed[..packed.len() / 2]);
    let err = read_idx(&cut).unwrap_err();
    assert!(matches!(err, DatasetError::Io { .. }), "{err}");
    assert!(err.to_string().contains("cut"), "names the file: {err}");
    // a flipped bit in the CRC-32 trailer: the data decode, and the check at the end
    // of the stream (which the reader reaches) refuses them
    let mut bad_crc = packed.clone();
    let crc_at = bad_crc.len() - 8;
    bad_crc[crc_at] ^= 0x01;
    let err = read_idx(&file_with(&dir, "crc", &bad_crc)).unwrap_err();
    assert!(matches!(err, DatasetError::Io { .. }), "{err}");
    // a flipped byte inside the compressed data: an error (from deflate, or a
    // garbled header or length), never images
    let mut flipped = packed.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x55;
    assert!(read_idx(&file_with(&dir, "flipped", &flipped)).is_err());
}

#[test]
fn wrong_magic_type_rank_trailing_bytes_and_overflowing_dimensions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut ok = header(&[2, 3]);
    ok.extend_from_slice(&[1, 2, 3, 4, 5, 6]);
    let read = |name: &str, bytes: &[u8]| problem(read_idx(&file_with(&dir, name, bytes)));

    let mut bad = ok.clone();
    bad[0] = 0x50;
    assert_eq!(
        read("magic", &bad),
        IdxProblem::BadMagic {
            found: [0x50, 0, 8, 2]
        }
    );
    let mut float = ok.clone();
    float[2] = 0x0d;
    assert_eq!(
        read("float", &float),
        IdxProblem::UnsupportedType { code: 0x0d }
    );
    assert_eq!(read("rank0", &[0, 0, 8, 0]), IdxProblem::NoDimensions);
    let mut long = ok.clone();
    long.push(7);
    assert_eq!(
        read("long", &long),
        IdxProblem::TrailingBytes {
            dims: vec![2, 3],
            expected: 6
        }
    );
    // 2^32-1 cubed overflows u64: refused before any allocation
    let mut huge = header(&[u32::MAX, u32::MAX, u32::MAX]);
    huge.extend_from_slice(&[0; 64]);
    assert!(matches!(read("huge", &huge), IdxProblem::TooLarge { .. }));
    // a header claiming 4 GiB over 64 real bytes: a short file, memory as read
    let mut claims = header(&[u32::MAX]);
    claims.extend_from_slice(&[0; 64]);
    assert_eq!(
        read("claims", &claims),
        IdxProblem::Truncated {
            dims: vec![u32::MAX as usize],
            expected: u64::from(u32::MAX),
            found: 64
        }
    );
    // images with a zero dimension
    let zero = header(&[0, 8, 8]);
    assert_eq!(
        problem(Images::read(&file_with(&dir, "zero", &zero))),
        IdxProblem::NotImages {
            dims: vec![0, 8, 8]
        }
    );
}

#[test]
fn an_absent_optional_data_set_is_skipped_unless_required_and_a_broken_one_never() {
    let dir = tempfile::tempdir().unwrap();
    let absent = dir.path().join("t10k-images-idx3-ubyte.gz");
    assert_eq!(
        optional_images(&absent, FASHION_MNIST_PACKAGE, false).unwrap(),
        None
    );
    let err = optional_images(&absent, FASHION_MNIST_PACKAGE, true).unwrap_err();
    assert!(matches!(err, DatasetError::Missing { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("apt-get install dataset-fashion-mnist")
            && message.contains("t10k-images-idx3-ubyte.gz")
            && message.contains(REQUIRE_DATASETS_ENV),
        "{message}"
    );
    // present: read, required or not
    let mut bytes = header(&[2, 2, 2]);
    bytes.extend_from_slice(&[0, 1, 2, 3, 4, 5, 6, 7]);
    std::fs::write(&absent, gzip(&bytes)).unwrap();
    for required in [false, true] {
        let images = optional_images(&absent, FASHION_MNIST_PACKAGE, required)
            .unwrap()
            .unwrap();
        assert_eq!((images.rows, images.dim), (2, 4));
    }
    // present but cut short: an error even when not required
    std::fs::write(&absent, gzip(&bytes[..bytes.len() - 1])).unwrap();
    assert!(matches!(
        problem(optional_images(&absent, FASHION_MNIST_PACKAGE, false)),
        IdxProblem::Truncated { found: 7, .. }
    ));
}

#[test]
fn the_shipped_digits_are_1797_images_of_8_by_8_pixels_in_0_to_16() {
    let digits = digits().unwrap();
    assert_eq!((digits.rows, digits.dim), (1797, 64));
    assert_eq!(digits.pixels.iter().max(), Some(&16));
    assert_eq!(digits.pixels.iter().min(), Some(&0));
    let idx = read_idx(Path::new(DIGITS_PATH)).unwrap();
    assert_eq!(idx.dims, vec![1797, 8, 8]);
    // the wrong shape for a data set is named
    let err = Images::read(Path::new(DIGITS_PATH))
        .unwrap()
        .expect(Path::new(DIGITS_PATH), Some(10_000), 784)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("1797 images of 64 pixels, expected 10000 images of 784 pixels"),
        "{err}"
    );
}
