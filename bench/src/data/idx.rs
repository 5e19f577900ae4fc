//! Reader for gzipped IDX files, the format of MNIST and Fashion-MNIST
//! (<http://yann.lecun.com/exdb/mnist/>, "FILE FORMATS").
//!
//! Layout: two zero bytes, a type byte (0x08 = unsigned byte, the only type these datasets use),
//! the number of dimensions, one big-endian u32 per dimension, then the values row-major.

use std::io::Read;
use std::path::Path;

use flate2::read::GzDecoder;

use crate::error::{Error, Result};

/// The decoded content of one IDX file of unsigned bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    /// Size of each dimension, outermost first (`[n, 28, 28]` for images, `[n]` for labels).
    pub dims: Vec<usize>,
    /// The values, row-major; `data.len()` is the product of `dims`.
    pub data: Vec<u8>,
}

const TYPE_U8: u8 = 0x08;

/// Refuses headers that would make us allocate absurd amounts for a corrupt file; the largest
/// real file (train images) is 47 MB.
const MAX_VALUES: usize = 1 << 30;

/// Reads and checks a gzipped IDX file of unsigned bytes. Errors name `path`.
pub fn read_idx_gz(path: &Path) -> Result<IdxArray> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut raw = Vec::new();
    GzDecoder::new(file)
        .read_to_end(&mut raw)
        .map_err(|e| Error::dataset(path, format!("not a valid gzip stream: {e}")))?;
    parse_idx(&raw).map_err(|message| Error::dataset(path, message))
}

/// Parses decompressed IDX bytes; the error is a message the caller prefixes with the path.
fn parse_idx(raw: &[u8]) -> std::result::Result<IdxArray, String> {
    if raw.len() < 4 {
        return Err(format!("{} bytes is too short for an IDX header", raw.len()));
    }
    if raw[0] != 0 || raw[1] != 0 {
        return Err(format!("bad IDX magic {:02x}{:02x}, expected 0000", raw[0], raw[1]));
    }
    if raw[2] != TYPE_U8 {
        return Err(format!("IDX value type 0x{:02x} is not supported, only 0x08 (unsigned byte)", raw[2]));
    }
    let ndims = raw[3] as usize;
    let header = 4 + 4 * ndims;
    if ndims == 0 || raw.len() < header {
        return Err(format!("IDX header declares {ndims} dimensions but the file has {} bytes", raw.len()));
    }
    let dims: Vec<usize> = raw[4..header]
        .chunks_exact(4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .collect();
    let count = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= MAX_VALUES)
        .ok_or_else(|| format!("IDX dimensions {dims:?} are too large"))?;
    let body = &raw[header..];
    if body.len() != count {
        return Err(format!("IDX dimensions {dims:?} need {count} bytes of data, found {}", body.len()));
    }
    Ok(IdxArray { dims, data: body.to_vec() })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    /// Encodes `data` as a gzipped IDX file of unsigned bytes; shared with the dataset tests.
    pub(crate) fn write_idx_gz(path: &Path, dims: &[u32], data: &[u8]) {
        let mut raw = vec![0, 0, TYPE_U8, dims.len() as u8];
        for d in dims {
            raw.extend_from_slice(&d.to_be_bytes());
        }
        raw.extend_from_slice(data);
        let mut enc = flate2::write::GzEncoder::new(std::fs::File::create(path).unwrap(), flate2::Compression::fast());
        enc.write_all(&raw).unwrap();
        enc.finish().unwrap();
    }

    #[test]
    fn reads_a_written_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x-idx3-ubyte.gz");
        let data: Vec<u8> = (0..24).collect();
        write_idx_gz(&path, &[2, 3, 4], &data);
        let arr = read_idx_gz(&path).unwrap();
        assert_eq!(arr.dims, vec![2, 3, 4]);
        assert_eq!(arr.data, data);
    }

    #[test]
    fn rejects_bad_headers_with_a_reason() {
        let cases: &[(&[u8], &str)] = &[
            (&[0, 0], "too short"),
            (&[1, 0, 8, 1, 0, 0, 0, 0], "bad IDX magic"),
            (&[0, 0, 0x0d, 1, 0, 0, 0, 0], "not supported"),
            (&[0, 0, 8, 2, 0, 0, 0, 1], "declares 2 dimensions"),
            (&[0, 0, 8, 1, 0, 0, 0, 3, 7, 7], "need 3 bytes of data, found 2"),
            (&[0, 0, 8, 2, 255, 255, 255, 255, 255, 255, 255, 255], "too large"),
        ];
        for (raw, want) in cases {
            let err = parse_idx(raw).unwrap_err();
            assert!(err.contains(want), "{raw:?}: {err}");
        }
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plain.gz");
        std::fs::write(&path, b"not gzip").unwrap();
        let err = read_idx_gz(&path).unwrap_err().to_string();
        assert!(err.contains("plain.gz") && err.contains("gzip"), "{err}");
    }
}
