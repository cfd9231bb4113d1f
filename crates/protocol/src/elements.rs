//! Decoding the `data` of a JSON input, flat or nested to any depth, straight into a typed vector.

use std::fmt;
use std::marker::PhantomData;

use ferry_types::{DataType, TensorData, bf16, f16};
use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};

/// One element type as JSON carries it.
trait JsonElement: Sized {
    const NAME: &'static str;
    fn from_bool(_: bool) -> Option<Self> {
        None
    }
    fn from_u64(_: u64) -> Option<Self> {
        None
    }
    fn from_i64(_: i64) -> Option<Self> {
        None
    }
    fn from_f64(_: f64) -> Option<Self> {
        None
    }
    fn from_str(_: &str) -> Option<Self> {
        None
    }
}

impl JsonElement for bool {
    const NAME: &'static str = "a BOOL (true or false)";
    fn from_bool(v: bool) -> Option<Self> {
        Some(v)
    }
}

macro_rules! integer_element {
    ($t:ty, $name:literal) => {
        impl JsonElement for $t {
            const NAME: &'static str = $name;
            fn from_u64(v: u64) -> Option<Self> {
                <$t>::try_from(v).ok()
            }
            fn from_i64(v: i64) -> Option<Self> {
                <$t>::try_from(v).ok()
            }
        }
    };
}
integer_element!(u8, "a UINT8 (an integer from 0 to 255)");
integer_element!(u16, "a UINT16 (an integer from 0 to 65535)");
integer_element!(u32, "a UINT32 (an integer from 0 to 4294967295)");
integer_element!(u64, "a UINT64 (a non-negative integer)");
integer_element!(i8, "an INT8 (an integer from -128 to 127)");
integer_element!(i16, "an INT16 (an integer from -32768 to 32767)");
integer_element!(i32, "an INT32 (a 32-bit integer)");
integer_element!(i64, "an INT64 (a 64-bit integer)");

macro_rules! float_element {
    ($t:ty, $name:literal, $from:expr) => {
        impl JsonElement for $t {
            const NAME: &'static str = $name;
            #[expect(clippy::cast_precision_loss, reason = "JSON numbers become the nearest float, as in every client")]
            fn from_u64(v: u64) -> Option<Self> {
                Some($from(v as f64))
            }
            #[expect(clippy::cast_precision_loss, reason = "JSON numbers become the nearest float, as in every client")]
            fn from_i64(v: i64) -> Option<Self> {
                Some($from(v as f64))
            }
            fn from_f64(v: f64) -> Option<Self> {
                Some($from(v))
            }
        }
    };
}
#[expect(clippy::cast_possible_truncation, reason = "FP32 input is rounded to the nearest f32")]
fn to_f32(v: f64) -> f32 {
    v as f32
}
float_element!(f32, "an FP32 number", to_f32);
float_element!(f64, "an FP64 number", std::convert::identity);
float_element!(f16, "an FP16 number", f16::from_f64);
float_element!(bf16, "a BF16 number", bf16::from_f64);

impl JsonElement for Vec<u8> {
    const NAME: &'static str = "a BYTES element (a string)";
    fn from_str(v: &str) -> Option<Self> {
        Some(v.as_bytes().to_vec())
    }
}

/// Pushes every scalar of a (possibly nested) JSON array into `out`.
struct Flatten<'v, T>(&'v mut Vec<T>);

impl<'de, T: JsonElement> DeserializeSeed<'de> for Flatten<'_, T> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(FlattenVisitor(self.0, PhantomData))
    }
}

struct FlattenVisitor<'v, T>(&'v mut Vec<T>, PhantomData<T>);

impl<T: JsonElement> FlattenVisitor<'_, T> {
    fn push<E: de::Error>(self, v: Option<T>, unexp: de::Unexpected<'_>) -> Result<(), E> {
        match v {
            Some(v) => {
                self.0.push(v);
                Ok(())
            }
            None => Err(E::invalid_value(unexp, &T::NAME)),
        }
    }
}

impl<'de, T: JsonElement> Visitor<'de> for FlattenVisitor<'_, T> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} or an array of them", T::NAME)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.push(T::from_bool(v), de::Unexpected::Bool(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.push(T::from_u64(v), de::Unexpected::Unsigned(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.push(T::from_i64(v), de::Unexpected::Signed(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.push(T::from_f64(v), de::Unexpected::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.push(T::from_str(v), de::Unexpected::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Flatten(&mut *self.0))?.is_some() {}
        Ok(())
    }
}

fn flatten<T: JsonElement>(json: &str) -> Result<Vec<T>, serde_json::Error> {
    let mut out = Vec::new();
    let mut de = serde_json::Deserializer::from_str(json);
    Flatten(&mut out).deserialize(&mut de)?;
    de.end()?;
    Ok(out)
}

/// Decodes a JSON `data` value (a scalar, or arrays nested to any depth) into elements of `datatype`.
pub(crate) fn decode_json_data(datatype: DataType, json: &str) -> Result<TensorData, serde_json::Error> {
    Ok(match datatype {
        DataType::Bool => TensorData::Bool(flatten(json)?),
        DataType::Uint8 => TensorData::Uint8(flatten(json)?),
        DataType::Uint16 => TensorData::Uint16(flatten(json)?),
        DataType::Uint32 => TensorData::Uint32(flatten(json)?),
        DataType::Uint64 => TensorData::Uint64(flatten(json)?),
        DataType::Int8 => TensorData::Int8(flatten(json)?),
        DataType::Int16 => TensorData::Int16(flatten(json)?),
        DataType::Int32 => TensorData::Int32(flatten(json)?),
        DataType::Int64 => TensorData::Int64(flatten(json)?),
        DataType::Fp16 => TensorData::Fp16(flatten(json)?),
        DataType::Fp32 => TensorData::Fp32(flatten(json)?),
        DataType::Fp64 => TensorData::Fp64(flatten(json)?),
        DataType::Bf16 => TensorData::Bf16(flatten(json)?),
        DataType::Bytes => TensorData::Bytes(flatten(json)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_and_flat_arrays_decode_alike() {
        let flat = decode_json_data(DataType::Int32, "[1,2,3,4]").expect("flat");
        let nested = decode_json_data(DataType::Int32, "[[1,2],[3,4]]").expect("nested");
        assert_eq!(flat, TensorData::Int32(vec![1, 2, 3, 4]));
        assert_eq!(flat, nested);
        assert_eq!(decode_json_data(DataType::Fp32, "2.5").expect("scalar"), TensorData::Fp32(vec![2.5]));
    }

    #[test]
    fn values_outside_the_type_are_refused() {
        for (dt, json) in [
            (DataType::Uint8, "[256]"),
            (DataType::Uint8, "[-1]"),
            (DataType::Int32, "[1.5]"),
            (DataType::Int8, "[\"1\"]"),
            (DataType::Bool, "[1]"),
            (DataType::Fp32, "[true]"),
            (DataType::Bytes, "[1]"),
            (DataType::Fp32, "[1, {\"a\": 1}]"),
            (DataType::Fp32, "[1] [2]"),
        ] {
            assert!(decode_json_data(dt, json).is_err(), "{dt} {json} accepted");
        }
    }

    #[test]
    fn sixty_four_bit_integers_stay_exact() {
        let v = decode_json_data(DataType::Uint64, "[18446744073709551615]").expect("u64");
        assert_eq!(v, TensorData::Uint64(vec![u64::MAX]));
        let v = decode_json_data(DataType::Int64, "[-9223372036854775808]").expect("i64");
        assert_eq!(v, TensorData::Int64(vec![i64::MIN]));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let deep = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(decode_json_data(DataType::Fp32, &deep).is_err());
    }
}
