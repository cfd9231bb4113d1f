//! How the columns of a CSV feed a model's inputs, and turning rows into input tensors.
//!
//! Two layouts cover tabular models: one input of shape `[N, k]` fed by the `k` feature columns in CSV order (the
//! usual scikit-learn export), or one `[N]` / `[N, 1]` input per column, matched by name. Anything else is refused
//! with the reason, as are missing or extra columns.

use csv::StringRecord;
use ferry_types::{DataType, ModelSignature, NamedTensor, Tensor, TensorData};

use crate::{PackageError, is_missing};

/// The CSV columns behind one model input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputColumns {
    /// Model input name.
    pub input: String,
    /// Its element type.
    pub datatype: DataType,
    /// CSV column indices, in feature order.
    pub columns: Vec<usize>,
    /// Whether the input is `[N]` rather than `[N, k]`.
    pub flat: bool,
}

/// The mapping of a CSV's columns onto a model's inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureLayout {
    /// One entry per model input, in model order.
    pub inputs: Vec<InputColumns>,
    /// Feature column names, in the order they feed the model.
    pub features: Vec<String>,
    /// Index of the label column, if one was named.
    pub label: Option<usize>,
}

impl FeatureLayout {
    /// Maps `headers` onto `signature`'s inputs; `label` names a column that is not a feature.
    ///
    /// # Errors
    /// [`PackageError::Data`] naming the missing, extra or duplicated columns, or the input that cannot be fed.
    pub fn new(signature: &ModelSignature, headers: &StringRecord, label: Option<&str>) -> Result<Self, PackageError> {
        let names: Vec<&str> = headers.iter().map(str::trim).collect();
        for (i, n) in names.iter().enumerate() {
            if n.is_empty() {
                return Err(PackageError::Data(format!("CSV column {} has an empty header", i + 1)));
            }
            if names[..i].contains(n) {
                return Err(PackageError::Data(format!("CSV column {n:?} appears twice in the header")));
            }
        }
        let label_idx = match label {
            Some(l) => Some(names.iter().position(|n| *n == l).ok_or_else(|| {
                PackageError::Data(format!("label column {l:?} is not in the CSV (columns: {})", names.join(", ")))
            })?),
            None => None,
        };
        let feature_idx: Vec<usize> = (0..names.len()).filter(|i| Some(*i) != label_idx).collect();
        for spec in &signature.inputs {
            if !is_tabular(spec.datatype) {
                return Err(PackageError::Data(format!(
                    "input {:?} is {}; CSV data can feed only numeric, BOOL and BYTES inputs",
                    spec.name,
                    spec.datatype.as_str()
                )));
            }
        }
        let inputs = match signature.inputs.as_slice() {
            [spec] if spec.shape.len() == 2 && spec.shape[1] > 0 => {
                let k = usize::try_from(spec.shape[1]).unwrap_or(usize::MAX);
                if feature_idx.len() != k {
                    let label_note = label.map(|l| format!(" besides the label {l:?}")).unwrap_or_default();
                    return Err(PackageError::Data(format!(
                        "the CSV has {} feature columns{label_note} ({}), but input {:?} takes {k} features per row \
                         (shape {:?}): {} column(s) {}",
                        feature_idx.len(),
                        feature_idx.iter().map(|&i| names[i]).collect::<Vec<_>>().join(", "),
                        spec.name,
                        spec.shape,
                        feature_idx.len().abs_diff(k),
                        if feature_idx.len() > k { "too many" } else { "missing" },
                    )));
                }
                vec![InputColumns {
                    input: spec.name.clone(),
                    datatype: spec.datatype,
                    columns: feature_idx.clone(),
                    flat: false,
                }]
            }
            specs if specs.iter().all(|s| matches!(s.shape.as_slice(), [_] | [_, 1])) => {
                let mut out = Vec::new();
                for spec in specs {
                    let col = feature_idx.iter().copied().find(|&i| names[i] == spec.name).ok_or_else(|| {
                        PackageError::Data(format!(
                            "the CSV has no column {:?} for the model input of that name",
                            spec.name
                        ))
                    })?;
                    out.push(InputColumns {
                        input: spec.name.clone(),
                        datatype: spec.datatype,
                        columns: vec![col],
                        flat: spec.shape.len() == 1,
                    });
                }
                let extra: Vec<&str> =
                    feature_idx.iter().map(|&i| names[i]).filter(|n| !specs.iter().any(|s| s.name == *n)).collect();
                if !extra.is_empty() {
                    return Err(PackageError::Data(format!(
                        "CSV column(s) {} match no model input (inputs: {})",
                        extra.join(", "),
                        specs.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
                    )));
                }
                out
            }
            specs => {
                return Err(PackageError::Data(format!(
                    "cannot map CSV columns onto inputs {}: expected one [N, k] input or one [N] input per column",
                    specs.iter().map(|s| format!("{} {:?}", s.name, s.shape)).collect::<Vec<_>>().join(", ")
                )));
            }
        };
        let features = inputs.iter().flat_map(|i| i.columns.iter().map(|&c| names[c].to_owned())).collect();
        Ok(Self { inputs, features, label: label_idx })
    }

    /// The input tensors for `rows`; `line` is the 1-based CSV line of the first row, for error messages.
    ///
    /// # Errors
    /// [`PackageError::Data`] naming the line and column of a value that does not fit the input's type.
    pub fn tensors(
        &self,
        rows: &[StringRecord],
        headers: &StringRecord,
        line: u64,
    ) -> Result<Vec<NamedTensor>, PackageError> {
        let mut out = Vec::with_capacity(self.inputs.len());
        for input in &self.inputs {
            let mut data = TensorData::with_capacity(input.datatype, rows.len() * input.columns.len());
            for (r, row) in rows.iter().enumerate() {
                for &c in &input.columns {
                    let cell = row.get(c).unwrap_or("");
                    push_cell(&mut data, cell).map_err(|why| {
                        PackageError::Data(format!(
                            "line {}, column {:?}: {why} (value {cell:?}, input {:?} is {})",
                            line + r as u64,
                            headers.get(c).unwrap_or("?"),
                            input.input,
                            input.datatype.as_str()
                        ))
                    })?;
                }
            }
            let shape = if input.flat { vec![rows.len()] } else { vec![rows.len(), input.columns.len()] };
            let tensor = Tensor::new(shape, data).map_err(|e| PackageError::Data(e.to_string()))?;
            out.push(NamedTensor::new(input.input.clone(), tensor));
        }
        Ok(out)
    }
}

fn is_tabular(t: DataType) -> bool {
    !matches!(t, DataType::Fp16 | DataType::Bf16)
}

fn push_cell(data: &mut TensorData, cell: &str) -> Result<(), String> {
    let t = cell.trim();
    let float = || -> Result<f64, String> {
        if is_missing(t) { Ok(f64::NAN) } else { t.parse::<f64>().map_err(|_| "not a number".to_owned()) }
    };
    let int = || -> Result<i128, String> {
        if is_missing(t) {
            return Err("missing value for an integer input".into());
        }
        t.parse::<i128>().or_else(|_| match t.parse::<f64>() {
            #[expect(clippy::cast_possible_truncation, reason = "checked to be a whole number in range")]
            Ok(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => Ok(f as i128),
            _ => Err("not an integer".into()),
        })
    };
    let range = |_| "out of range for the input type".to_owned();
    match data {
        #[expect(clippy::cast_possible_truncation, reason = "FP32 inputs take the nearest float")]
        TensorData::Fp32(v) => v.push(float()? as f32),
        TensorData::Fp64(v) => v.push(float()?),
        TensorData::Int64(v) => v.push(i64::try_from(int()?).map_err(range)?),
        TensorData::Int32(v) => v.push(i32::try_from(int()?).map_err(range)?),
        TensorData::Int16(v) => v.push(i16::try_from(int()?).map_err(range)?),
        TensorData::Int8(v) => v.push(i8::try_from(int()?).map_err(range)?),
        TensorData::Uint64(v) => v.push(u64::try_from(int()?).map_err(range)?),
        TensorData::Uint32(v) => v.push(u32::try_from(int()?).map_err(range)?),
        TensorData::Uint16(v) => v.push(u16::try_from(int()?).map_err(range)?),
        TensorData::Uint8(v) => v.push(u8::try_from(int()?).map_err(range)?),
        TensorData::Bool(v) => v.push(match t.to_ascii_lowercase().as_str() {
            "1" | "true" => true,
            "0" | "false" => false,
            _ => return Err("not a boolean (true/false/1/0)".into()),
        }),
        TensorData::Bytes(v) => v.push(cell.as_bytes().to_vec()),
        TensorData::Fp16(_) | TensorData::Bf16(_) => return Err("half-precision inputs are not fed from CSV".into()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use ferry_types::TensorSpec;

    use super::*;

    fn sig(inputs: &[(&str, DataType, &[i64])]) -> ModelSignature {
        ModelSignature {
            inputs: inputs
                .iter()
                .map(|(n, t, s)| TensorSpec { name: (*n).into(), datatype: *t, shape: s.to_vec() })
                .collect(),
            outputs: vec![],
        }
    }

    #[test]
    fn one_matrix_input_takes_the_columns_in_order() {
        let s = sig(&[("input", DataType::Fp32, &[-1, 2])]);
        let headers = StringRecord::from(vec!["a", "y", "b"]);
        let layout = FeatureLayout::new(&s, &headers, Some("y")).expect("layout");
        assert_eq!(layout.features, vec!["a", "b"]);
        let rows = vec![StringRecord::from(vec!["1", "0", "2.5"]), StringRecord::from(vec!["3", "1", ""])];
        let t = layout.tensors(&rows, &headers, 2).expect("tensors");
        assert_eq!(t[0].tensor.shape(), &[2, 2]);
        let bad = vec![StringRecord::from(vec!["1", "0", "x"])];
        let err = layout.tensors(&bad, &headers, 5).expect_err("bad cell").to_string();
        assert!(err.contains("line 5") && err.contains("\"b\""), "{err}");
    }

    #[test]
    fn missing_and_extra_columns_are_named() {
        let s = sig(&[("input", DataType::Fp32, &[-1, 4])]);
        let err = FeatureLayout::new(&s, &StringRecord::from(vec!["a", "b", "c"]), None).expect_err("3 of 4");
        assert!(err.to_string().contains("1 column(s) missing"), "{err}");
        let err = FeatureLayout::new(&s, &StringRecord::from(vec!["a", "b", "c", "d", "e"]), None).expect_err("5");
        assert!(err.to_string().contains("too many"), "{err}");
        let s = sig(&[("age", DataType::Int64, &[-1, 1]), ("city", DataType::Bytes, &[-1])]);
        let err = FeatureLayout::new(&s, &StringRecord::from(vec!["age", "town"]), None).expect_err("no city");
        assert!(err.to_string().contains("no column \"city\""), "{err}");
        let err = FeatureLayout::new(&s, &StringRecord::from(vec!["age", "city", "zip"]), None).expect_err("zip");
        assert!(err.to_string().contains("zip"), "{err}");
        let err = FeatureLayout::new(&s, &StringRecord::from(vec!["age", "city"]), Some("y")).expect_err("label");
        assert!(err.to_string().contains("label column \"y\""), "{err}");
        let ok = FeatureLayout::new(&s, &StringRecord::from(vec!["city", "age"]), None).expect("by name");
        assert_eq!(ok.features, vec!["age", "city"]);
    }
}
