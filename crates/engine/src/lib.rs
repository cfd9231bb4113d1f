//! The synchronous `Engine` trait every inference backend implements, the errors engines report, and the
//! conformance suite every engine must pass on the shared fixture models.
//!
//! Engines are synchronous on purpose: the serving layer runs each instance on its own OS thread, so nothing here
//! may depend on an async runtime, on the wire protocol, or on another engine.

pub mod conformance;

use std::path::PathBuf;

use ferry_types::{DataType, ErrorKind, HasErrorKind, ModelSignature, NamedTensor};

/// One loaded model in one engine, ready to run.
///
/// An instance is used by one thread at a time (`&mut self`); serving creates several instances for parallelism.
pub trait Engine: Send {
    /// The model's inputs and outputs as the model declares them.
    fn signature(&self) -> &ModelSignature;

    /// Runs the model.
    ///
    /// `inputs` are checked by the caller against [`Engine::signature`] (names, datatypes, shapes); `outputs` names
    /// the outputs wanted, in the order wanted, each one an output of the signature.
    ///
    /// # Errors
    /// [`EngineError::Inference`] when the engine fails on these inputs.
    fn infer(&mut self, inputs: &[NamedTensor], outputs: &[String]) -> Result<Vec<NamedTensor>, EngineError>;
}

/// Where an engine reads a model from.
#[derive(Debug, Clone, Copy)]
pub enum ModelData<'a> {
    /// An `.onnx` file (external data, if any, beside it).
    File(&'a std::path::Path),
    /// The model's bytes, held in memory (a decrypted package must never be written to disk); `label` names it in
    /// errors and logs.
    Memory {
        /// The `.onnx` bytes.
        bytes: &'a [u8],
        /// What to call it.
        label: &'a std::path::Path,
    },
}

impl ModelData<'_> {
    /// The file, or the label of the bytes.
    #[must_use]
    pub fn label(&self) -> &std::path::Path {
        match self {
            Self::File(path) => path,
            Self::Memory { label, .. } => label,
        }
    }
}

/// How an engine should set up a model instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineOptions {
    /// Threads one inference may use inside the engine (ONNX Runtime's intra-op pool).
    pub intra_op_threads: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self { intra_op_threads: 1 }
    }
}

/// What went wrong in an engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The engine's runtime library could not be found or initialised.
    #[error("{engine} is not available: {reason}")]
    Unavailable {
        /// Engine name.
        engine: &'static str,
        /// Why, in words a user can act on.
        reason: String,
    },
    /// The model file could not be read or parsed.
    #[error("{engine} could not load {path}")]
    Load {
        /// Engine name.
        engine: &'static str,
        /// The model file.
        path: PathBuf,
        /// The engine's own error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The model uses operators this engine does not implement.
    #[error("{engine} cannot run {path}: unsupported operator(s) {operators}")]
    UnsupportedOperator {
        /// Engine name.
        engine: &'static str,
        /// The model file.
        path: PathBuf,
        /// The missing operators, comma-separated.
        operators: String,
    },
    /// A model input or output has a type ferry cannot carry over the protocol.
    #[error("{engine} cannot serve {path}: {what}")]
    UnsupportedSignature {
        /// Engine name.
        engine: &'static str,
        /// The model file.
        path: PathBuf,
        /// Which input or output, and why.
        what: String,
    },
    /// The engine does not support a datatype for an input or output at run time.
    #[error("{engine} does not support {datatype} tensors")]
    UnsupportedDataType {
        /// Engine name.
        engine: &'static str,
        /// The datatype.
        datatype: DataType,
    },
    /// An input value the engine cannot accept although its type matches (e.g. a non-UTF-8 string).
    #[error("{message}")]
    InvalidInput {
        /// What is wrong, naming the input and element.
        message: String,
    },
    /// Running the model failed.
    #[error("{engine} failed to run the model")]
    Inference {
        /// Engine name.
        engine: &'static str,
        /// The engine's own error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl HasErrorKind for EngineError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Unavailable { .. } => ErrorKind::Unavailable,
            Self::Load { .. }
            | Self::UnsupportedOperator { .. }
            | Self::UnsupportedSignature { .. }
            | Self::InvalidInput { .. } => ErrorKind::InvalidInput,
            // Inputs were validated against the signature before reaching the engine; a failure here is a
            // model/engine fault, reported without internals.
            Self::UnsupportedDataType { .. } | Self::Inference { .. } => ErrorKind::Internal,
        }
    }
}

/// Renders an error and its whole `source` chain on one line, for logs and load errors.
#[must_use]
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut next = err.source();
    while let Some(e) = next {
        let s = e.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        next = e.source();
    }
    out
}
