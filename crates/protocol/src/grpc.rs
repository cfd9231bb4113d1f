//! The Open Inference Protocol over gRPC: the generated `inference` messages and service, and conversions between
//! them and ferry's tensors.

use std::time::Duration;

use ferry_types::{DataType, NamedTensor, Tensor, TensorData};

use crate::binary::{decode_raw, encode_raw};
use crate::{DecodedRequest, ProtocolError, RequestedOutput};

/// Messages and service generated from `proto/inference.proto`.
#[expect(missing_docs, reason = "generated code")]
pub mod pb {
    tonic::include_proto!("inference");
}

use pb::infer_parameter::ParameterChoice;

fn input_err(input: &str, message: impl Into<String>) -> ProtocolError {
    ProtocolError::Input { input: input.to_owned(), message: message.into() }
}

/// Narrows typed contents to a smaller integer type, naming the first value out of range.
fn narrow<S: Copy + std::fmt::Display, T: TryFrom<S>>(
    input: &str,
    dt: DataType,
    values: &[S],
) -> Result<Vec<T>, ProtocolError> {
    values
        .iter()
        .enumerate()
        .map(|(i, &v)| T::try_from(v).map_err(|_| input_err(input, format!("element {i} ({v}) does not fit {dt}"))))
        .collect()
}

fn typed_contents(input: &str, dt: DataType, c: pb::InferTensorContents) -> Result<TensorData, ProtocolError> {
    Ok(match dt {
        DataType::Bool => TensorData::Bool(c.bool_contents),
        DataType::Int8 => TensorData::Int8(narrow(input, dt, &c.int_contents)?),
        DataType::Int16 => TensorData::Int16(narrow(input, dt, &c.int_contents)?),
        DataType::Int32 => TensorData::Int32(c.int_contents),
        DataType::Int64 => TensorData::Int64(c.int64_contents),
        DataType::Uint8 => TensorData::Uint8(narrow(input, dt, &c.uint_contents)?),
        DataType::Uint16 => TensorData::Uint16(narrow(input, dt, &c.uint_contents)?),
        DataType::Uint32 => TensorData::Uint32(c.uint_contents),
        DataType::Uint64 => TensorData::Uint64(c.uint64_contents),
        DataType::Fp32 => TensorData::Fp32(c.fp32_contents),
        DataType::Fp64 => TensorData::Fp64(c.fp64_contents),
        DataType::Bytes => TensorData::Bytes(c.bytes_contents),
        DataType::Fp16 | DataType::Bf16 => {
            return Err(input_err(input, format!("{dt} tensors must be sent in raw_input_contents")));
        }
    })
}

fn param_timeout(
    params: &std::collections::HashMap<String, pb::InferParameter>,
) -> Result<Option<Duration>, ProtocolError> {
    let Some(p) = params.get("timeout") else { return Ok(None) };
    let micros = match &p.parameter_choice {
        Some(ParameterChoice::Int64Param(v)) => u64::try_from(*v).ok(),
        Some(ParameterChoice::Uint64Param(v)) => Some(*v),
        _ => None,
    };
    micros.map(|m| Some(Duration::from_micros(m))).ok_or_else(|| ProtocolError::Request {
        message: "parameter \"timeout\" must be a non-negative integer (microseconds)".into(),
    })
}

/// Decodes a `ModelInferRequest` (typed `contents` or `raw_input_contents`) into tensors.
///
/// # Errors
/// [`ProtocolError`] naming the input whose datatype, shape or contents are wrong.
pub fn decode_model_infer(request: pb::ModelInferRequest) -> Result<DecodedRequest, ProtocolError> {
    let timeout = param_timeout(&request.parameters)?;
    if request.inputs.is_empty() {
        return Err(ProtocolError::Request { message: "the request has no inputs".into() });
    }
    let raw = request.raw_input_contents;
    if !raw.is_empty() && raw.len() != request.inputs.len() {
        return Err(ProtocolError::Binary {
            message: format!(
                "{} raw_input_contents for {} inputs; send one per input, in order",
                raw.len(),
                request.inputs.len()
            ),
        });
    }
    let mut raw = raw.into_iter();
    let mut inputs: Vec<NamedTensor> = Vec::with_capacity(request.inputs.len());
    for input in request.inputs {
        if inputs.iter().any(|t| t.name == input.name) {
            return Err(input_err(&input.name, "appears more than once"));
        }
        let dt: DataType =
            input.datatype.parse().map_err(|source| ProtocolError::Tensor { input: input.name.clone(), source })?;
        let shape = input
            .shape
            .iter()
            .map(|&d| usize::try_from(d))
            .collect::<Result<Vec<usize>, _>>()
            .map_err(|_| input_err(&input.name, format!("shape {:?} has a negative dimension", input.shape)))?;
        let count = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| input_err(&input.name, format!("shape {shape:?} is too large")))?;
        let data = match (raw.next(), input.contents) {
            (Some(_), Some(_)) => {
                return Err(input_err(&input.name, "has both contents and raw_input_contents; send one"));
            }
            (Some(bytes), None) => decode_raw(dt, count, &bytes).map_err(|m| input_err(&input.name, m))?,
            (None, Some(contents)) => typed_contents(&input.name, dt, contents)?,
            (None, None) => return Err(input_err(&input.name, "has no contents")),
        };
        let tensor =
            Tensor::new(shape, data).map_err(|source| ProtocolError::Tensor { input: input.name.clone(), source })?;
        inputs.push(NamedTensor::new(input.name, tensor));
    }
    let mut outputs: Vec<RequestedOutput> = Vec::with_capacity(request.outputs.len());
    for out in request.outputs {
        if outputs.iter().any(|o| o.name == out.name) {
            return Err(ProtocolError::Request {
                message: format!("output {:?} is requested more than once", out.name),
            });
        }
        if out.parameters.contains_key("classification") {
            return Err(ProtocolError::Request {
                message: format!("output {:?}: the classification extension is not supported", out.name),
            });
        }
        outputs.push(RequestedOutput { name: out.name, binary: true });
    }
    let id = Some(request.id).filter(|s| !s.is_empty());
    Ok(DecodedRequest { id, inputs, outputs, binary_data_output: true, timeout })
}

/// Encodes outputs as a `ModelInferResponse` in raw form (`raw_output_contents`), which every client reads.
#[must_use]
pub fn encode_model_infer(
    model_name: &str,
    model_version: &str,
    id: Option<String>,
    outputs: Vec<NamedTensor>,
) -> pb::ModelInferResponse {
    let mut raw_output_contents = Vec::with_capacity(outputs.len());
    let outputs = outputs
        .into_iter()
        .map(|t| {
            let mut bytes = Vec::new();
            encode_raw(t.tensor.data(), &mut bytes);
            raw_output_contents.push(bytes);
            pb::model_infer_response::InferOutputTensor {
                datatype: t.tensor.datatype().as_str().to_owned(),
                shape: t.tensor.shape().iter().map(|&d| i64::try_from(d).unwrap_or(i64::MAX)).collect(),
                name: t.name,
                parameters: std::collections::HashMap::new(),
                contents: None,
            }
        })
        .collect();
    pb::ModelInferResponse {
        model_name: model_name.to_owned(),
        model_version: model_version.to_owned(),
        id: id.unwrap_or_default(),
        parameters: std::collections::HashMap::new(),
        outputs,
        raw_output_contents,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(
        name: &str,
        dt: &str,
        shape: Vec<i64>,
        contents: Option<pb::InferTensorContents>,
    ) -> pb::model_infer_request::InferInputTensor {
        pb::model_infer_request::InferInputTensor {
            name: name.into(),
            datatype: dt.into(),
            shape,
            parameters: Default::default(),
            contents,
        }
    }

    #[test]
    fn typed_and_raw_contents_decode_alike() {
        let typed = pb::ModelInferRequest {
            inputs: vec![input(
                "x",
                "INT16",
                vec![2],
                Some(pb::InferTensorContents { int_contents: vec![-3, 7], ..Default::default() }),
            )],
            ..Default::default()
        };
        let raw = pb::ModelInferRequest {
            inputs: vec![input("x", "INT16", vec![2], None)],
            raw_input_contents: vec![vec![0xfd, 0xff, 7, 0]],
            ..Default::default()
        };
        let a = decode_model_infer(typed).expect("typed");
        let b = decode_model_infer(raw).expect("raw");
        assert_eq!(a.inputs, b.inputs);
        assert_eq!(a.inputs[0].tensor.data(), &TensorData::Int16(vec![-3, 7]));
    }

    #[test]
    fn mistakes_are_named() {
        let too_big = pb::ModelInferRequest {
            inputs: vec![input(
                "x",
                "INT8",
                vec![1],
                Some(pb::InferTensorContents { int_contents: vec![300], ..Default::default() }),
            )],
            ..Default::default()
        };
        assert!(decode_model_infer(too_big).expect_err("range").to_string().contains("does not fit INT8"));
        let fp16 = pb::ModelInferRequest {
            inputs: vec![input("h", "FP16", vec![1], Some(Default::default()))],
            ..Default::default()
        };
        assert!(decode_model_infer(fp16).expect_err("fp16").to_string().contains("raw_input_contents"));
        let miscount = pb::ModelInferRequest {
            inputs: vec![input("x", "FP32", vec![1], None), input("y", "FP32", vec![1], None)],
            raw_input_contents: vec![vec![0; 4]],
            ..Default::default()
        };
        assert!(decode_model_infer(miscount).expect_err("count").to_string().contains("one per input"));
        let short = pb::ModelInferRequest {
            inputs: vec![input("x", "FP32", vec![2], None)],
            raw_input_contents: vec![vec![0; 4]],
            ..Default::default()
        };
        assert!(decode_model_infer(short).expect_err("short").to_string().contains("need 8 bytes"));
    }

    #[test]
    fn responses_are_raw() {
        let t = NamedTensor::new("y", Tensor::new(vec![1], TensorData::Fp32(vec![1.0])).expect("t"));
        let r = encode_model_infer("m", "2", Some("id".into()), vec![t]);
        assert_eq!(r.raw_output_contents, vec![vec![0, 0, 0x80, 0x3f]]);
        assert_eq!((r.outputs[0].datatype.as_str(), r.outputs[0].shape.as_slice()), ("FP32", &[1_i64][..]));
        assert_eq!(r.id, "id");
    }
}
