//! Picking and starting the engine for a model.

use std::path::{Path, PathBuf};

use ferry_engine::{Engine, EngineError, EngineOptions, ModelData, error_chain};
use ferry_engine_ort::OrtRuntime;
use ferry_engine_tract::TractEngine;
use ferry_types::{ModelSignature, TensorSpec};

use crate::{EngineChoice, ServingError};

/// Server-wide engine settings.
#[derive(Debug, Clone, Default)]
pub struct EngineSettings {
    /// `libonnxruntime` to load, overriding the search.
    pub onnxruntime_lib: Option<PathBuf>,
    /// The memory every loaded version's instances share.
    pub budget: crate::MemoryBudget,
}

/// The engine that serves a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    /// ONNX Runtime.
    Onnxruntime,
    /// tract.
    Tract,
}

impl EngineKind {
    /// Short name for logs and metadata.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Onnxruntime => "onnxruntime",
            Self::Tract => "tract",
        }
    }

    /// The platform string model metadata reports (Triton's for ONNX Runtime).
    #[must_use]
    pub const fn platform(self) -> &'static str {
        match self {
            Self::Onnxruntime => "onnxruntime_onnx",
            Self::Tract => "tract_onnx",
        }
    }
}

/// Decides which engine serves a model, and says why.
pub(crate) fn choose_engine(
    choice: EngineChoice,
    settings: &EngineSettings,
) -> Result<(EngineKind, String), EngineError> {
    let lib = settings.onnxruntime_lib.as_deref();
    match choice {
        EngineChoice::Tract => Ok((EngineKind::Tract, "configured engine = \"tract\"".into())),
        EngineChoice::Onnxruntime => {
            let rt = OrtRuntime::init(lib)?;
            Ok((
                EngineKind::Onnxruntime,
                format!(
                    "configured engine = \"onnxruntime\"; library {} (from {})",
                    rt.library().path.display(),
                    rt.library().source
                ),
            ))
        }
        EngineChoice::Auto => match OrtRuntime::init(lib) {
            Ok(rt) => Ok((
                EngineKind::Onnxruntime,
                format!("auto: ONNX Runtime found at {} (from {})", rt.library().path.display(), rt.library().source),
            )),
            Err(e) => {
                Ok((EngineKind::Tract, format!("auto: ONNX Runtime unavailable ({}); using tract", error_chain(&e))))
            }
        },
    }
}

/// Loads one instance of `model` on `kind`.
pub(crate) fn load_instance(
    kind: EngineKind,
    model: ModelData<'_>,
    options: &EngineOptions,
    settings: &EngineSettings,
) -> Result<Box<dyn Engine>, EngineError> {
    match (kind, model) {
        (EngineKind::Onnxruntime, model) => {
            let rt = OrtRuntime::init(settings.onnxruntime_lib.as_deref())?;
            Ok(Box::new(match model {
                ModelData::File(path) => rt.load(path, options)?,
                ModelData::Memory { bytes, label } => rt.load_bytes(bytes, label, options)?,
            }))
        }
        (EngineKind::Tract, ModelData::File(path)) => Ok(Box::new(TractEngine::load(path)?)),
        (EngineKind::Tract, ModelData::Memory { bytes, label }) => Ok(Box::new(TractEngine::load_bytes(bytes, label)?)),
    }
}

/// Opens one instance of the model at `path` outside of serving (to pack, verify or check it), with the engine
/// `choice` picks, and says which engine it is.
///
/// # Errors
/// [`ServingError::Load`] naming the file and the engine's reason.
pub fn open_engine(
    path: &Path,
    choice: EngineChoice,
    settings: &EngineSettings,
) -> Result<(Box<dyn Engine>, EngineKind), ServingError> {
    let load_err =
        |e: &EngineError| ServingError::Load { name: String::new(), path: path.to_owned(), message: error_chain(e) };
    let (kind, _) = choose_engine(choice, settings).map_err(|e| load_err(&e))?;
    let engine =
        load_instance(kind, ModelData::File(path), &EngineOptions::default(), settings).map_err(|e| load_err(&e))?;
    Ok((engine, kind))
}

/// Why `declared` (a package manifest's signature) does not describe `actual` (the model's own), if it does not:
/// names, order, datatypes and ranks must agree, and every dimension both fix must be equal.
#[must_use]
pub fn signature_mismatch(declared: &ModelSignature, actual: &ModelSignature) -> Option<String> {
    fn side(kind: &str, declared: &[TensorSpec], actual: &[TensorSpec]) -> Option<String> {
        let names = |s: &[TensorSpec]| s.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
        if names(declared) != names(actual) {
            return Some(format!(
                "{kind} are {:?} in the manifest but {:?} in the model",
                names(declared),
                names(actual)
            ));
        }
        for (d, a) in declared.iter().zip(actual) {
            let dims_agree =
                d.shape.len() == a.shape.len() && d.shape.iter().zip(&a.shape).all(|(x, y)| *x < 0 || *y < 0 || x == y);
            if d.datatype != a.datatype || !dims_agree {
                return Some(format!(
                    "{kind} {:?} is {} {:?} in the manifest but {} {:?} in the model",
                    d.name,
                    d.datatype.as_str(),
                    d.shape,
                    a.datatype.as_str(),
                    a.shape
                ));
            }
        }
        None
    }
    side("inputs", &declared.inputs, &actual.inputs).or_else(|| side("outputs", &declared.outputs, &actual.outputs))
}
