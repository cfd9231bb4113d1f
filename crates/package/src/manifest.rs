//! The manifest: what a package is, where it came from, and the checksum of every file in it.

use std::collections::BTreeMap;

use ferry_types::{DataType, ModelName, ModelSignature};
use serde::{Deserialize, Serialize};

use crate::PackageError;

/// The format version this ferry writes. Readers accept every version up to it.
pub const FORMAT_VERSION: u32 = 1;

/// One file of the package, other than the manifest itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Path inside the archive.
    pub path: String,
    /// Lowercase hex SHA-256 of the content.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

/// What produced the model: the ONNX header fields and the packing tool.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Framework {
    /// The converter or framework that wrote the ONNX file (`producer_name`), e.g. `skl2onnx`.
    pub producer: String,
    /// Its version (`producer_version`).
    pub producer_version: String,
    /// ONNX IR version.
    pub ir_version: i64,
    /// Operator set versions by domain (`""` is the default ONNX domain, shown as `ai.onnx`).
    pub opsets: BTreeMap<String, i64>,
    /// The ferry version that packed it.
    pub packed_by: String,
}

/// Where the model came from.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lineage {
    /// SHA-256 of the package this one was derived from (retraining, optimisation).
    pub parent: Option<String>,
    /// SHA-256 of the training data file the reference profile was computed from.
    pub training_data: Option<String>,
    /// Commit of the code that trained the model.
    pub source_commit: Option<String>,
}

/// Kind of prediction, which decides the baseline metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// Class labels (accuracy, precision, recall, F1, ROC AUC, log loss).
    Classification,
    /// Numbers (MAE, RMSE, R²).
    Regression,
}

/// The outputs that carry a model's prediction, as `ferry pack` validates it and the server joins feedback to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PredictionOutputs {
    /// Classification or regression.
    pub task: Task,
    /// The output holding the predicted class id (integer) or value (float), one per row.
    pub predicted: String,
    /// Classification: a float `[N, k]` output of class probabilities, column j being class j.
    pub probabilities: Option<String>,
}

impl PredictionOutputs {
    /// Picks the outputs of `signature` for `task`; without a task, a model with an integer output (at most two
    /// dimensions) is a classifier and one with only float outputs a regressor.
    ///
    /// # Errors
    /// The model has no output of the kind the task needs.
    pub fn of(signature: &ModelSignature, task: Option<Task>) -> Result<Self, String> {
        let int_output = signature.outputs.iter().find(|o| is_integer(o.datatype) && o.shape.len() <= 2);
        let float_output =
            signature.outputs.iter().find(|o| matches!(o.datatype, DataType::Fp32 | DataType::Fp64 | DataType::Fp16));
        let task = task.unwrap_or(if int_output.is_some() { Task::Classification } else { Task::Regression });
        match task {
            Task::Classification => Ok(Self {
                task,
                predicted: int_output
                    .ok_or("classification needs an integer label output; the model has none")?
                    .name
                    .clone(),
                probabilities: float_output.filter(|o| o.shape.len() == 2).map(|o| o.name.clone()),
            }),
            Task::Regression => Ok(Self {
                task,
                predicted: float_output.ok_or("regression needs a float output; the model has none")?.name.clone(),
                probabilities: None,
            }),
        }
    }
}

fn is_integer(t: DataType) -> bool {
    matches!(
        t,
        DataType::Int64
            | DataType::Int32
            | DataType::Int16
            | DataType::Int8
            | DataType::Uint8
            | DataType::Uint16
            | DataType::Uint32
            | DataType::Uint64
    )
}

/// The validation set's description and the metrics the model reached on it when packed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Validation {
    /// The label column of `validation.csv`.
    pub label: String,
    /// Rows evaluated.
    pub rows: u64,
    /// Classification or regression.
    pub task: Task,
    /// Metric name → value.
    pub metrics: BTreeMap<String, f64>,
}

/// The package manifest (`manifest.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Format version of this manifest; see [`FORMAT_VERSION`].
    pub format_version: u32,
    /// Model name.
    pub name: ModelName,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Who owns the model (a team, a person).
    #[serde(default)]
    pub owner: String,
    /// Labels for search.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Free key → value metadata.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// The producer and opsets of the ONNX file.
    pub framework: Framework,
    /// Inputs and outputs, as the model declares them.
    pub signature: ModelSignature,
    /// RFC 3339 UTC time of packing.
    pub created_at: String,
    /// Every file except the manifest, with checksums.
    pub files: Vec<FileEntry>,
    /// Origin.
    #[serde(default)]
    pub lineage: Lineage,
    /// Names of the CSV feature columns, in the order they feed the model (empty without reference data).
    #[serde(default)]
    pub features: Vec<String>,
    /// Validation metrics, when a validation set was given.
    #[serde(default)]
    pub validation: Option<Validation>,
}

impl Manifest {
    /// The entry for `path`.
    #[must_use]
    pub fn file(&self, path: &str) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.path == path)
    }

    /// Total size of the files, in bytes.
    #[must_use]
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// Only the field every format version has, to pick the reader.
#[derive(Deserialize)]
struct VersionProbe {
    format_version: u32,
}

/// Reads a manifest of any supported format version.
///
/// # Errors
/// [`PackageError::Manifest`] for invalid JSON, a missing or newer `format_version`, or invalid fields.
pub fn parse_manifest(bytes: &[u8]) -> Result<Manifest, PackageError> {
    let probe: VersionProbe = serde_json::from_slice(bytes)
        .map_err(|e| PackageError::Manifest(format!("cannot read format_version: {e}")))?;
    match probe.format_version {
        // Version 1 is the current layout. A future version 2 adds a reader here that converts to `Manifest`.
        1 => serde_json::from_slice(bytes).map_err(|e| PackageError::Manifest(e.to_string())),
        0 => Err(PackageError::Manifest("format_version 0 does not exist".into())),
        v => Err(PackageError::Manifest(format!(
            "format_version {v} is newer than this ferry understands (up to {FORMAT_VERSION}); upgrade ferry"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_and_broken_manifests_are_refused_by_name() {
        let err = parse_manifest(br#"{"format_version": 7}"#).expect_err("newer").to_string();
        assert!(err.contains("format_version 7 is newer"), "{err}");
        let err = parse_manifest(b"{").expect_err("json").to_string();
        assert!(err.contains("format_version"), "{err}");
        let err = parse_manifest(br#"{"format_version": 1, "name": "../x"}"#).expect_err("name").to_string();
        assert!(err.contains("../x"), "{err}");
    }
}
