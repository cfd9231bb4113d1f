//! The wire: Open Inference Protocol (KServe v2) JSON messages, Triton's binary tensor data extension, and
//! conversions between them and ferry's [`ferry_types`] tensors.
//!
//! Pure encoding and decoding: no I/O, no HTTP types, no knowledge of models beyond their signatures.

mod binary;
mod elements;
mod error;
pub mod grpc;
mod infer;
mod metadata;

pub use binary::{decode_raw, encode_raw};
pub use error::ProtocolError;
pub use infer::{
    DecodedRequest, EncodedResponse, INFERENCE_HEADER_CONTENT_LENGTH, RequestedOutput, decode_infer_request,
    encode_infer_response,
};
pub use metadata::{ErrorBody, ModelMetadata, ServerMetadata, TensorMetadata};
