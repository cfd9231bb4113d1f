//! The few header fields of an ONNX `ModelProto` the manifest records, read by walking the top-level protobuf
//! fields and seeking over the graph, so a 2 GB model is never loaded to learn its opset.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use crate::PackageError;

/// Producer and opsets of an ONNX model.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OnnxInfo {
    /// `ir_version`.
    pub ir_version: i64,
    /// `producer_name`.
    pub producer_name: String,
    /// `producer_version`.
    pub producer_version: String,
    /// `opset_import`: domain → version (the default domain as `ai.onnx`).
    pub opsets: BTreeMap<String, i64>,
    /// Whether a `graph` field was present.
    pub has_graph: bool,
}

// ModelProto field numbers (onnx.proto3).
const IR_VERSION: u64 = 1;
const PRODUCER_NAME: u64 = 2;
const PRODUCER_VERSION: u64 = 3;
const GRAPH: u64 = 7;
const OPSET_IMPORT: u64 = 8;
/// Header strings and opset entries are tiny; anything larger than this in those fields means a bad file.
const SMALL_FIELD: u64 = 64 * 1024;

/// Reads the header of the ONNX file at `path`.
///
/// # Errors
/// [`PackageError::Onnx`] when the file is not a protobuf `ModelProto` with a graph and an opset.
pub fn read_onnx_info(path: &Path) -> Result<OnnxInfo, PackageError> {
    let file = std::fs::File::open(path).map_err(PackageError::io(path))?;
    let len = file.metadata().map_err(PackageError::io(path))?.len();
    let mut r = BufReader::new(file);
    let mut info = OnnxInfo::default();
    let bad = |m: String| PackageError::Onnx(format!("{}: {m}", path.display()));
    loop {
        if r.fill_buf().map_err(PackageError::io(path))?.is_empty() {
            break;
        }
        let key = varint(&mut r).map_err(|e| bad(format!("not an ONNX model ({e})")))?;
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            0 => {
                let v = varint(&mut r).map_err(|e| bad(e.to_string()))?;
                if field == IR_VERSION {
                    info.ir_version = i64::try_from(v).map_err(|_| bad("ir_version out of range".into()))?;
                }
            }
            1 => skip(&mut r, 8, len).map_err(|e| bad(e.to_string()))?,
            5 => skip(&mut r, 4, len).map_err(|e| bad(e.to_string()))?,
            2 => {
                let n = varint(&mut r).map_err(|e| bad(e.to_string()))?;
                match field {
                    PRODUCER_NAME | PRODUCER_VERSION | OPSET_IMPORT => {
                        if n > SMALL_FIELD {
                            return Err(bad(format!("header field {field} is {n} bytes long")));
                        }
                        let mut buf = vec![0; usize::try_from(n).map_err(|_| bad("field too long".into()))?];
                        r.read_exact(&mut buf).map_err(|_| bad("truncated".into()))?;
                        match field {
                            PRODUCER_NAME => info.producer_name = String::from_utf8_lossy(&buf).into_owned(),
                            PRODUCER_VERSION => info.producer_version = String::from_utf8_lossy(&buf).into_owned(),
                            _ => {
                                let (domain, version) = opset(&buf).map_err(|e| bad(e.to_string()))?;
                                let domain = if domain.is_empty() { "ai.onnx".to_owned() } else { domain };
                                info.opsets.insert(domain, version);
                            }
                        }
                    }
                    _ => {
                        if field == GRAPH {
                            info.has_graph = true;
                        }
                        skip(&mut r, n, len).map_err(|e| bad(e.to_string()))?;
                    }
                }
            }
            w => return Err(bad(format!("not an ONNX model (wire type {w} in field {field})"))),
        }
    }
    if !info.has_graph || info.opsets.is_empty() {
        return Err(bad("not an ONNX model (no graph or no opset_import)".into()));
    }
    Ok(info)
}

fn varint(r: &mut impl Read) -> std::io::Result<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let mut b = [0u8; 1];
        r.read_exact(&mut b)?;
        value |= u64::from(b[0] & 0x7f) << shift;
        if b[0] & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "varint longer than 10 bytes"))
}

fn skip<R: BufRead + Seek>(r: &mut R, n: u64, len: u64) -> std::io::Result<()> {
    let pos = r.stream_position()?;
    if pos.checked_add(n).is_none_or(|end| end > len) {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "truncated"));
    }
    let n = i64::try_from(n).map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "field too long"))?;
    r.seek(SeekFrom::Current(n))?;
    Ok(())
}

/// `OperatorSetIdProto { domain = 1; version = 2; }`
fn opset(mut buf: &[u8]) -> std::io::Result<(String, i64)> {
    let (mut domain, mut version) = (String::new(), 0i64);
    while !buf.is_empty() {
        let key = varint(&mut buf)?;
        match (key >> 3, key & 7) {
            (1, 2) => {
                let n = usize::try_from(varint(&mut buf)?).unwrap_or(usize::MAX);
                let s = buf.get(..n).ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
                domain = String::from_utf8_lossy(s).into_owned();
                buf = &buf[n..];
            }
            (2, 0) => version = i64::try_from(varint(&mut buf)?).unwrap_or(i64::MAX),
            (_, 0) => {
                varint(&mut buf)?;
            }
            (_, 2) => {
                let n = usize::try_from(varint(&mut buf)?).unwrap_or(usize::MAX);
                buf = buf.get(n..).ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
            }
            _ => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "bad opset_import")),
        }
    }
    Ok((domain, version))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/models").join(name)
    }

    #[test]
    fn reads_the_producer_and_opsets_of_real_models() {
        let info = read_onnx_info(&fixture("mlp_classifier.onnx")).expect("mlp");
        assert_eq!(info.producer_name, "skl2onnx");
        assert_eq!(info.opsets.get("ai.onnx"), Some(&16));
        assert_eq!(info.opsets.get("ai.onnx.ml"), Some(&1));
        assert_eq!(info.ir_version, 8);
        let info = read_onnx_info(&fixture("tiny_add.onnx")).expect("tiny");
        assert_eq!(info.producer_name, "ferry-fixtures");
    }

    #[test]
    fn truncated_and_foreign_files_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bytes = std::fs::read(fixture("mlp_classifier.onnx")).expect("read");
        let cut = dir.path().join("cut.onnx");
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).expect("write");
        assert!(read_onnx_info(&cut).is_err());
        let csv = dir.path().join("x.onnx");
        std::fs::write(&csv, b"a,b,c\n1,2,3\n").expect("write");
        let err = read_onnx_info(&csv).expect_err("csv").to_string();
        assert!(err.contains("not an ONNX model"), "{err}");
    }
}
