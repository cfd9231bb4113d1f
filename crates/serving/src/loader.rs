//! Picking and starting the engine for a model.

use std::path::{Path, PathBuf};

use ferry_engine::{Engine, EngineError, EngineOptions, error_chain};
use ferry_engine_ort::OrtRuntime;
use ferry_engine_tract::TractEngine;

use crate::EngineChoice;

/// Server-wide engine settings.
#[derive(Debug, Clone, Default)]
pub struct EngineSettings {
    /// `libonnxruntime` to load, overriding the search.
    pub onnxruntime_lib: Option<PathBuf>,
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

/// Loads one instance of `path` on `kind`.
pub(crate) fn load_instance(
    kind: EngineKind,
    path: &Path,
    options: &EngineOptions,
    settings: &EngineSettings,
) -> Result<Box<dyn Engine>, EngineError> {
    match kind {
        EngineKind::Onnxruntime => {
            let rt = OrtRuntime::init(settings.onnxruntime_lib.as_deref())?;
            Ok(Box::new(rt.load(path, options)?))
        }
        EngineKind::Tract => Ok(Box::new(TractEngine::load(path)?)),
    }
}
