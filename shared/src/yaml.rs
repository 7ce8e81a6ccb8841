//! YAML read into typed values the way kubectl and Flux read it (YAML into
//! JSON values, then the type), through one instantiation of the YAML
//! parser for the whole suite: a parser generic over each type read costs
//! every binary its own copy of it.
//!
//! Where a string is wanted, a number or boolean scalar is taken as its
//! text (`name: 123` is `"123"`), as Kubernetes' YAML reader does.

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess,
    Visitor,
};
use serde_json::{Map, Value};

/// Why YAML could not be read as the type wanted.
#[derive(Debug, thiserror::Error)]
pub enum YamlError {
    /// Not YAML (the parser's words, with the line and column).
    #[error("{0}")]
    Syntax(#[from] serde_saphyr::Error),
    /// YAML, but not of the shape wanted.
    #[error("{0}")]
    Shape(#[from] serde_json::Error),
}

/// One document (an empty one reads as an empty map).
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, YamlError> {
    let doc = serde_saphyr::from_slice_multiple::<Value>(bytes)?
        .into_iter()
        .next()
        .filter(|d| !d.is_null())
        .unwrap_or_else(|| Value::Object(Map::new()));
    Ok(from_value(doc)?)
}

/// Every document of a stream (empty ones are skipped).
pub fn from_slice_multiple<T: DeserializeOwned>(bytes: &[u8]) -> Result<Vec<T>, YamlError> {
    serde_saphyr::from_slice_multiple::<Value>(bytes)?
        .into_iter()
        .filter(|d| !d.is_null())
        .map(|d| from_value(d).map_err(YamlError::from))
        .collect()
}

/// A value read from YAML, as `T`.
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, serde_json::Error> {
    T::deserialize(Scalars(value))
}

/// A JSON value read from YAML, deserialized as kubectl reads YAML into
/// its types: where a string is wanted, a number or boolean scalar is
/// taken as its text.
pub(crate) struct Scalars(pub(crate) Value);

impl<'de> Deserializer<'de> for Scalars {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Array(items) => visitor.visit_seq(Items(items.into_iter())),
            Value::Object(map) => visitor.visit_map(Entries {
                iter: map.into_iter(),
                value: None,
            }),
            scalar => scalar.deserialize_any(visitor),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Number(n) => visitor.visit_string(n.to_string()),
            Value::Bool(b) => visitor.visit_string(b.to_string()),
            other => Scalars(other).deserialize_any(visitor),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            other => visitor.visit_some(Scalars(other)),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::String(variant) => visitor.visit_enum(variant.into_deserializer()),
            other => other.deserialize_enum(name, variants, visitor),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char bytes byte_buf
        unit unit_struct seq tuple tuple_struct map struct identifier ignored_any
    }
}

struct Items(std::vec::IntoIter<Value>);

impl<'de> SeqAccess<'de> for Items {
    type Error = serde_json::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Self::Error> {
        self.0
            .next()
            .map(|v| seed.deserialize(Scalars(v)))
            .transpose()
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

struct Entries {
    iter: <Map<String, Value> as IntoIterator>::IntoIter,
    value: Option<Value>,
}

impl<'de> MapAccess<'de> for Entries {
    type Error = serde_json::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        match self.iter.next() {
            Some((key, value)) => {
                self.value = Some(value);
                seed.deserialize(key.into_deserializer()).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        match self.value.take() {
            Some(value) => seed.deserialize(Scalars(value)),
            None => Err(de::Error::custom("a value without its key")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug, Default, PartialEq)]
    #[serde(rename_all = "camelCase", default)]
    struct Doc {
        name: Option<String>,
        items: Vec<String>,
        replicas: Option<i64>,
        enabled: Option<bool>,
    }

    #[test]
    fn scalars_read_as_the_type_wants_them() {
        let doc: Doc =
            from_slice(b"name: 0x1F\nitems: [a, 2, true]\nreplicas: 3\nenabled: true\n").unwrap();
        assert_eq!(doc.items, ["a", "2", "true"]);
        assert_eq!(doc.replicas, Some(3));
        assert_eq!(doc.enabled, Some(true));
        assert!(doc.name.is_some());
        // As the typed parser reads the same text.
        let typed: Doc = serde_saphyr::from_slice(b"items: [a, 2, true]\nreplicas: 3\n").unwrap();
        assert_eq!(typed.items, ["a", "2", "true"]);
    }

    #[test]
    fn empty_documents_and_errors() {
        assert_eq!(from_slice::<Doc>(b"").unwrap(), Doc::default());
        assert_eq!(
            from_slice::<Doc>(b"# only a comment\n").unwrap(),
            Doc::default()
        );
        assert!(
            from_slice_multiple::<Doc>(b"---\n---\nname: a\n")
                .unwrap()
                .len()
                == 1
        );
        assert!(matches!(
            from_slice::<Doc>(b"items: ["),
            Err(YamlError::Syntax(_))
        ));
        let shape = from_slice::<Doc>(b"items: 3\n").unwrap_err().to_string();
        assert!(shape.contains("invalid type"), "{shape}");
    }
}
