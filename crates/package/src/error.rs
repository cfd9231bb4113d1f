//! What can go wrong with a package.

use std::path::PathBuf;

/// A package error; every message names the file or field at fault.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The archive is not a readable `.ferry` package (truncated, not a tar archive, unexpected layout).
    #[error("not a valid .ferry package: {0}")]
    Malformed(String),
    /// A file's content does not match the manifest.
    #[error("{path} is corrupted or was tampered with: {reason}")]
    Checksum {
        /// The file inside the package.
        path: String,
        /// Expected versus found.
        reason: String,
    },
    /// The manifest is invalid or written by a newer ferry.
    #[error("manifest: {0}")]
    Manifest(String),
    /// The ONNX file cannot be read.
    #[error("ONNX model: {0}")]
    Onnx(String),
    /// CSV columns that do not fit the model's inputs, or bad CSV values.
    #[error("{0}")]
    Data(String),
}

impl PackageError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }
}
