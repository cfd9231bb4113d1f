//! Inference requests and responses over REST, JSON with optional binary tensor data.

use std::time::Duration;

use ferry_types::{DataType, NamedTensor, Tensor, TensorData};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::ProtocolError;
use crate::binary::{decode_raw, encode_raw};
use crate::elements::decode_json_data;

/// HTTP header giving the length of the JSON part of a body that carries binary tensor data.
pub const INFERENCE_HEADER_CONTENT_LENGTH: &str = "inference-header-content-length";

#[derive(Deserialize)]
struct RequestJson<'a> {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    #[serde(borrow)]
    inputs: Vec<InputJson<'a>>,
    #[serde(default)]
    outputs: Option<Vec<OutputRequestJson>>,
}

#[derive(Deserialize)]
struct InputJson<'a> {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct OutputRequestJson {
    name: String,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
}

/// An output the caller asked for, and whether it wants it as raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestedOutput {
    /// Output name.
    pub name: String,
    /// Return it as binary tensor data rather than JSON.
    pub binary: bool,
}

/// A decoded inference request, independent of the wire.
#[derive(Debug)]
pub struct DecodedRequest {
    /// The caller's request id, echoed in the response.
    pub id: Option<String>,
    /// Inputs, in the order sent.
    pub inputs: Vec<NamedTensor>,
    /// Outputs asked for; empty means every output.
    pub outputs: Vec<RequestedOutput>,
    /// `binary_data_output`: every output as raw bytes unless an output says otherwise.
    pub binary_data_output: bool,
    /// The `timeout` parameter (microseconds on the wire), if given.
    pub timeout: Option<Duration>,
}

// `at` names where the parameter is, written only into an error (formatting it for every request cost more than the
// rest of decoding a small request's parameters).
fn param_bool(
    params: Option<&Map<String, Value>>,
    key: &str,
    at: &dyn std::fmt::Display,
) -> Result<Option<bool>, ProtocolError> {
    match params.and_then(|p| p.get(key)) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => {
            Err(ProtocolError::Request { message: format!("{at}parameter {key:?} must be true or false, got {other}") })
        }
    }
}

fn param_u64(
    params: Option<&Map<String, Value>>,
    key: &str,
    at: &dyn std::fmt::Display,
) -> Result<Option<u64>, ProtocolError> {
    match params.and_then(|p| p.get(key)) {
        None => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| ProtocolError::Request {
            message: format!("{at}parameter {key:?} must be a non-negative integer, got {v}"),
        }),
    }
}

/// Decodes an inference request body.
///
/// `json_len` is the `Inference-Header-Content-Length` header: when present, the first `json_len` bytes are JSON
/// and the rest are the binary tensor data of the inputs that declare `binary_data_size`, in order.
///
/// # Errors
/// [`ProtocolError`] naming the field, input or byte range that is wrong.
pub fn decode_infer_request(json_len: Option<usize>, body: &[u8]) -> Result<DecodedRequest, ProtocolError> {
    let (json, mut binary) = match json_len {
        Some(n) if n > body.len() => {
            return Err(ProtocolError::Binary {
                message: format!("Inference-Header-Content-Length is {n} but the body has only {} bytes", body.len()),
            });
        }
        Some(n) => body.split_at(n),
        None => (body, &[][..]),
    };
    let req: RequestJson<'_> = serde_json::from_slice(json).map_err(|source| ProtocolError::Json { source })?;
    let params = req.parameters.as_ref();
    let binary_data_output = param_bool(params, "binary_data_output", &"")?.unwrap_or(false);
    let timeout = param_u64(params, "timeout", &"")?.map(Duration::from_micros);
    if req.inputs.is_empty() {
        return Err(ProtocolError::Request { message: "the request has no inputs".into() });
    }

    let mut inputs = Vec::with_capacity(req.inputs.len());
    for input in req.inputs {
        if inputs.iter().any(|t: &NamedTensor| t.name == input.name) {
            return Err(ProtocolError::Input { input: input.name, message: "appears more than once".into() });
        }
        let datatype: DataType =
            input.datatype.parse().map_err(|source| ProtocolError::Tensor { input: input.name.clone(), source })?;
        let shape =
            input.shape.iter().map(|&d| usize::try_from(d)).collect::<Result<Vec<usize>, _>>().map_err(|_| {
                ProtocolError::Input {
                    input: input.name.clone(),
                    message: format!("shape {:?} has a negative dimension", input.shape),
                }
            })?;
        let count = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or_else(|| ProtocolError::Input {
            input: input.name.clone(),
            message: format!("shape {shape:?} is too large"),
        })?;
        let at = format_args!("input {:?}: ", input.name);
        let binary_size = param_u64(input.parameters.as_ref(), "binary_data_size", &at)?;
        let data = match (binary_size, input.data) {
            (Some(_), Some(_)) => {
                return Err(ProtocolError::Input {
                    input: input.name,
                    message: "has both \"data\" and \"binary_data_size\"; send one".into(),
                });
            }
            (None, None) => {
                return Err(ProtocolError::Input { input: input.name, message: "has no \"data\"".into() });
            }
            (Some(size), None) => {
                let size = usize::try_from(size).unwrap_or(usize::MAX);
                if size > binary.len() {
                    return Err(ProtocolError::Binary {
                        message: format!(
                            "input {:?} declares binary_data_size {size} but only {} bytes of binary data remain",
                            input.name,
                            binary.len()
                        ),
                    });
                }
                let (mine, rest) = binary.split_at(size);
                binary = rest;
                decode_raw(datatype, count, mine)
                    .map_err(|message| ProtocolError::Input { input: input.name.clone(), message })?
            }
            (None, Some(raw)) => decode_json_data(datatype, raw.get()).map_err(|source| ProtocolError::Data {
                input: input.name.clone(),
                datatype,
                source,
            })?,
        };
        let tensor =
            Tensor::new(shape, data).map_err(|source| ProtocolError::Tensor { input: input.name.clone(), source })?;
        inputs.push(NamedTensor::new(input.name, tensor));
    }
    if !binary.is_empty() {
        return Err(ProtocolError::Binary {
            message: format!("{} bytes of binary data follow the JSON but no input claims them", binary.len()),
        });
    }

    let mut outputs: Vec<RequestedOutput> = Vec::new();
    for out in req.outputs.unwrap_or_default() {
        if outputs.iter().any(|o| o.name == out.name) {
            return Err(ProtocolError::Request {
                message: format!("output {:?} is requested more than once", out.name),
            });
        }
        let at = format_args!("output {:?}: ", out.name);
        if out.parameters.as_ref().is_some_and(|p| p.contains_key("classification")) {
            return Err(ProtocolError::Request {
                message: format!("{at}the classification extension is not supported; request the raw output"),
            });
        }
        let binary = param_bool(out.parameters.as_ref(), "binary_data", &at)?.unwrap_or(binary_data_output);
        outputs.push(RequestedOutput { name: out.name, binary });
    }
    Ok(DecodedRequest { id: req.id, inputs, outputs, binary_data_output, timeout })
}

/// Serializes tensor elements as a flat JSON array.
struct JsonData<'a>(&'a TensorData);

impl Serialize for JsonData<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        match self.0 {
            TensorData::Fp16(v) => v.iter().try_for_each(|x| seq.serialize_element(&x.to_f32()))?,
            TensorData::Bf16(v) => v.iter().try_for_each(|x| seq.serialize_element(&x.to_f32()))?,
            TensorData::Bytes(v) => {
                v.iter().try_for_each(|x| seq.serialize_element(std::str::from_utf8(x).unwrap_or_default()))?;
            }
            TensorData::Bool(v) => v.iter().try_for_each(|x| seq.serialize_element(x))?,
            TensorData::Uint8(v) => v.iter().try_for_each(|x| seq.serialize_element(x))?,
            TensorData::Uint16(v) => v.iter().try_for_each(|x| seq.serialize_element(x))?,
            TensorData::Uint32(v) => v.iter().try_for_each(|x| seq.serialize_element(x))?,
            TensorData::Uint64(v) => v.iter().try_for_each(|x| seq.serialize_element(x))?,
            TensorData::Int8(v) => v.iter().try_for_each(|x| seq.serialize_element(x))?,
            TensorData::Int16(v) => v.iter().try_for_each(|x| seq.serialize_element(x))?,
            TensorData::Int32(v) => v.iter().try_for_each(|x| seq.serialize_element(x))?,
            TensorData::Int64(v) => v.iter().try_for_each(|x| seq.serialize_element(x))?,
            TensorData::Fp32(v) => v.iter().try_for_each(|x| seq.serialize_element(x))?,
            TensorData::Fp64(v) => v.iter().try_for_each(|x| seq.serialize_element(x))?,
        }
        seq.end()
    }
}

/// Roughly the bytes one output takes in the response's JSON (a little over, for most data).
fn json_size_hint(t: &NamedTensor, binary: bool) -> usize {
    let fixed = 96 + t.name.len() + 8 * t.tensor.shape().len();
    if binary {
        return fixed;
    }
    // A float's shortest round-trip text is at most 24 bytes with its comma; integers and booleans take less.
    fixed
        + match t.tensor.data() {
            TensorData::Bytes(v) => v.iter().map(|b| b.len() + 3).sum(),
            data => data.len() * 24,
        }
}

/// An encoded response body; `json_len` is set when binary tensor data follows the JSON.
#[derive(Debug)]
pub struct EncodedResponse {
    /// The whole body.
    pub body: Vec<u8>,
    /// Length of the JSON part, for the `Inference-Header-Content-Length` header.
    pub json_len: Option<usize>,
}

/// Encodes an inference response; outputs flagged `true` travel as binary tensor data.
///
/// # Errors
/// [`ProtocolError::NonUtf8Output`] when a BYTES output asked for as JSON is not UTF-8.
pub fn encode_infer_response(
    model_name: &str,
    model_version: &str,
    id: Option<&str>,
    outputs: &[(NamedTensor, bool)],
) -> Result<EncodedResponse, ProtocolError> {
    // The binary outputs' data, which follows the JSON, and each one's size (in output order).
    let mut raw = Vec::new();
    let mut raw_sizes = Vec::new();
    for (t, binary) in outputs {
        let data = t.tensor.data();
        if *binary {
            let start = raw.len();
            encode_raw(data, &mut raw);
            raw_sizes.push(raw.len() - start);
        } else if let TensorData::Bytes(v) = data
            && v.iter().any(|b| std::str::from_utf8(b).is_err())
        {
            return Err(ProtocolError::NonUtf8Output { output: t.name.clone() });
        }
    }
    // Sized for the whole answer up front: growing it past a guess (a request id, a few more floats) cost a copy.
    let estimate = 96
        + model_name.len()
        + model_version.len()
        + id.map_or(0, str::len)
        + outputs.iter().map(|(t, binary)| json_size_hint(t, *binary)).sum::<usize>()
        + raw.len();
    let mut body = Vec::with_capacity(estimate);
    // The envelope by hand, in the order of the protocol's schema: through serde, every key and short string went
    // through the general escaping path, ~120 instructions each, 19 of them for a two-output answer with an id.
    body.extend_from_slice(br#"{"model_name":"#);
    json_string(&mut body, model_name)?;
    body.extend_from_slice(br#","model_version":"#);
    json_string(&mut body, model_version)?;
    if let Some(id) = id {
        body.extend_from_slice(br#","id":"#);
        json_string(&mut body, id)?;
    }
    body.extend_from_slice(br#","outputs":["#);
    let mut raw_sizes = raw_sizes.into_iter();
    for (i, (t, binary)) in outputs.iter().enumerate() {
        let data = t.tensor.data();
        body.extend_from_slice(if i == 0 { br#"{"name":"# } else { br#",{"name":"# });
        json_string(&mut body, &t.name)?;
        body.extend_from_slice(br#","datatype":""#);
        body.extend_from_slice(data.datatype().as_str().as_bytes());
        body.extend_from_slice(br#"","shape":["#);
        let mut digits = itoa::Buffer::new();
        for (j, &d) in t.tensor.shape().iter().enumerate() {
            if j > 0 {
                body.push(b',');
            }
            body.extend_from_slice(digits.format(d).as_bytes());
        }
        if *binary {
            body.extend_from_slice(br#"],"parameters":{"binary_data_size":"#);
            body.extend_from_slice(digits.format(raw_sizes.next().unwrap_or(0)).as_bytes());
            body.extend_from_slice(b"}}");
        } else {
            body.extend_from_slice(br#"],"data":"#);
            serde_json::to_writer(&mut body, &JsonData(data)).map_err(|source| ProtocolError::Json { source })?;
            body.push(b'}');
        }
    }
    body.extend_from_slice(b"]}");
    if !outputs.iter().any(|(_, b)| *b) {
        return Ok(EncodedResponse { body, json_len: None });
    }
    let json_len = body.len();
    body.extend_from_slice(&raw);
    Ok(EncodedResponse { body, json_len: Some(json_len) })
}

/// Writes `s` as a JSON string: as is between quotes when nothing in it needs escaping (names, versions, ids), else
/// through serde_json, which escapes exactly these bytes.
fn json_string(out: &mut Vec<u8>, s: &str) -> Result<(), ProtocolError> {
    // A fold, not `all`: without the early exit the check runs many bytes at a time.
    if s.bytes().fold(true, |plain, b| plain & (b >= 0x20) & (b != b'"') & (b != b'\\')) {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        Ok(())
    } else {
        serde_json::to_writer(out, s).map_err(|source| ProtocolError::Json { source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_request_decodes() {
        let body = br#"{"id":"r1","inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[[1,2],[3,4.5]]}],
            "outputs":[{"name":"y","parameters":{"binary_data":false}}]}"#;
        let req = decode_infer_request(None, body).expect("decode");
        assert_eq!(req.id.as_deref(), Some("r1"));
        assert_eq!(req.inputs[0].tensor.data(), &TensorData::Fp32(vec![1.0, 2.0, 3.0, 4.5]));
        assert_eq!(req.outputs, vec![RequestedOutput { name: "y".into(), binary: false }]);
    }

    #[test]
    fn a_binary_request_decodes() {
        let json = br#"{"inputs":[{"name":"a","shape":[2],"datatype":"INT32","parameters":{"binary_data_size":8}},
            {"name":"b","shape":[1],"datatype":"BYTES","parameters":{"binary_data_size":7}}],
            "parameters":{"binary_data_output":true}}"#;
        let mut body = json.to_vec();
        body.extend_from_slice(&[1, 0, 0, 0, 2, 0, 0, 0]);
        body.extend_from_slice(&[3, 0, 0, 0, b'a', b'b', b'c']);
        let req = decode_infer_request(Some(json.len()), &body).expect("decode");
        assert_eq!(req.inputs[0].tensor.data(), &TensorData::Int32(vec![1, 2]));
        assert_eq!(req.inputs[1].tensor.data(), &TensorData::Bytes(vec![b"abc".to_vec()]));
        assert!(req.binary_data_output);
        // One byte too many is an error, not silently ignored.
        body.push(0);
        assert!(decode_infer_request(Some(json.len()), &body).is_err());
    }

    #[test]
    fn client_mistakes_are_named() {
        let cases: &[(&[u8], &str)] = &[
            (b"{", "malformed request JSON"),
            (br#"{"inputs":[]}"#, "no inputs"),
            (br#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","data":[1]}]}"#, "shape [2] holds 2 elements, but 1 were given"),
            (br#"{"inputs":[{"name":"x","shape":[-1],"datatype":"FP32","data":[1]}]}"#, "negative dimension"),
            (br#"{"inputs":[{"name":"x","shape":[1],"datatype":"FLOAT","data":[1]}]}"#, "unknown datatype"),
            (br#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32"}]}"#, "has no \"data\""),
            (br#"{"inputs":[{"name":"x","shape":[1],"datatype":"INT8","data":[300]}]}"#, "does not match datatype INT8"),
            (br#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]},{"name":"x","shape":[1],"datatype":"FP32","data":[1]}]}"#, "more than once"),
            (br#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","parameters":{"binary_data_size":4}}]}"#, "only 0 bytes"),
            (br#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}],"parameters":{"timeout":"soon"}}"#, "timeout"),
        ];
        for (body, want) in cases {
            let err = decode_infer_request(None, body).expect_err("must fail").to_string();
            assert!(
                err.contains(want),
                "{} gave {err:?}, expected it to mention {want:?}",
                String::from_utf8_lossy(body)
            );
        }
        let err = decode_infer_request(Some(99), b"{}").expect_err("length").to_string();
        assert!(err.contains("Inference-Header-Content-Length is 99"), "{err}");
    }

    #[test]
    fn responses_encode_as_json_or_binary() {
        let t = NamedTensor::new("y", Tensor::new(vec![2], TensorData::Fp32(vec![1.0, 0.5])).expect("t"));
        let json = encode_infer_response("m", "1", Some("r"), &[(t.clone(), false)]).expect("json");
        assert_eq!(json.json_len, None);
        assert_eq!(
            String::from_utf8(json.body).expect("utf8"),
            r#"{"model_name":"m","model_version":"1","id":"r","outputs":[{"name":"y","datatype":"FP32","shape":[2],"data":[1.0,0.5]}]}"#
        );
        let bin = encode_infer_response("m", "1", None, &[(t, true)]).expect("binary");
        let n = bin.json_len.expect("binary part");
        assert!(String::from_utf8_lossy(&bin.body[..n]).contains(r#""parameters":{"binary_data_size":8}"#));
        assert_eq!(&bin.body[n..], &[0, 0, 0x80, 0x3f, 0, 0, 0, 0x3f]);
        let bad = NamedTensor::new("s", Tensor::new(vec![1], TensorData::Bytes(vec![vec![0xff]])).expect("s"));
        assert!(encode_infer_response("m", "1", None, &[(bad, false)]).is_err());
    }

    #[test]
    fn names_and_ids_that_need_escaping_are_escaped_and_binary_sizes_follow_their_outputs() {
        let id = "a\"b\\c\u{1}d\té\u{7f}";
        let text = NamedTensor::new(
            "say \"hi\"",
            Tensor::new(vec![2], TensorData::Bytes(vec![b"x\n".to_vec(), b"\\".to_vec()])).expect("t"),
        );
        let ints = NamedTensor::new("n", Tensor::new(vec![1, 3], TensorData::Int64(vec![-1, 0, 7])).expect("t"));
        let raw = NamedTensor::new("r", Tensor::new(vec![2, 1], TensorData::Fp32(vec![1.0, 2.0])).expect("t"));
        let bytes = NamedTensor::new("b", Tensor::new(vec![1], TensorData::Bytes(vec![b"abc".to_vec()])).expect("t"));
        let outputs = [(text, false), (raw, true), (ints, false), (bytes, true)];
        let encoded = encode_infer_response("m\\1", "2\n", Some(id), &outputs).expect("encoded");
        let n = encoded.json_len.expect("binary part");
        let json: Value = serde_json::from_slice(&encoded.body[..n]).expect("valid JSON");
        assert_eq!(
            json,
            serde_json::json!({
                "model_name": "m\\1", "model_version": "2\n", "id": id,
                "outputs": [
                    {"name": "say \"hi\"", "datatype": "BYTES", "shape": [2], "data": ["x\n", "\\"]},
                    {"name": "r", "datatype": "FP32", "shape": [2, 1], "parameters": {"binary_data_size": 8}},
                    {"name": "n", "datatype": "INT64", "shape": [1, 3], "data": [-1, 0, 7]},
                    {"name": "b", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 7}},
                ]
            })
        );
        assert_eq!(&encoded.body[n..], &[0, 0, 0x80, 0x3f, 0, 0, 0, 0x40, 3, 0, 0, 0, b'a', b'b', b'c']);
        // Escaped exactly as serde_json escapes (the fast path only skips strings with nothing to escape).
        let written = std::str::from_utf8(&encoded.body[..n]).expect("utf8");
        assert!(written.contains(&format!(",\"id\":{},", serde_json::to_string(id).expect("id"))), "{written}");
    }
}
