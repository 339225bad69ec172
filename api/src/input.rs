//! Typed request bodies that still name every bad field.
//!
//! A body is ONE struct: it is what `/openapi.json` documents and what the request is
//! parsed into (`#[serde(deny_unknown_fields)]`). Each field is an `Option<`[`Field`]`<T>>`:
//! a value of the wrong type does not abort parsing but is kept as [`Field::Invalid`],
//! and names the body does not declare are collected into [`Unknown`], so the
//! validation that follows (in the service layer) reports every bad field in one `422`.

use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use jobstream_core::catalogue::FieldError;

/// One body field: a value of the declared type, or the value sent in its place.
#[derive(Debug, Clone, PartialEq)]
pub enum Field<T> {
    /// The value, of the declared type.
    Valid(T),
    /// What was sent instead (reported against the field's name by validation).
    Invalid(Value),
}

impl<T> From<T> for Field<T> {
    fn from(t: T) -> Self {
        Field::Valid(t)
    }
}

impl<T> Field<T> {
    /// The value, or `expected` recorded against `name` and `None`.
    pub fn check(self, name: &str, expected: &str, errors: &mut Vec<FieldError>) -> Option<T> {
        match self {
            Field::Valid(t) => Some(t),
            Field::Invalid(_) => {
                errors.push(FieldError::new(name, expected));
                None
            }
        }
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        Ok(match T::deserialize(&v) {
            Ok(t) => Field::Valid(t),
            Err(_) => Field::Invalid(v),
        })
    }
}

impl<T: Serialize> Serialize for Field<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Field::Valid(t) => t.serialize(s),
            Field::Invalid(v) => v.serialize(s),
        }
    }
}

/// The names a body carried that its struct does not declare, in the order sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unknown(pub Vec<String>);

impl Unknown {
    /// One "unknown field" error per name.
    pub fn report(&self, errors: &mut Vec<FieldError>) {
        for name in &self.0 {
            errors.push(FieldError::new(name.clone(), "unknown field"));
        }
    }
}

/// A request body struct (`#[serde(deny_unknown_fields)]`, with a `#[serde(skip)]`
/// [`Unknown`] field that [`parse_object`] fills).
pub trait Body: DeserializeOwned {
    /// Where the names the struct does not declare go.
    fn unknown_mut(&mut self) -> &mut Unknown;
}

/// Implements [`Body`] for body structs whose [`Unknown`] field is named `unknown`.
macro_rules! impl_body {
    ($($t:ty),+ $(,)?) => {
        $(impl $crate::input::Body for $t {
            fn unknown_mut(&mut self) -> &mut $crate::input::Unknown {
                &mut self.unknown
            }
        })+
    };
}
pub(crate) use impl_body;

/// Why a JSON value is not a body of type `T`.
#[derive(Debug)]
pub enum BodyError {
    /// Not a JSON object.
    NotObject,
    /// The object does not fit the struct (a field that is not lenient), by JSON path.
    Fields(Vec<FieldError>),
}

/// Parses a JSON object into the body `T`: unknown names are set aside into its
/// [`Unknown`], everything else is deserialized (lenient fields keep wrong values).
pub fn parse_object<T: Body>(value: Value) -> Result<T, BodyError> {
    let Value::Object(obj) = value else {
        return Err(BodyError::NotObject);
    };
    let known = field_names::<T>();
    let (fields, unknown): (Map<String, Value>, Map<String, Value>) = obj
        .into_iter()
        .partition(|(k, _)| known.contains(&k.as_str()));
    let mut body: T = serde_path_to_error::deserialize(Value::Object(fields)).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { "body".to_owned() } else { path };
        BodyError::Fields(vec![FieldError::new(field, e.inner().to_string())])
    })?;
    body.unknown_mut().0 = unknown.into_iter().map(|(k, _)| k).collect();
    Ok(body)
}

/// The field names serde knows for struct `T` (what `deny_unknown_fields` accepts),
/// read by asking `T` to deserialize itself from a probe that only records them.
pub fn field_names<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Probe<'a>(&'a mut &'static [&'static str]);

    impl<'de> Deserializer<'de> for Probe<'_> {
        type Error = de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("probed"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map
            enum identifier ignored_any
        }
    }

    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Probe(&mut fields));
    fields
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        n: Option<Field<u32>>,
        s: Option<Field<String>>,
        #[serde(skip)]
        unknown: Unknown,
    }

    impl_body!(Sample);

    #[test]
    fn wrong_types_and_unknown_names_are_kept_not_fatal() {
        let s: Sample = parse_object(json!({"n": "x", "s": "ok", "b": 1, "a": 2})).unwrap();
        assert_eq!(s.n, Some(Field::Invalid(json!("x"))));
        assert_eq!(s.s, Some(Field::Valid("ok".to_owned())));
        assert_eq!(s.unknown.0, ["a", "b"]);
        let s: Sample = parse_object(json!({"n": null})).unwrap();
        assert_eq!(s.n, None);
        assert!(matches!(
            parse_object::<Sample>(json!([1])),
            Err(BodyError::NotObject)
        ));
        assert_eq!(field_names::<Sample>(), ["n", "s"]);
    }
}
