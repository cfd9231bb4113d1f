//! Shared vocabulary of ferry: tensors and their datatypes, model signatures, model names and versions, and the
//! transport-neutral error kinds every crate maps its errors to.
//!
//! This crate does no I/O and knows nothing of HTTP, gRPC, databases or engines; everything else depends on it.

mod error;
mod name;
mod signature;
mod tensor;

pub use error::{ErrorKind, HasErrorKind};
pub use name::{ModelName, ModelVersion, NameError};
pub use signature::{ModelSignature, TensorSpec};
pub use tensor::{DataType, NamedTensor, Tensor, TensorData, TensorError};

/// Half-precision float types used by [`TensorData::Fp16`] and [`TensorData::Bf16`].
pub use half::{bf16, f16};
