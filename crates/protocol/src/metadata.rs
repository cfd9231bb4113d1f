//! Health, server and model metadata messages, and the error body.

use serde::Serialize;

/// `GET /v2`.
#[derive(Debug, Serialize)]
pub struct ServerMetadata<'a> {
    /// Server name.
    pub name: &'a str,
    /// Server version.
    pub version: &'a str,
    /// Protocol extensions this server implements.
    pub extensions: &'a [&'a str],
}

/// One input or output in model metadata; `-1` marks a variable dimension.
#[derive(Debug, Serialize)]
pub struct TensorMetadata<'a> {
    /// Tensor name.
    pub name: &'a str,
    /// Protocol datatype name.
    pub datatype: &'a str,
    /// Dimensions.
    pub shape: &'a [i64],
}

/// `GET /v2/models/{name}[/versions/{v}]`.
#[derive(Debug, Serialize)]
pub struct ModelMetadata<'a> {
    /// Model name.
    pub name: &'a str,
    /// Versions available (as decimal strings).
    pub versions: Vec<String>,
    /// Backend platform, as Triton names it (`onnxruntime_onnx`, or `tract_onnx`).
    pub platform: &'a str,
    /// Inputs.
    pub inputs: Vec<TensorMetadata<'a>>,
    /// Outputs.
    pub outputs: Vec<TensorMetadata<'a>>,
}

/// The body of every error response.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    /// What went wrong.
    pub error: &'a str,
}
