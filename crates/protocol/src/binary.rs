//! The raw tensor layout shared by Triton's HTTP binary extension and gRPC `raw_*_contents`: little-endian,
//! row-major, no padding; BOOL one byte each; BYTES each a 4-byte little-endian length then the bytes.

use ferry_types::{DataType, TensorData, bf16, f16};

/// Decodes `raw` as `count` elements of `datatype`.
///
/// # Errors
/// A message saying how the byte count or a BYTES length prefix disagrees with `count`.
pub fn decode_raw(datatype: DataType, count: usize, raw: &[u8]) -> Result<TensorData, String> {
    if let Some(size) = datatype.element_size() {
        let want = count.checked_mul(size).ok_or("shape is too large")?;
        if raw.len() != want {
            return Err(format!("{count} {datatype} elements need {want} bytes, got {}", raw.len()));
        }
    }
    macro_rules! le {
        ($variant:ident, $t:ty) => {
            TensorData::$variant(
                raw.chunks_exact(size_of::<$t>())
                    .map(|c| <$t>::from_le_bytes(c.try_into().unwrap_or_default()))
                    .collect(),
            )
        };
    }
    Ok(match datatype {
        DataType::Bool => {
            let mut out = Vec::with_capacity(raw.len());
            for (i, &b) in raw.iter().enumerate() {
                match b {
                    0 => out.push(false),
                    1 => out.push(true),
                    other => {
                        return Err(format!("BOOL element {i} is byte {other}, expected 0 or 1"));
                    }
                }
            }
            TensorData::Bool(out)
        }
        DataType::Uint8 => TensorData::Uint8(raw.to_vec()),
        DataType::Int8 => TensorData::Int8(raw.iter().map(|&b| i8::from_le_bytes([b])).collect()),
        DataType::Uint16 => le!(Uint16, u16),
        DataType::Uint32 => le!(Uint32, u32),
        DataType::Uint64 => le!(Uint64, u64),
        DataType::Int16 => le!(Int16, i16),
        DataType::Int32 => le!(Int32, i32),
        DataType::Int64 => le!(Int64, i64),
        DataType::Fp32 => le!(Fp32, f32),
        DataType::Fp64 => le!(Fp64, f64),
        DataType::Fp16 => {
            TensorData::Fp16(raw.chunks_exact(2).map(|c| f16::from_bits(u16::from_le_bytes([c[0], c[1]]))).collect())
        }
        DataType::Bf16 => {
            TensorData::Bf16(raw.chunks_exact(2).map(|c| bf16::from_bits(u16::from_le_bytes([c[0], c[1]]))).collect())
        }
        DataType::Bytes => TensorData::Bytes(decode_bytes(count, raw)?),
    })
}

fn decode_bytes(count: usize, mut raw: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    // Never trust `count` for an allocation: each element needs at least its 4-byte prefix.
    let mut out = Vec::with_capacity(count.min(raw.len() / 4));
    while !raw.is_empty() {
        let Some((len, rest)) = raw.split_first_chunk::<4>() else {
            return Err(format!("BYTES element {} has a truncated 4-byte length prefix", out.len()));
        };
        let len = u32::from_le_bytes(*len) as usize;
        if rest.len() < len {
            return Err(format!("BYTES element {} claims {len} bytes but only {} remain", out.len(), rest.len()));
        }
        out.push(rest[..len].to_vec());
        raw = &rest[len..];
    }
    if out.len() != count {
        return Err(format!("the shape holds {count} BYTES elements, but the data has {}", out.len()));
    }
    Ok(out)
}

/// Appends `data` in the raw layout to `out`.
pub fn encode_raw(data: &TensorData, out: &mut Vec<u8>) {
    macro_rules! le {
        ($v:expr) => {{
            out.reserve($v.len() * size_of_val(&$v[0..$v.len().min(1)]).max(1));
            for x in $v {
                out.extend_from_slice(&x.to_le_bytes());
            }
        }};
    }
    match data {
        TensorData::Bool(v) => out.extend(v.iter().map(|&b| u8::from(b))),
        TensorData::Uint8(v) => out.extend_from_slice(v),
        TensorData::Int8(v) => le!(v),
        TensorData::Uint16(v) => le!(v),
        TensorData::Uint32(v) => le!(v),
        TensorData::Uint64(v) => le!(v),
        TensorData::Int16(v) => le!(v),
        TensorData::Int32(v) => le!(v),
        TensorData::Int64(v) => le!(v),
        TensorData::Fp16(v) => le!(v),
        TensorData::Fp32(v) => le!(v),
        TensorData::Fp64(v) => le!(v),
        TensorData::Bf16(v) => le!(v),
        TensorData::Bytes(v) => {
            for b in v {
                // Elements over 4 GiB cannot be framed; outputs that large never reach here (body limits).
                out.extend_from_slice(&u32::try_from(b.len()).unwrap_or(u32::MAX).to_le_bytes());
                out.extend_from_slice(b);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_datatype_round_trips() {
        for dt in DataType::ALL {
            let data = match dt {
                DataType::Bytes => TensorData::Bytes(vec![b"a".to_vec(), Vec::new(), "é\"\t".as_bytes().to_vec()]),
                DataType::Bool => TensorData::Bool(vec![true, false, true]),
                _ => TensorData::zeros(dt, 3),
            };
            let mut raw = Vec::new();
            encode_raw(&data, &mut raw);
            assert_eq!(decode_raw(dt, 3, &raw).as_ref(), Ok(&data), "{dt}");
        }
    }

    #[test]
    fn fp32_layout_is_little_endian() {
        let mut raw = Vec::new();
        encode_raw(&TensorData::Fp32(vec![1.0]), &mut raw);
        assert_eq!(raw, vec![0, 0, 0x80, 0x3f]);
    }

    #[test]
    fn lengths_that_disagree_are_refused() {
        assert!(decode_raw(DataType::Fp32, 2, &[0; 7]).is_err());
        assert!(decode_raw(DataType::Bool, 1, &[2]).is_err());
        assert!(decode_raw(DataType::Bytes, 1, &[5, 0, 0, 0, b'a']).is_err());
        assert!(decode_raw(DataType::Bytes, 2, &[1, 0, 0, 0, b'a']).is_err());
        assert!(decode_raw(DataType::Bytes, 1, &[1, 0]).is_err());
        assert!(decode_raw(DataType::Fp64, usize::MAX, &[]).is_err());
    }
}
