//! ONNX Runtime engine: runs ONNX models through the `ort` crate, with `libonnxruntime` loaded at run time.
//!
//! Loading at run time keeps the build offline and lets users bring any ONNX Runtime build (the PyPI wheel's, a
//! system package, a custom one). This crate only implements [`ferry_engine::Engine`]; it knows nothing of serving.

mod convert;
mod locate;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ferry_engine::{Engine, EngineError, EngineOptions, ModelData};
use ferry_types::{ModelSignature, NamedTensor, TensorSpec};
use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{OutputSelector, RunOptions, Session, SessionInputValue};
use ort::value::ValueType;

pub use locate::{LibrarySource, LocatedLibrary, locate_library};

const ENGINE: &str = "onnxruntime";

/// The process-wide ONNX Runtime: the loaded library and its environment.
///
/// ONNX Runtime can be loaded once per process, so the first [`OrtRuntime::init`] decides which library is used.
pub struct OrtRuntime {
    env: Environment,
    library: LocatedLibrary,
}

static RUNTIME: OnceLock<Result<OrtRuntime, String>> = OnceLock::new();

impl OrtRuntime {
    /// Finds and loads `libonnxruntime` (see [`locate_library`]) the first time; later calls return the same
    /// runtime, or the same error.
    ///
    /// # Errors
    /// [`EngineError::Unavailable`] when no library is found or it fails to load.
    pub fn init(explicit: Option<&Path>) -> Result<&'static Self, EngineError> {
        RUNTIME
            .get_or_init(|| {
                let library = locate_library(explicit)?;
                let builder =
                    ort::init_from(&library.path).map_err(|e| format!("loading {}: {e}", library.path.display()))?;
                let env = builder
                    .with_name("ferry")
                    .with_telemetry(false)
                    .build()
                    .map_err(|e| format!("starting ONNX Runtime from {}: {e}", library.path.display()))?;
                Ok(Self { env, library })
            })
            .as_ref()
            .map_err(|reason| EngineError::Unavailable { engine: ENGINE, reason: reason.clone() })
    }

    /// Which library was loaded and how it was found.
    #[must_use]
    pub fn library(&self) -> &LocatedLibrary {
        &self.library
    }

    /// Loads a model file into a new session.
    ///
    /// # Errors
    /// [`EngineError::Load`] when ONNX Runtime rejects the file (the message names a missing operator, if that is
    /// the cause), [`EngineError::UnsupportedSignature`] when an input or output is not a plain tensor.
    pub fn load(&'static self, path: &Path, options: &EngineOptions) -> Result<OrtEngine, EngineError> {
        self.load_model(ModelData::File(path), options)
    }

    /// Loads a model held in memory (a decrypted package, which must never touch the disk); `label` names it in
    /// errors and logs.
    ///
    /// # Errors
    /// As [`OrtRuntime::load`].
    pub fn load_bytes(
        &'static self,
        bytes: &[u8],
        label: &Path,
        options: &EngineOptions,
    ) -> Result<OrtEngine, EngineError> {
        self.load_model(ModelData::Memory { bytes, label }, options)
    }

    fn load_model(&'static self, model: ModelData<'_>, options: &EngineOptions) -> Result<OrtEngine, EngineError> {
        let path = model.label();
        let load_err = |e: ort::Error| EngineError::Load { engine: ENGINE, path: path.to_owned(), source: Box::new(e) };
        let build = || -> Result<Session, ort::Error> {
            let mut builder = Session::builder(&self.env)?
                .with_optimization_level(GraphOptimizationLevel::Level3)?
                .with_intra_threads(options.intra_op_threads.max(1))?
                .with_inter_threads(1)?
                // Idle intra-op threads must not spin: they would steal the cores the HTTP stack needs.
                .with_intra_op_spinning(false)?;
            match model {
                ModelData::File(path) => builder.commit_from_file(path),
                ModelData::Memory { bytes, .. } => builder.commit_from_memory(bytes),
            }
        };
        let session = build().map_err(load_err)?;
        let signature = signature_of(&session, path)?;
        let all_outputs = signature.outputs.iter().map(|o| o.name.clone()).collect();
        Ok(OrtEngine { session, signature, all_outputs, path: path.to_owned() })
    }
}

/// One ONNX Runtime session.
pub struct OrtEngine {
    session: Session,
    signature: ModelSignature,
    all_outputs: Vec<String>,
    path: PathBuf,
}

impl std::fmt::Debug for OrtEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrtEngine").field("path", &self.path).finish_non_exhaustive()
    }
}

fn signature_of(session: &Session, path: &Path) -> Result<ModelSignature, EngineError> {
    let spec = |outlet: &ort::value::Outlet, role: &str| -> Result<TensorSpec, EngineError> {
        let unsupported =
            |what: String| EngineError::UnsupportedSignature { engine: ENGINE, path: path.to_owned(), what };
        match outlet.dtype() {
            ValueType::Tensor { ty, shape, .. } => {
                let datatype = convert::datatype_of(*ty).ok_or_else(|| {
                    unsupported(format!(
                        "{role} {:?} has element type {ty}, which the protocol cannot carry",
                        outlet.name()
                    ))
                })?;
                Ok(TensorSpec {
                    name: outlet.name().to_owned(),
                    datatype,
                    shape: shape.iter().map(|&d| if d < 0 { -1 } else { d }).collect(),
                })
            }
            ValueType::Sequence(inner) if matches!(**inner, ValueType::Map { .. }) => Err(unsupported(format!(
                "{role} {:?} is a sequence of maps (scikit-learn's ZipMap); convert the model with skl2onnx option {{'zipmap': False}}",
                outlet.name()
            ))),
            other => Err(unsupported(format!("{role} {:?} is a {other:?}, not a tensor", outlet.name()))),
        }
    };
    Ok(ModelSignature {
        inputs: session.inputs().iter().map(|o| spec(o, "input")).collect::<Result<_, _>>()?,
        outputs: session.outputs().iter().map(|o| spec(o, "output")).collect::<Result<_, _>>()?,
    })
}

impl Engine for OrtEngine {
    fn signature(&self) -> &ModelSignature {
        &self.signature
    }

    fn infer(&mut self, inputs: &[NamedTensor], outputs: &[String]) -> Result<Vec<NamedTensor>, EngineError> {
        let run_err = |e: ort::Error| {
            // ONNX Runtime says INVALID_ARGUMENT when inputs disagree with the graph (e.g. shapes that one symbolic
            // dimension ties together): that is the caller's mistake, not the server's.
            if e.code() == ort::ErrorCode::InvalidArgument {
                EngineError::InvalidInput { message: e.to_string() }
            } else {
                EngineError::Inference { engine: ENGINE, source: Box::new(e) }
            }
        };
        let values: Vec<(&str, SessionInputValue<'_>)> =
            inputs.iter().map(|t| Ok((t.name.as_str(), convert::to_value(t)?))).collect::<Result<_, EngineError>>()?;
        let mut result = if outputs == self.all_outputs.as_slice() {
            self.session.run(values).map_err(run_err)?
        } else {
            let selector = outputs.iter().fold(OutputSelector::no_default(), |s, name| s.with(name.clone()));
            let options = RunOptions::new().map_err(run_err)?.with_outputs(selector);
            // `run_with_options` borrows the options for the outputs' lifetime; extract before they drop.
            let mut result = self.session.run_with_options(values, &options).map_err(run_err)?;
            return outputs.iter().map(|name| convert::take_output(&mut result, name)).collect();
        };
        outputs.iter().map(|name| convert::take_output(&mut result, name)).collect()
    }
}
