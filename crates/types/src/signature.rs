//! A model's input and output signature.

use serde::{Deserialize, Serialize};

use crate::DataType;

/// Name, datatype and shape of one input or output; `-1` marks a dimension of variable size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorSpec {
    /// The tensor's name in the model graph.
    pub name: String,
    /// Its element type.
    pub datatype: DataType,
    /// Its dimensions; `-1` for a variable one.
    pub shape: Vec<i64>,
}

impl TensorSpec {
    /// Whether the first dimension is variable, which is what lets requests be batched along it.
    #[must_use]
    pub fn has_dynamic_batch(&self) -> bool {
        self.shape.first() == Some(&-1)
    }

    /// Whether a concrete `shape` fits this spec: same rank, and every fixed dimension equal.
    #[must_use]
    pub fn accepts_shape(&self, shape: &[usize]) -> bool {
        shape.len() == self.shape.len()
            && self.shape.iter().zip(shape).all(|(&want, &got)| want < 0 || usize::try_from(want) == Ok(got))
    }
}

/// The inputs and outputs of a model, in graph order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelSignature {
    /// Inputs, in the order the model declares them.
    pub inputs: Vec<TensorSpec>,
    /// Outputs, in the order the model declares them.
    pub outputs: Vec<TensorSpec>,
}

impl ModelSignature {
    /// The input named `name`.
    #[must_use]
    pub fn input(&self, name: &str) -> Option<&TensorSpec> {
        self.inputs.iter().find(|s| s.name == name)
    }

    /// The output named `name`.
    #[must_use]
    pub fn output(&self, name: &str) -> Option<&TensorSpec> {
        self.outputs.iter().find(|s| s.name == name)
    }

    /// Whether every input and output has a variable first dimension, so requests can be stacked along it.
    #[must_use]
    pub fn batchable(&self) -> bool {
        !self.inputs.is_empty()
            && self.inputs.iter().all(TensorSpec::has_dynamic_batch)
            && self.outputs.iter().all(TensorSpec::has_dynamic_batch)
    }
}
