//! Tensors in every Open Inference Protocol datatype.

use std::fmt;
use std::str::FromStr;

use half::{bf16, f16};
use serde::{Deserialize, Serialize};

/// The element types of the Open Inference Protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum DataType {
    /// `BOOL`, one byte per element on the wire.
    Bool,
    /// `UINT8`
    Uint8,
    /// `UINT16`
    Uint16,
    /// `UINT32`
    Uint32,
    /// `UINT64`
    Uint64,
    /// `INT8`
    Int8,
    /// `INT16`
    Int16,
    /// `INT32`
    Int32,
    /// `INT64`
    Int64,
    /// `FP16`, IEEE half precision.
    Fp16,
    /// `FP32`
    Fp32,
    /// `FP64`
    Fp64,
    /// `BF16`, bfloat16.
    Bf16,
    /// `BYTES`, variable-length byte strings (ONNX `string`).
    Bytes,
}

impl DataType {
    /// Every datatype, in the protocol's order.
    pub const ALL: [Self; 14] = [
        Self::Bool,
        Self::Uint8,
        Self::Uint16,
        Self::Uint32,
        Self::Uint64,
        Self::Int8,
        Self::Int16,
        Self::Int32,
        Self::Int64,
        Self::Fp16,
        Self::Fp32,
        Self::Fp64,
        Self::Bf16,
        Self::Bytes,
    ];

    /// The protocol's name, e.g. `FP32`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Bool => "BOOL",
            Self::Uint8 => "UINT8",
            Self::Uint16 => "UINT16",
            Self::Uint32 => "UINT32",
            Self::Uint64 => "UINT64",
            Self::Int8 => "INT8",
            Self::Int16 => "INT16",
            Self::Int32 => "INT32",
            Self::Int64 => "INT64",
            Self::Fp16 => "FP16",
            Self::Fp32 => "FP32",
            Self::Fp64 => "FP64",
            Self::Bf16 => "BF16",
            Self::Bytes => "BYTES",
        }
    }

    /// Bytes per element in the raw little-endian layout; `None` for `BYTES`, whose elements vary in length.
    #[must_use]
    pub const fn element_size(self) -> Option<usize> {
        match self {
            Self::Bool | Self::Uint8 | Self::Int8 => Some(1),
            Self::Uint16 | Self::Int16 | Self::Fp16 | Self::Bf16 => Some(2),
            Self::Uint32 | Self::Int32 | Self::Fp32 => Some(4),
            Self::Uint64 | Self::Int64 | Self::Fp64 => Some(8),
            Self::Bytes => None,
        }
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DataType {
    type Err = TensorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| TensorError::UnknownDataType { given: s.chars().take(32).collect() })
    }
}

/// Why a tensor could not be built or combined.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TensorError {
    /// The datatype name is not one of the protocol's.
    #[error(
        "unknown datatype {given:?}; expected one of BOOL, UINT8, UINT16, UINT32, UINT64, INT8, INT16, INT32, INT64, FP16, FP32, FP64, BF16, BYTES"
    )]
    UnknownDataType {
        /// The refused name.
        given: String,
    },
    /// The number of elements does not match the shape.
    #[error("shape {shape:?} holds {expected} elements, but {actual} were given")]
    ElementCount {
        /// The declared shape.
        shape: Vec<usize>,
        /// Elements the shape holds.
        expected: usize,
        /// Elements given.
        actual: usize,
    },
    /// The shape's element count overflows.
    #[error("shape {shape:?} is too large")]
    ShapeOverflow {
        /// The declared shape.
        shape: Vec<usize>,
    },
    /// Tensors to be stacked differ in datatype or in a dimension other than the first.
    #[error("cannot stack tensors of {first} {first_shape:?} and {other} {other_shape:?}")]
    Incompatible {
        /// Datatype of the first tensor.
        first: DataType,
        /// Shape of the first tensor.
        first_shape: Vec<usize>,
        /// Datatype of the mismatching tensor.
        other: DataType,
        /// Shape of the mismatching tensor.
        other_shape: Vec<usize>,
    },
    /// A split asked for more rows than the tensor has, or the tensor has no first dimension.
    #[error("cannot split {rows} rows into parts of {parts:?}")]
    Split {
        /// Rows in the tensor.
        rows: usize,
        /// Requested part sizes.
        parts: Vec<usize>,
    },
}

/// The elements of a tensor, row-major, one variant per datatype.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// `BOOL`
    Bool(Vec<bool>),
    /// `UINT8`
    Uint8(Vec<u8>),
    /// `UINT16`
    Uint16(Vec<u16>),
    /// `UINT32`
    Uint32(Vec<u32>),
    /// `UINT64`
    Uint64(Vec<u64>),
    /// `INT8`
    Int8(Vec<i8>),
    /// `INT16`
    Int16(Vec<i16>),
    /// `INT32`
    Int32(Vec<i32>),
    /// `INT64`
    Int64(Vec<i64>),
    /// `FP16`
    Fp16(Vec<f16>),
    /// `FP32`
    Fp32(Vec<f32>),
    /// `FP64`
    Fp64(Vec<f64>),
    /// `BF16`
    Bf16(Vec<bf16>),
    /// `BYTES`
    Bytes(Vec<Vec<u8>>),
}

/// Applies `$body` to the vector inside any [`TensorData`] variant, binding it as `$v`.
#[macro_export]
macro_rules! with_tensor_data {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            $crate::TensorData::Bool($v) => $body,
            $crate::TensorData::Uint8($v) => $body,
            $crate::TensorData::Uint16($v) => $body,
            $crate::TensorData::Uint32($v) => $body,
            $crate::TensorData::Uint64($v) => $body,
            $crate::TensorData::Int8($v) => $body,
            $crate::TensorData::Int16($v) => $body,
            $crate::TensorData::Int32($v) => $body,
            $crate::TensorData::Int64($v) => $body,
            $crate::TensorData::Fp16($v) => $body,
            $crate::TensorData::Fp32($v) => $body,
            $crate::TensorData::Fp64($v) => $body,
            $crate::TensorData::Bf16($v) => $body,
            $crate::TensorData::Bytes($v) => $body,
        }
    };
}

/// Rebuilds the same [`TensorData`] variant from an expression over the inner vector `$v`.
macro_rules! map_tensor_data {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            TensorData::Bool($v) => TensorData::Bool($body),
            TensorData::Uint8($v) => TensorData::Uint8($body),
            TensorData::Uint16($v) => TensorData::Uint16($body),
            TensorData::Uint32($v) => TensorData::Uint32($body),
            TensorData::Uint64($v) => TensorData::Uint64($body),
            TensorData::Int8($v) => TensorData::Int8($body),
            TensorData::Int16($v) => TensorData::Int16($body),
            TensorData::Int32($v) => TensorData::Int32($body),
            TensorData::Int64($v) => TensorData::Int64($body),
            TensorData::Fp16($v) => TensorData::Fp16($body),
            TensorData::Fp32($v) => TensorData::Fp32($body),
            TensorData::Fp64($v) => TensorData::Fp64($body),
            TensorData::Bf16($v) => TensorData::Bf16($body),
            TensorData::Bytes($v) => TensorData::Bytes($body),
        }
    };
}

impl TensorData {
    /// The datatype of these elements.
    #[must_use]
    pub const fn datatype(&self) -> DataType {
        match self {
            Self::Bool(_) => DataType::Bool,
            Self::Uint8(_) => DataType::Uint8,
            Self::Uint16(_) => DataType::Uint16,
            Self::Uint32(_) => DataType::Uint32,
            Self::Uint64(_) => DataType::Uint64,
            Self::Int8(_) => DataType::Int8,
            Self::Int16(_) => DataType::Int16,
            Self::Int32(_) => DataType::Int32,
            Self::Int64(_) => DataType::Int64,
            Self::Fp16(_) => DataType::Fp16,
            Self::Fp32(_) => DataType::Fp32,
            Self::Fp64(_) => DataType::Fp64,
            Self::Bf16(_) => DataType::Bf16,
            Self::Bytes(_) => DataType::Bytes,
        }
    }

    /// Number of elements.
    #[must_use]
    pub fn len(&self) -> usize {
        with_tensor_data!(self, v => v.len())
    }

    /// Whether there are no elements.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `n` default elements (zero, false, empty string) of `datatype`.
    #[must_use]
    pub fn zeros(datatype: DataType, n: usize) -> Self {
        match datatype {
            DataType::Bool => Self::Bool(vec![false; n]),
            DataType::Uint8 => Self::Uint8(vec![0; n]),
            DataType::Uint16 => Self::Uint16(vec![0; n]),
            DataType::Uint32 => Self::Uint32(vec![0; n]),
            DataType::Uint64 => Self::Uint64(vec![0; n]),
            DataType::Int8 => Self::Int8(vec![0; n]),
            DataType::Int16 => Self::Int16(vec![0; n]),
            DataType::Int32 => Self::Int32(vec![0; n]),
            DataType::Int64 => Self::Int64(vec![0; n]),
            DataType::Fp16 => Self::Fp16(vec![f16::ZERO; n]),
            DataType::Fp32 => Self::Fp32(vec![0.0; n]),
            DataType::Fp64 => Self::Fp64(vec![0.0; n]),
            DataType::Bf16 => Self::Bf16(vec![bf16::ZERO; n]),
            DataType::Bytes => Self::Bytes(vec![Vec::new(); n]),
        }
    }

    /// An empty vector of `datatype` with room for `n` elements.
    #[must_use]
    pub fn with_capacity(datatype: DataType, n: usize) -> Self {
        map_tensor_data!(Self::zeros(datatype, 0), v => { let mut v = v; v.reserve(n); v })
    }

    /// Appends `other`'s elements; `false` (and nothing appended) when the datatypes differ.
    fn extend_from(&mut self, other: &Self) -> bool {
        match (self, other) {
            (Self::Bool(a), Self::Bool(b)) => a.extend_from_slice(b),
            (Self::Uint8(a), Self::Uint8(b)) => a.extend_from_slice(b),
            (Self::Uint16(a), Self::Uint16(b)) => a.extend_from_slice(b),
            (Self::Uint32(a), Self::Uint32(b)) => a.extend_from_slice(b),
            (Self::Uint64(a), Self::Uint64(b)) => a.extend_from_slice(b),
            (Self::Int8(a), Self::Int8(b)) => a.extend_from_slice(b),
            (Self::Int16(a), Self::Int16(b)) => a.extend_from_slice(b),
            (Self::Int32(a), Self::Int32(b)) => a.extend_from_slice(b),
            (Self::Int64(a), Self::Int64(b)) => a.extend_from_slice(b),
            (Self::Fp16(a), Self::Fp16(b)) => a.extend_from_slice(b),
            (Self::Fp32(a), Self::Fp32(b)) => a.extend_from_slice(b),
            (Self::Fp64(a), Self::Fp64(b)) => a.extend_from_slice(b),
            (Self::Bf16(a), Self::Bf16(b)) => a.extend_from_slice(b),
            (Self::Bytes(a), Self::Bytes(b)) => a.extend_from_slice(b),
            _ => return false,
        }
        true
    }

    /// Elements `range` as a new vector of the same datatype.
    fn slice(&self, range: std::ops::Range<usize>) -> Self {
        map_tensor_data!(self, v => v[range].to_vec())
    }
}

/// A dense tensor: a shape and exactly as many row-major elements as the shape holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: TensorData,
}

impl Tensor {
    /// Builds a tensor, checking that `data` holds exactly the elements `shape` asks for.
    ///
    /// # Errors
    /// [`TensorError::ElementCount`] or [`TensorError::ShapeOverflow`].
    pub fn new(shape: Vec<usize>, data: TensorData) -> Result<Self, TensorError> {
        let expected = element_count(&shape)?;
        if expected != data.len() {
            return Err(TensorError::ElementCount { shape, expected, actual: data.len() });
        }
        Ok(Self { shape, data })
    }

    /// A tensor of default elements.
    ///
    /// # Errors
    /// [`TensorError::ShapeOverflow`] when the shape's element count overflows.
    pub fn zeros(datatype: DataType, shape: Vec<usize>) -> Result<Self, TensorError> {
        let n = element_count(&shape)?;
        Ok(Self { shape, data: TensorData::zeros(datatype, n) })
    }

    /// The dimensions.
    #[must_use]
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The elements.
    #[must_use]
    pub fn data(&self) -> &TensorData {
        &self.data
    }

    /// The element type.
    #[must_use]
    pub const fn datatype(&self) -> DataType {
        self.data.datatype()
    }

    /// Number of elements.
    #[must_use]
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the tensor has no elements.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Shape and elements, by value.
    #[must_use]
    pub fn into_parts(self) -> (Vec<usize>, TensorData) {
        (self.shape, self.data)
    }

    /// Stacks tensors along the first dimension (the batch dimension).
    ///
    /// # Errors
    /// [`TensorError::Incompatible`] when datatypes, ranks or any non-first dimension differ.
    pub fn concat(parts: &[&Self]) -> Result<Self, TensorError> {
        let Some(first) = parts.first() else {
            return Err(TensorError::Split { rows: 0, parts: Vec::new() });
        };
        if first.shape.is_empty() {
            return Err(TensorError::Split { rows: 0, parts: Vec::new() });
        }
        let total: usize = parts.iter().map(|t| t.len()).sum();
        let mut data = TensorData::with_capacity(first.datatype(), total);
        let mut rows = 0;
        for t in parts {
            let compatible = t.shape.len() == first.shape.len() && t.shape[1..] == first.shape[1..];
            if !compatible || !data.extend_from(&t.data) {
                return Err(TensorError::Incompatible {
                    first: first.datatype(),
                    first_shape: first.shape.clone(),
                    other: t.datatype(),
                    other_shape: t.shape.clone(),
                });
            }
            rows += t.shape[0];
        }
        let mut shape = first.shape.clone();
        shape[0] = rows;
        Self::new(shape, data)
    }

    /// Splits along the first dimension into consecutive parts of `rows` rows each.
    ///
    /// # Errors
    /// [`TensorError::Split`] when the parts do not add up to the first dimension.
    pub fn split_rows(&self, rows: &[usize]) -> Result<Vec<Self>, TensorError> {
        let total = self.shape.first().copied().unwrap_or(0);
        if self.shape.is_empty() || rows.iter().sum::<usize>() != total {
            return Err(TensorError::Split { rows: total, parts: rows.to_vec() });
        }
        let row_len = self.len().checked_div(total).unwrap_or(0);
        let mut start = 0;
        let mut out = Vec::with_capacity(rows.len());
        for &r in rows {
            let mut shape = self.shape.clone();
            shape[0] = r;
            let end = start + r * row_len;
            out.push(Self { shape, data: self.data.slice(start..end) });
            start = end;
        }
        Ok(out)
    }
}

/// Elements a shape holds.
fn element_count(shape: &[usize]) -> Result<usize, TensorError> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| TensorError::ShapeOverflow { shape: shape.to_vec() })
}

/// A tensor with the name of the model input or output it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    /// Input or output name.
    pub name: String,
    /// The tensor.
    pub tensor: Tensor,
}

impl NamedTensor {
    /// Pairs a name with a tensor.
    #[must_use]
    pub fn new(name: impl Into<String>, tensor: Tensor) -> Self {
        Self { name: name.into(), tensor }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datatype_names_round_trip() {
        for d in DataType::ALL {
            assert_eq!(d.as_str().parse::<DataType>(), Ok(d));
            assert_eq!(TensorData::zeros(d, 3).datatype(), d);
        }
        assert!("FLOAT32".parse::<DataType>().is_err());
    }

    #[test]
    fn element_count_is_checked() {
        let err = Tensor::new(vec![2, 3], TensorData::Fp32(vec![0.0; 5]));
        assert_eq!(err, Err(TensorError::ElementCount { shape: vec![2, 3], expected: 6, actual: 5 }));
        assert!(Tensor::new(vec![usize::MAX, 2], TensorData::Fp32(vec![])).is_err());
        assert!(Tensor::new(vec![], TensorData::Int64(vec![7])).is_ok());
    }

    #[test]
    fn concat_then_split_gives_back_the_parts() {
        let a = Tensor::new(vec![1, 2], TensorData::Int32(vec![1, 2])).expect("a");
        let b = Tensor::new(vec![2, 2], TensorData::Int32(vec![3, 4, 5, 6])).expect("b");
        let ab = Tensor::concat(&[&a, &b]).expect("concat");
        assert_eq!(ab.shape(), &[3, 2]);
        assert_eq!(ab.data(), &TensorData::Int32(vec![1, 2, 3, 4, 5, 6]));
        assert_eq!(ab.split_rows(&[1, 2]).expect("split"), vec![a.clone(), b]);
        assert!(ab.split_rows(&[1, 1]).is_err());
        let wrong = Tensor::new(vec![1, 3], TensorData::Int32(vec![1, 2, 3])).expect("w");
        assert!(Tensor::concat(&[&a, &wrong]).is_err());
        let other_type = Tensor::new(vec![1, 2], TensorData::Fp32(vec![1.0, 2.0])).expect("f");
        assert!(Tensor::concat(&[&a, &other_type]).is_err());
    }
}
