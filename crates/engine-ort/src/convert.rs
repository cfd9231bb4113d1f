//! Conversions between ferry tensors and ONNX Runtime values.

use ferry_engine::EngineError;
use ferry_types::{DataType, NamedTensor, Tensor, TensorData};
use ort::session::{SessionInputValue, SessionOutputs};
use ort::value::{TensorElementType, TensorRef, ValueType};

use crate::ENGINE;

/// The protocol datatype of an ONNX element type, if the protocol has one.
pub(crate) fn datatype_of(ty: TensorElementType) -> Option<DataType> {
    Some(match ty {
        TensorElementType::Bool => DataType::Bool,
        TensorElementType::Uint8 => DataType::Uint8,
        TensorElementType::Uint16 => DataType::Uint16,
        TensorElementType::Uint32 => DataType::Uint32,
        TensorElementType::Uint64 => DataType::Uint64,
        TensorElementType::Int8 => DataType::Int8,
        TensorElementType::Int16 => DataType::Int16,
        TensorElementType::Int32 => DataType::Int32,
        TensorElementType::Int64 => DataType::Int64,
        TensorElementType::Float16 => DataType::Fp16,
        TensorElementType::Float32 => DataType::Fp32,
        TensorElementType::Float64 => DataType::Fp64,
        TensorElementType::Bfloat16 => DataType::Bf16,
        TensorElementType::String => DataType::Bytes,
        _ => return None,
    })
}

fn inference_err(e: ort::Error) -> EngineError {
    EngineError::Inference { engine: ENGINE, source: Box::new(e) }
}

/// A borrowed view of `t` as an ONNX Runtime input (strings are copied: ONNX Runtime keeps its own).
pub(crate) fn to_value(t: &NamedTensor) -> Result<SessionInputValue<'_>, EngineError> {
    let shape: Vec<i64> = t.tensor.shape().iter().map(|&d| i64::try_from(d).unwrap_or(i64::MAX)).collect();
    macro_rules! view {
        ($v:expr) => {
            TensorRef::from_array_view((shape, $v.as_slice())).map(SessionInputValue::from).map_err(inference_err)
        };
    }
    match t.tensor.data() {
        TensorData::Bool(v) => view!(v),
        TensorData::Uint8(v) => view!(v),
        TensorData::Uint16(v) => view!(v),
        TensorData::Uint32(v) => view!(v),
        TensorData::Uint64(v) => view!(v),
        TensorData::Int8(v) => view!(v),
        TensorData::Int16(v) => view!(v),
        TensorData::Int32(v) => view!(v),
        TensorData::Int64(v) => view!(v),
        TensorData::Fp16(v) => view!(v),
        TensorData::Fp32(v) => view!(v),
        TensorData::Fp64(v) => view!(v),
        TensorData::Bf16(v) => view!(v),
        TensorData::Bytes(v) => {
            // ONNX strings are UTF-8; anything else is the caller's mistake, named precisely.
            let strings = v
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    std::str::from_utf8(b).map(str::to_owned).map_err(|_| EngineError::InvalidInput {
                        message: format!(
                            "input {:?} element {i} is not valid UTF-8, which ONNX string tensors require",
                            t.name
                        ),
                    })
                })
                .collect::<Result<Vec<String>, _>>()?;
            ort::value::Tensor::from_string_array((shape, strings.as_slice()))
                .map(|t| SessionInputValue::from(t.into_dyn()))
                .map_err(inference_err)
        }
    }
}

/// Moves output `name` out of the session's results into a ferry tensor.
pub(crate) fn take_output(outputs: &mut SessionOutputs<'_>, name: &str) -> Result<NamedTensor, EngineError> {
    let missing = || EngineError::Inference {
        engine: ENGINE,
        source: format!("ONNX Runtime returned no output named {name:?}").into(),
    };
    let value = outputs.remove(name).ok_or_else(missing)?;
    let ValueType::Tensor { ty, .. } = value.dtype() else {
        return Err(EngineError::Inference {
            engine: ENGINE,
            source: format!("output {name:?} is not a tensor").into(),
        });
    };
    let ty = *ty;
    macro_rules! extract {
        ($variant:ident, $t:ty) => {{
            let (shape, data) = value.try_extract_tensor::<$t>().map_err(inference_err)?;
            (
                shape.iter().map(|&d| usize::try_from(d).unwrap_or(0)).collect::<Vec<_>>(),
                TensorData::$variant(data.to_vec()),
            )
        }};
    }
    let (shape, data) = match ty {
        TensorElementType::Bool => extract!(Bool, bool),
        TensorElementType::Uint8 => extract!(Uint8, u8),
        TensorElementType::Uint16 => extract!(Uint16, u16),
        TensorElementType::Uint32 => extract!(Uint32, u32),
        TensorElementType::Uint64 => extract!(Uint64, u64),
        TensorElementType::Int8 => extract!(Int8, i8),
        TensorElementType::Int16 => extract!(Int16, i16),
        TensorElementType::Int32 => extract!(Int32, i32),
        TensorElementType::Int64 => extract!(Int64, i64),
        TensorElementType::Float16 => extract!(Fp16, half::f16),
        TensorElementType::Float32 => extract!(Fp32, f32),
        TensorElementType::Float64 => extract!(Fp64, f64),
        TensorElementType::Bfloat16 => extract!(Bf16, half::bf16),
        TensorElementType::String => {
            let (shape, strings) = value.try_extract_strings().map_err(inference_err)?;
            (
                shape.iter().map(|&d| usize::try_from(d).unwrap_or(0)).collect(),
                TensorData::Bytes(strings.into_iter().map(String::into_bytes).collect()),
            )
        }
        other => {
            return Err(EngineError::Inference {
                engine: ENGINE,
                source: format!("output {name:?} has element type {other}, which the protocol cannot carry").into(),
            });
        }
    };
    let tensor =
        Tensor::new(shape, data).map_err(|e| EngineError::Inference { engine: ENGINE, source: Box::new(e) })?;
    Ok(NamedTensor::new(name, tensor))
}
