//! Errors decoding or encoding protocol messages.

use ferry_types::{ErrorKind, HasErrorKind, TensorError};

/// A malformed or inconsistent protocol message.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The body is not valid JSON, or not a valid request object.
    #[error("malformed request JSON: {source}")]
    Json {
        /// The parser's error, with line and column.
        #[source]
        source: serde_json::Error,
    },
    /// An input's `data` does not fit its datatype.
    #[error("input {input:?}: data does not match datatype {datatype}: {source}")]
    Data {
        /// Input name.
        input: String,
        /// Declared datatype.
        datatype: ferry_types::DataType,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// An input's tensor is inconsistent (element count, datatype name).
    #[error("input {input:?}: {source}")]
    Tensor {
        /// Input name.
        input: String,
        /// What is inconsistent.
        #[source]
        source: TensorError,
    },
    /// Something else is wrong with one input.
    #[error("input {input:?}: {message}")]
    Input {
        /// Input name.
        input: String,
        /// What is wrong.
        message: String,
    },
    /// The binary tensor data does not match the JSON header.
    #[error("binary tensor data: {message}")]
    Binary {
        /// What is wrong.
        message: String,
    },
    /// A request-level field or parameter is invalid.
    #[error("{message}")]
    Request {
        /// What is wrong.
        message: String,
    },
    /// An output cannot be written as JSON (BYTES that are not UTF-8).
    #[error("output {output:?} holds bytes that are not UTF-8; request it with \"binary_data\": true")]
    NonUtf8Output {
        /// Output name.
        output: String,
    },
}

impl HasErrorKind for ProtocolError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Json { .. }
            | Self::Data { .. }
            | Self::Tensor { .. }
            | Self::Input { .. }
            | Self::Binary { .. }
            | Self::Request { .. }
            | Self::NonUtf8Output { .. } => ErrorKind::InvalidInput,
        }
    }
}
