//! The engine conformance suite: every engine runs the same fixture models (made by `fixtures/make_fixtures.py`)
//! and must reproduce ONNX Runtime's reference outputs within each fixture's tolerance, or refuse the model at load
//! with an error naming what it lacks.

use std::path::{Path, PathBuf};

use ferry_types::{DataType, NamedTensor, Tensor, TensorData, bf16, f16};
use serde::Deserialize;

use crate::{Engine, EngineError, error_chain};

/// The repository's `fixtures/` folder.
#[must_use]
pub fn fixtures_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures");
    dir.canonicalize().unwrap_or(dir)
}

/// One fixture model with its reference cases.
#[derive(Debug, Clone)]
pub struct Fixture {
    /// Fixture name, e.g. `mlp_classifier`.
    pub name: String,
    /// Path of the `.onnx` file.
    pub model_path: PathBuf,
    /// Operator types the model uses (`domain:Op` outside the default domain).
    pub ops: Vec<String>,
    /// Absolute tolerance for floating-point outputs.
    pub atol: f64,
    /// Relative tolerance for floating-point outputs.
    pub rtol: f64,
    /// Inputs and the reference outputs ONNX Runtime produced for them.
    pub cases: Vec<Case>,
}

/// One set of inputs and the outputs expected for them.
#[derive(Debug, Clone)]
pub struct Case {
    /// Inputs, in model order.
    pub inputs: Vec<NamedTensor>,
    /// Every model output, in model order.
    pub outputs: Vec<NamedTensor>,
}

#[derive(Deserialize)]
struct ManifestFile {
    fixtures: Vec<ManifestEntry>,
}

#[derive(Deserialize)]
struct ManifestEntry {
    name: String,
    model: String,
    cases: String,
    #[serde(default)]
    ops: Vec<String>,
    atol: f64,
    rtol: f64,
}

#[derive(Deserialize)]
struct CaseFile {
    inputs: Vec<JsonTensor>,
    outputs: Vec<JsonTensor>,
}

/// A tensor as the fixture files write it: OIP datatype name, shape and flat data.
#[derive(Deserialize)]
pub struct JsonTensor {
    name: String,
    datatype: String,
    shape: Vec<usize>,
    data: Vec<serde_json::Value>,
}

impl JsonTensor {
    /// Converts to a named tensor.
    ///
    /// # Errors
    /// A message naming the tensor when a value does not fit the datatype.
    pub fn into_named(self) -> Result<NamedTensor, String> {
        let dt: DataType = self.datatype.parse().map_err(|e| format!("{}: {e}", self.name))?;
        let bad = |i: usize| format!("{}: element {i} does not fit {dt}", self.name);
        let num = |i: usize, v: &serde_json::Value| v.as_f64().ok_or_else(|| bad(i));
        let int = |i: usize, v: &serde_json::Value| v.as_i64().ok_or_else(|| bad(i));
        let uint = |i: usize, v: &serde_json::Value| v.as_u64().ok_or_else(|| bad(i));
        let it = self.data.iter().enumerate();
        // Narrowing casts are safe here: values were written from tensors of the same type.
        #[expect(clippy::cast_possible_truncation, reason = "fixture values come from tensors of this type")]
        let data = match dt {
            DataType::Bool => {
                TensorData::Bool(it.map(|(i, v)| v.as_bool().ok_or_else(|| bad(i))).collect::<Result<_, _>>()?)
            }
            DataType::Uint8 => {
                TensorData::Uint8(it.map(|(i, v)| uint(i, v).map(|x| x as u8)).collect::<Result<_, _>>()?)
            }
            DataType::Uint16 => {
                TensorData::Uint16(it.map(|(i, v)| uint(i, v).map(|x| x as u16)).collect::<Result<_, _>>()?)
            }
            DataType::Uint32 => {
                TensorData::Uint32(it.map(|(i, v)| uint(i, v).map(|x| x as u32)).collect::<Result<_, _>>()?)
            }
            DataType::Uint64 => TensorData::Uint64(it.map(|(i, v)| uint(i, v)).collect::<Result<_, _>>()?),
            DataType::Int8 => TensorData::Int8(it.map(|(i, v)| int(i, v).map(|x| x as i8)).collect::<Result<_, _>>()?),
            DataType::Int16 => {
                TensorData::Int16(it.map(|(i, v)| int(i, v).map(|x| x as i16)).collect::<Result<_, _>>()?)
            }
            DataType::Int32 => {
                TensorData::Int32(it.map(|(i, v)| int(i, v).map(|x| x as i32)).collect::<Result<_, _>>()?)
            }
            DataType::Int64 => TensorData::Int64(it.map(|(i, v)| int(i, v)).collect::<Result<_, _>>()?),
            DataType::Fp16 => {
                TensorData::Fp16(it.map(|(i, v)| num(i, v).map(f16::from_f64)).collect::<Result<_, _>>()?)
            }
            DataType::Fp32 => TensorData::Fp32(it.map(|(i, v)| num(i, v).map(|x| x as f32)).collect::<Result<_, _>>()?),
            DataType::Fp64 => TensorData::Fp64(it.map(|(i, v)| num(i, v)).collect::<Result<_, _>>()?),
            DataType::Bf16 => {
                TensorData::Bf16(it.map(|(i, v)| num(i, v).map(bf16::from_f64)).collect::<Result<_, _>>()?)
            }
            DataType::Bytes => TensorData::Bytes(
                it.map(|(i, v)| v.as_str().map(|s| s.as_bytes().to_vec()).ok_or_else(|| bad(i)))
                    .collect::<Result<_, _>>()?,
            ),
        };
        let tensor = Tensor::new(self.shape, data).map_err(|e| format!("{}: {e}", self.name))?;
        Ok(NamedTensor::new(self.name, tensor))
    }
}

/// Reads `fixtures/manifest.json` and every case file it names.
///
/// # Errors
/// A message naming the file that is missing or malformed.
pub fn load_fixtures(dir: &Path) -> Result<Vec<Fixture>, String> {
    let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()));
    let manifest_path = dir.join("manifest.json");
    let manifest: ManifestFile =
        serde_json::from_str(&read(&manifest_path)?).map_err(|e| format!("{}: {e}", manifest_path.display()))?;
    manifest
        .fixtures
        .into_iter()
        .map(|entry| {
            let cases_path = dir.join(&entry.cases);
            let files: Vec<CaseFile> =
                serde_json::from_str(&read(&cases_path)?).map_err(|e| format!("{}: {e}", cases_path.display()))?;
            let cases = files
                .into_iter()
                .map(|c| {
                    Ok(Case {
                        inputs: c.inputs.into_iter().map(JsonTensor::into_named).collect::<Result<_, String>>()?,
                        outputs: c.outputs.into_iter().map(JsonTensor::into_named).collect::<Result<_, String>>()?,
                    })
                })
                .collect::<Result<_, String>>()?;
            Ok(Fixture {
                name: entry.name,
                model_path: dir.join(entry.model),
                ops: entry.ops,
                atol: entry.atol,
                rtol: entry.rtol,
                cases,
            })
        })
        .collect()
}

/// Checks an engine's loaded fixture: signature, every reference case, and a request for a subset of outputs.
///
/// # Errors
/// A message saying which case and output differ, and how.
pub fn check_fixture(engine: &mut dyn Engine, fixture: &Fixture) -> Result<(), String> {
    let sig = engine.signature().clone();
    let first = fixture.cases.first().ok_or_else(|| format!("{}: no cases", fixture.name))?;
    let names = |ts: &[NamedTensor]| ts.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
    let sig_inputs: Vec<_> = sig.inputs.iter().map(|s| s.name.clone()).collect();
    let sig_outputs: Vec<_> = sig.outputs.iter().map(|s| s.name.clone()).collect();
    if sig_inputs != names(&first.inputs) || sig_outputs != names(&first.outputs) {
        return Err(format!(
            "{}: signature {sig_inputs:?} -> {sig_outputs:?} differs from the reference {:?} -> {:?}",
            fixture.name,
            names(&first.inputs),
            names(&first.outputs)
        ));
    }
    for (spec, t) in sig.inputs.iter().chain(&sig.outputs).zip(first.inputs.iter().chain(&first.outputs)) {
        if spec.datatype != t.tensor.datatype() || !spec.accepts_shape(t.tensor.shape()) {
            return Err(format!(
                "{}: {} is declared {} {:?} but the reference is {} {:?}",
                fixture.name,
                spec.name,
                spec.datatype,
                spec.shape,
                t.tensor.datatype(),
                t.tensor.shape()
            ));
        }
    }
    for (i, case) in fixture.cases.iter().enumerate() {
        let got = engine
            .infer(&case.inputs, &sig_outputs)
            .map_err(|e| format!("{} case {i}: {}", fixture.name, error_chain(&e)))?;
        compare(&fixture.name, i, &got, &case.outputs, fixture.atol, fixture.rtol)?;
        // Asking for the last output alone must give exactly that output.
        if let Some(last) = case.outputs.last() {
            let got = engine
                .infer(&case.inputs, std::slice::from_ref(&last.name))
                .map_err(|e| format!("{} case {i} (one output): {}", fixture.name, error_chain(&e)))?;
            compare(&fixture.name, i, &got, std::slice::from_ref(last), fixture.atol, fixture.rtol)?;
        }
    }
    Ok(())
}

fn compare(
    fixture: &str,
    case: usize,
    got: &[NamedTensor],
    want: &[NamedTensor],
    atol: f64,
    rtol: f64,
) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!("{fixture} case {case}: {} outputs returned, {} expected", got.len(), want.len()));
    }
    let mut problems = Vec::new();
    for (g, w) in got.iter().zip(want) {
        if let Err(e) = compare_one(&format!("{fixture} case {case} output {}", w.name), g, w, atol, rtol) {
            problems.push(e);
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(problems.join("\n")) }
}

fn compare_one(at: &str, g: &NamedTensor, w: &NamedTensor, atol: f64, rtol: f64) -> Result<(), String> {
    {
        if g.name != w.name || g.tensor.shape() != w.tensor.shape() || g.tensor.datatype() != w.tensor.datatype() {
            return Err(format!(
                "{at}: got {} {} {:?}, expected {} {} {:?}",
                g.name,
                g.tensor.datatype(),
                g.tensor.shape(),
                w.name,
                w.tensor.datatype(),
                w.tensor.shape()
            ));
        }
        match (as_f64(g.tensor.data()), as_f64(w.tensor.data())) {
            (Some(gv), Some(wv)) => {
                for (j, (a, b)) in gv.iter().zip(&wv).enumerate() {
                    let same = (a.is_nan() && b.is_nan()) || (a - b).abs() <= atol + rtol * b.abs();
                    if !same {
                        return Err(format!("{at}: element {j} is {a}, expected {b} (atol {atol}, rtol {rtol})"));
                    }
                }
            }
            _ => {
                if g.tensor.data() != w.tensor.data() {
                    return Err(format!("{at}: got {:?}, expected {:?}", g.tensor.data(), w.tensor.data()));
                }
            }
        }
    }
    Ok(())
}

/// Floating-point elements widened to `f64`; `None` for exact types, which are compared as they are.
fn as_f64(data: &TensorData) -> Option<Vec<f64>> {
    match data {
        TensorData::Fp16(v) => Some(v.iter().map(|x| x.to_f64()).collect()),
        TensorData::Bf16(v) => Some(v.iter().map(|x| x.to_f64()).collect()),
        TensorData::Fp32(v) => Some(v.iter().map(|&x| f64::from(x)).collect()),
        TensorData::Fp64(v) => Some(v.clone()),
        _ => None,
    }
}

/// What an engine is expected to do with a fixture.
#[derive(Debug, Clone, Copy)]
pub enum Expectation {
    /// Load it and match every reference case.
    Runs,
    /// Refuse it at load with an error whose text contains this (an operator or datatype name).
    Refuses(&'static str),
}

/// Loads a model file into an engine under test.
pub type LoadFn<'a> = dyn Fn(&Path) -> Result<Box<dyn Engine>, EngineError> + 'a;

/// Runs every fixture through `load` and checks each against `expect(name)`; returns one line per failure.
pub fn run_suite(load: &LoadFn<'_>, expect: &dyn Fn(&str) -> Expectation) -> Vec<String> {
    let fixtures = match load_fixtures(&fixtures_dir()) {
        Ok(f) if !f.is_empty() => f,
        Ok(_) => return vec!["no fixtures found".into()],
        Err(e) => return vec![e],
    };
    let mut failures = Vec::new();
    for fixture in &fixtures {
        match (expect(&fixture.name), load(&fixture.model_path)) {
            (Expectation::Runs, Ok(mut engine)) => {
                if let Err(e) = check_fixture(engine.as_mut(), fixture) {
                    failures.push(e);
                }
            }
            (Expectation::Runs, Err(e)) => failures.push(format!("{}: load failed: {}", fixture.name, error_chain(&e))),
            (Expectation::Refuses(word), Err(e)) => {
                let msg = error_chain(&e);
                if !msg.contains(word) {
                    failures.push(format!("{}: refused, but the error does not name {word:?}: {msg}", fixture.name));
                }
            }
            (Expectation::Refuses(word), Ok(_)) => {
                failures.push(format!("{}: expected a refusal naming {word:?}, but it loaded", fixture.name));
            }
        }
    }
    failures
}
