//! tract engine: runs ONNX models in pure Rust, with nothing to install.
//!
//! tract covers plain neural networks and a few `ai.onnx.ml` operators; models with operators it lacks are refused
//! at load with the operators named. This crate only implements [`ferry_engine::Engine`].

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use ferry_engine::{Engine, EngineError, ModelData};
use ferry_types::{DataType, ModelSignature, NamedTensor, Tensor, TensorData, TensorSpec};
use tract_onnx::prelude::{
    Datum, DatumType, Framework, InferenceFact, InferenceModelExt, IntoRunnable, IntoTValue, TDim, TValue, TVec,
    TypedModel, TypedRunnableModel,
};
use tract_onnx::tract_hir::infer::Factoid;

const ENGINE: &str = "tract";

/// Operators tract implements but computes differently from ONNX Runtime, found by the conformance suite. Serving a
/// wrong answer is worse than refusing, so models using them are refused with the reason.
const KNOWN_WRONG: &[(&str, &str)] =
    &[("TreeEnsembleClassifier", "tract 0.23 returns wrong class labels for it; serve this model with onnxruntime")];

/// A model loaded into tract.
pub struct TractEngine {
    plan: std::sync::Arc<TypedRunnableModel>,
    signature: ModelSignature,
    path: PathBuf,
}

impl std::fmt::Debug for TractEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TractEngine").field("path", &self.path).finish_non_exhaustive()
    }
}

impl TractEngine {
    /// Loads and optimises `path`.
    ///
    /// # Errors
    /// [`EngineError::UnsupportedOperator`] naming every operator tract lacks, [`EngineError::UnsupportedSignature`]
    /// for an input or output type the protocol cannot carry, [`EngineError::Load`] for anything else.
    pub fn load(path: &Path) -> Result<Self, EngineError> {
        Self::load_model(ModelData::File(path))
    }

    /// Loads and optimises a model held in memory; `label` names it in errors.
    ///
    /// # Errors
    /// As [`TractEngine::load`].
    pub fn load_bytes(bytes: &[u8], label: &Path) -> Result<Self, EngineError> {
        Self::load_model(ModelData::Memory { bytes, label })
    }

    fn load_model(model: ModelData<'_>) -> Result<Self, EngineError> {
        // tract panics on a few unsupported tensor encodings; a bad model must be an error, never a crash.
        catch_unwind(AssertUnwindSafe(|| Self::load_inner(model))).unwrap_or_else(|panic| {
            Err(EngineError::Load {
                engine: ENGINE,
                path: model.label().to_owned(),
                source: panic_message(&panic).into(),
            })
        })
    }

    fn load_inner(model: ModelData<'_>) -> Result<Self, EngineError> {
        let path = model.label();
        let load_err = |e: tract_onnx::prelude::TractError| EngineError::Load {
            engine: ENGINE,
            path: path.to_owned(),
            source: e.into(),
        };
        let onnx = tract_onnx::onnx();
        let proto = match model {
            ModelData::File(path) => onnx.proto_model_for_path(path),
            ModelData::Memory { mut bytes, .. } => onnx.proto_model_for_read(&mut bytes),
        }
        .map_err(load_err)?;
        if let Some(graph) = &proto.graph {
            let mut wrong: Vec<String> = graph
                .node
                .iter()
                .filter_map(|n| KNOWN_WRONG.iter().find(|(op, _)| *op == n.op_type))
                .map(|(op, why)| format!("{op} ({why})"))
                .collect();
            wrong.dedup();
            if !wrong.is_empty() {
                return Err(EngineError::UnsupportedOperator {
                    engine: ENGINE,
                    path: path.to_owned(),
                    operators: wrong.join(", "),
                });
            }
        }
        // External data is looked up beside a model file; a model in memory must carry all of its weights.
        let dir = match model {
            ModelData::File(path) => path.parent().and_then(Path::to_str),
            ModelData::Memory { .. } => None,
        };
        let mut model = onnx.parse(&proto, dir).map_err(load_err)?.model;
        let mut missing: Vec<String> = model
            .nodes()
            .iter()
            .filter_map(|n| {
                let name = n.op.name();
                name.strip_prefix("Unimplemented(").and_then(|s| s.strip_suffix(')')).map(str::to_owned)
            })
            .collect();
        if !missing.is_empty() {
            missing.sort();
            missing.dedup();
            return Err(EngineError::UnsupportedOperator {
                engine: ENGINE,
                path: path.to_owned(),
                operators: missing.join(", "),
            });
        }
        // Unnamed variable dimensions ("?") get a symbol each so that tract can type the graph.
        for ix in 0..model.inputs.len() {
            let fact = model.input_fact(ix).map_err(load_err)?.clone();
            let dims: Option<Vec<TDim>> = fact
                .shape
                .dims()
                .enumerate()
                .map(|(d, dim)| {
                    Some(dim.concretize().unwrap_or_else(|| model.symbols.sym(&format!("ferry_dim_{ix}_{d}")).into()))
                })
                .collect();
            if let (Some(dt), Some(dims)) = (fact.datum_type.concretize(), dims) {
                model.set_input_fact(ix, InferenceFact::dt_shape(dt, dims)).map_err(load_err)?;
            }
        }
        let typed: TypedModel = model.into_typed().map_err(load_err)?;
        let signature = signature_of(&typed, path)?;
        let plan = typed.into_optimized().and_then(|m| m.into_runnable()).map_err(load_err)?;
        Ok(Self { plan, signature, path: path.to_owned() })
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "tract panicked".to_owned())
}

fn signature_of(model: &TypedModel, path: &Path) -> Result<ModelSignature, EngineError> {
    let spec = |outlet: tract_onnx::prelude::OutletId, role: &str| -> Result<TensorSpec, EngineError> {
        let name =
            model.outlet_label(outlet).map(str::to_owned).unwrap_or_else(|| model.node(outlet.node).name.clone());
        let fact = model.outlet_fact(outlet).map_err(|e| EngineError::Load {
            engine: ENGINE,
            path: path.to_owned(),
            source: e.into(),
        })?;
        let datatype = datatype_of(fact.datum_type).ok_or_else(|| EngineError::UnsupportedSignature {
            engine: ENGINE,
            path: path.to_owned(),
            what: format!("{role} {name:?} has element type {:?}, which tract cannot serve", fact.datum_type),
        })?;
        let shape = fact.shape.iter().map(|d| d.to_i64().unwrap_or(-1)).collect();
        Ok(TensorSpec { name, datatype, shape })
    };
    Ok(ModelSignature {
        inputs: model
            .input_outlets()
            .iter()
            .flat_map(|o| o.iter())
            .map(|&o| spec(o, "input"))
            .collect::<Result<_, _>>()?,
        outputs: model
            .output_outlets()
            .iter()
            .flat_map(|o| o.iter())
            .map(|&o| spec(o, "output"))
            .collect::<Result<_, _>>()?,
    })
}

fn datatype_of(dt: DatumType) -> Option<DataType> {
    Some(match dt {
        DatumType::Bool => DataType::Bool,
        DatumType::U8 => DataType::Uint8,
        DatumType::U16 => DataType::Uint16,
        DatumType::U32 => DataType::Uint32,
        DatumType::U64 => DataType::Uint64,
        DatumType::I8 => DataType::Int8,
        DatumType::I16 => DataType::Int16,
        DatumType::I32 => DataType::Int32,
        DatumType::I64 => DataType::Int64,
        DatumType::F16 => DataType::Fp16,
        DatumType::F32 => DataType::Fp32,
        DatumType::F64 => DataType::Fp64,
        DatumType::String => DataType::Bytes,
        _ => return None,
    })
}

fn inference_err(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> EngineError {
    EngineError::Inference { engine: ENGINE, source: e.into() }
}

fn to_tract(t: &NamedTensor) -> Result<TValue, EngineError> {
    let shape = t.tensor.shape();
    fn plain<T: Datum + Copy>(shape: &[usize], v: &[T]) -> Result<TValue, EngineError> {
        tract_onnx::prelude::Tensor::from_shape(shape, v).map(IntoTValue::into_tvalue).map_err(inference_err)
    }
    match t.tensor.data() {
        TensorData::Bool(v) => plain(shape, v),
        TensorData::Uint8(v) => plain(shape, v),
        TensorData::Uint16(v) => plain(shape, v),
        TensorData::Uint32(v) => plain(shape, v),
        TensorData::Uint64(v) => plain(shape, v),
        TensorData::Int8(v) => plain(shape, v),
        TensorData::Int16(v) => plain(shape, v),
        TensorData::Int32(v) => plain(shape, v),
        TensorData::Int64(v) => plain(shape, v),
        TensorData::Fp16(v) => plain(shape, v),
        TensorData::Fp32(v) => plain(shape, v),
        TensorData::Fp64(v) => plain(shape, v),
        TensorData::Bf16(_) => Err(EngineError::UnsupportedDataType { engine: ENGINE, datatype: DataType::Bf16 }),
        TensorData::Bytes(v) => {
            let strings = v
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    String::from_utf8(b.clone()).map_err(|_| EngineError::InvalidInput {
                        message: format!(
                            "input {:?} element {i} is not valid UTF-8, which ONNX string tensors require",
                            t.name
                        ),
                    })
                })
                .collect::<Result<Vec<String>, _>>()?;
            tract_onnx::prelude::tract_ndarray::ArrayD::from_shape_vec(shape, strings)
                .map(|a| tract_onnx::prelude::Tensor::from(a).into_tvalue())
                .map_err(inference_err)
        }
    }
}

fn from_tract(name: &str, value: &TValue) -> Result<NamedTensor, EngineError> {
    fn plain<T: Datum + Copy>(value: &TValue) -> Result<Vec<T>, EngineError> {
        value.try_as_plain_ram().and_then(|v| v.as_slice::<T>().map(<[T]>::to_vec)).map_err(inference_err)
    }
    let data = match value.datum_type() {
        DatumType::Bool => TensorData::Bool(plain(value)?),
        DatumType::U8 => TensorData::Uint8(plain(value)?),
        DatumType::U16 => TensorData::Uint16(plain(value)?),
        DatumType::U32 => TensorData::Uint32(plain(value)?),
        DatumType::U64 => TensorData::Uint64(plain(value)?),
        DatumType::I8 => TensorData::Int8(plain(value)?),
        DatumType::I16 => TensorData::Int16(plain(value)?),
        DatumType::I32 => TensorData::Int32(plain(value)?),
        DatumType::I64 => TensorData::Int64(plain(value)?),
        DatumType::F16 => TensorData::Fp16(plain(value)?),
        DatumType::F32 => TensorData::Fp32(plain(value)?),
        DatumType::F64 => TensorData::Fp64(plain(value)?),
        DatumType::String => TensorData::Bytes(
            value
                .try_as_plain_ram()
                .and_then(|v| v.as_slice::<String>().map(|s| s.iter().map(|s| s.as_bytes().to_vec()).collect()))
                .map_err(inference_err)?,
        ),
        other => {
            return Err(inference_err(format!(
                "output {name:?} has element type {other:?}, which the protocol cannot carry"
            )));
        }
    };
    let tensor = Tensor::new(value.shape().to_vec(), data).map_err(inference_err)?;
    Ok(NamedTensor::new(name, tensor))
}

impl Engine for TractEngine {
    fn signature(&self) -> &ModelSignature {
        &self.signature
    }

    fn infer(&mut self, inputs: &[NamedTensor], outputs: &[String]) -> Result<Vec<NamedTensor>, EngineError> {
        let values: TVec<TValue> = inputs.iter().map(to_tract).collect::<Result<_, _>>()?;
        let plan = &self.plan;
        let results = catch_unwind(AssertUnwindSafe(|| plan.run(values)))
            .map_err(|p| inference_err(panic_message(&p)))?
            .map_err(inference_err)?;
        outputs
            .iter()
            .map(|name| {
                let ix = self
                    .signature
                    .outputs
                    .iter()
                    .position(|o| &o.name == name)
                    .ok_or_else(|| inference_err(format!("the model has no output {name:?}")))?;
                let value =
                    results.get(ix).ok_or_else(|| inference_err(format!("tract returned no output {name:?}")))?;
                from_tract(name, value)
            })
            .collect()
    }
}
