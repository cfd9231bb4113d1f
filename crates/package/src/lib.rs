//! The `.ferry` package: one tar archive holding a manifest (identity, signature, lineage, SHA-256 and size of every
//! file), the ONNX model, the reference profile of the training data and optionally a validation set with its
//! baseline metrics. See `docs/package-format.md`.
//!
//! Everything here streams: a 2 GB model is hashed and copied in fixed-size chunks, never held in memory. Reading
//! verifies as it goes, so a truncated, corrupted or tampered package is refused with the file and the reason.

mod archive;
mod error;
mod features;
mod manifest;
mod onnx_info;
mod profile;
mod signing;

pub use archive::{
    MANIFEST_PATH, MODEL_PATH, PROFILE_PATH, PackageContents, PackageInput, VALIDATION_PATH, open_manifest,
    read_file_from, read_small_file, sha256_file, verify, verify_from, write_package,
};
pub use error::PackageError;
pub use features::{FeatureLayout, InputColumns};
pub use manifest::{
    FORMAT_VERSION, FileEntry, Framework, Lineage, Manifest, PredictionOutputs, Task, Validation, parse_manifest,
};
pub use onnx_info::{OnnxInfo, read_onnx_info};
pub use profile::{
    ColumnKind, ColumnProfile, ColumnProfiler, Histogram, MAX_CATEGORIES, Profile, QUANTILES, SAMPLE_SIZE, is_missing,
};
pub use signing::{
    PackageSignature, SIGNATURE_PATH, check_signature, generate_keypair, parse_public_key, parse_secret_key,
    public_key_text, sign_package,
};
