//! Converting the evaluation context into the Rhai constants that rules read.
//!
//! The conversion builds only the fields that some rule of the set can read, as found by
//! [`RuleReads::of`](crate::memo::RuleReads::of). Every field it builds equals what
//! [`rhai::serde::to_dynamic`] builds for it, because each value below a read path goes through
//! `to_dynamic` itself. A field that no rule reads is left out: converting it costs time (the
//! risk score's contributions with their explanations are the largest part), and no rule could
//! tell that it is missing.

use std::collections::BTreeMap;

use rhai::serde::to_dynamic;
use rhai::{Array, Dynamic, EvalAltResult, ImmutableString, Map, Position, Scope};
use serde::Serialize;
use serde::ser::{self, Serializer};

use crate::memo::ReadPath;
use crate::sandbox::CONTEXT_VARIABLES;

type ConvertError = Box<EvalAltResult>;
type Converted = Result<Dynamic, ConvertError>;

/// The fields of the context that the rules of a set can read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ContextFilter {
    /// The value with everything below it.
    All,
    /// Only these fields of a map or struct. Any other kind of value is converted whole.
    Fields(BTreeMap<String, ContextFilter>),
}

/// Serializer of a value of which only `fields` are needed.
struct Filtered<'f>(&'f BTreeMap<String, ContextFilter>);

/// A map or struct that keeps only its filtered fields.
struct FilteredMap<'f> {
    fields: &'f BTreeMap<String, ContextFilter>,
    map: Map,
    key: Option<ImmutableString>,
}

/// A sequence, converted whole.
struct Elements(Array);

/// An enum variant with fields, converted whole into `#{ variant: fields }` like `to_dynamic`.
struct Variant<T> {
    variant: &'static str,
    fields: T,
}

// === impl ContextFilter ===

impl ContextFilter {
    /// Builds the filter that keeps everything below `paths` and nothing else.
    pub(crate) fn from_paths(paths: &[ReadPath]) -> ContextFilter {
        let mut root = ContextFilter::Fields(BTreeMap::new());
        for path in paths {
            let name = CONTEXT_VARIABLES[path.variable].to_owned();
            let names: Vec<String> = std::iter::once(name)
                .chain(path.properties.iter().cloned())
                .collect();
            root.keep(&names);
        }
        root
    }

    fn keep(&mut self, names: &[String]) {
        let ContextFilter::Fields(fields) = self else {
            return;
        };
        let Some((first, rest)) = names.split_first() else {
            *self = ContextFilter::All;
            return;
        };
        fields
            .entry(first.clone())
            .or_insert_with(|| ContextFilter::Fields(BTreeMap::new()))
            .keep(rest);
    }
}

/// Converts the context and declares its four top-level keys as constants.
///
/// Constants keep one rule from changing the context of the next rule, because Rhai rejects
/// assignments to them and calls of mutating methods on them.
///
/// NOTE: a field that no rule reads is not converted, so a context whose unread field cannot be
/// converted (a map with non-string keys) no longer fails every rule.
pub(crate) fn context_scope<C: Serialize>(
    context: &C,
    filter: &ContextFilter,
) -> Result<Scope<'static>, String> {
    // A failed filtered conversion is repeated whole, so the error is `to_dynamic`'s own.
    let value = match filter {
        ContextFilter::All => to_dynamic(context),
        ContextFilter::Fields(fields) => context
            .serialize(Filtered(fields))
            .or_else(|_| to_dynamic(context)),
    };
    let value =
        value.map_err(|error| format!("failed to convert the evaluation context: {error}"))?;
    let type_name = value.type_name();
    let Some(mut map) = value.try_cast::<Map>() else {
        return Err(format!(
            "failed to convert the evaluation context: expected a map with the keys event, \
             signals, risk and profile, got `{type_name}`"
        ));
    };

    let mut scope = Scope::with_capacity(CONTEXT_VARIABLES.len());
    for name in CONTEXT_VARIABLES {
        // Moved out, not cloned: a clone would copy every nested map of the context.
        let value = map.remove(name).unwrap_or(Dynamic::UNIT);
        scope.push_constant_dynamic(name, value);
    }
    Ok(scope)
}

/// Converts `value` as far as `filter` requests.
fn convert<T: ?Sized + Serialize>(value: &T, filter: &ContextFilter) -> Converted {
    match filter {
        ContextFilter::All => to_dynamic(value),
        ContextFilter::Fields(fields) => value.serialize(Filtered(fields)),
    }
}

fn variant_map(variant: &'static str, value: Dynamic) -> Dynamic {
    let mut map = Map::new();
    map.insert(variant.into(), value);
    Dynamic::from_map(map)
}

// === impl Filtered ===

/// Converts a scalar whole, because a filter has nothing to leave out of it.
macro_rules! whole {
    ($($method:ident($type:ty)),* $(,)?) => {
        $(fn $method(self, value: $type) -> Converted {
            to_dynamic(value)
        })*
    };
}

impl<'f> Serializer for Filtered<'f> {
    type Ok = Dynamic;
    type Error = ConvertError;
    type SerializeSeq = Elements;
    type SerializeTuple = Elements;
    type SerializeTupleStruct = Elements;
    type SerializeTupleVariant = Variant<Array>;
    type SerializeMap = FilteredMap<'f>;
    type SerializeStruct = FilteredMap<'f>;
    type SerializeStructVariant = Variant<Map>;

    whole!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_i128(i128),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_u128(u128),
        serialize_f32(f32),
        serialize_f64(f64),
        serialize_char(char),
        serialize_str(&str),
    );

    fn serialize_bytes(self, value: &[u8]) -> Converted {
        // `to_dynamic(value)` would see a sequence of numbers, but its serializer makes a BLOB.
        Ok(Dynamic::from_blob(value.to_vec()))
    }

    fn serialize_none(self) -> Converted {
        Ok(Dynamic::UNIT)
    }

    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> Converted {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Converted {
        Ok(Dynamic::UNIT)
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Converted {
        Ok(Dynamic::UNIT)
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Converted {
        to_dynamic(variant)
    }

    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Converted {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _name: &'static str,
        _: u32,
        variant: &'static str,
        value: &T,
    ) -> Converted {
        Ok(variant_map(variant, to_dynamic(value)?))
    }

    fn serialize_seq(self, length: Option<usize>) -> Result<Elements, ConvertError> {
        Ok(Elements(Array::with_capacity(length.unwrap_or(0))))
    }

    fn serialize_tuple(self, length: usize) -> Result<Elements, ConvertError> {
        self.serialize_seq(Some(length))
    }

    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        length: usize,
    ) -> Result<Elements, ConvertError> {
        self.serialize_seq(Some(length))
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _: u32,
        variant: &'static str,
        length: usize,
    ) -> Result<Variant<Array>, ConvertError> {
        Ok(Variant {
            variant,
            fields: Array::with_capacity(length),
        })
    }

    fn serialize_map(self, _length: Option<usize>) -> Result<FilteredMap<'f>, ConvertError> {
        Ok(FilteredMap {
            fields: self.0,
            map: Map::new(),
            key: None,
        })
    }

    fn serialize_struct(
        self,
        _name: &'static str,
        length: usize,
    ) -> Result<FilteredMap<'f>, ConvertError> {
        self.serialize_map(Some(length))
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _: u32,
        variant: &'static str,
        _length: usize,
    ) -> Result<Variant<Map>, ConvertError> {
        Ok(Variant {
            variant,
            fields: Map::new(),
        })
    }
}

// === impl FilteredMap ===

impl FilteredMap<'_> {
    fn insert<T: ?Sized + Serialize>(&mut self, name: &str, value: &T) -> Result<(), ConvertError> {
        if let Some(filter) = self.fields.get(name) {
            let value = convert(value, filter)?;
            self.map.insert(name.into(), value);
        }
        Ok(())
    }
}

impl ser::SerializeMap for FilteredMap<'_> {
    type Ok = Dynamic;
    type Error = ConvertError;

    fn serialize_key<T: ?Sized + Serialize>(&mut self, key: &T) -> Result<(), ConvertError> {
        let name = to_dynamic(key)?
            .into_immutable_string()
            .map_err(|type_name| {
                EvalAltResult::ErrorMismatchDataType(
                    "string".into(),
                    type_name.into(),
                    Position::NONE,
                )
            })?;
        self.key = Some(name);
        Ok(())
    }

    fn serialize_value<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), ConvertError> {
        let name = self.key.take().unwrap_or_default();
        self.insert(&name, value)
    }

    fn end(self) -> Converted {
        Ok(Dynamic::from_map(self.map))
    }
}

impl ser::SerializeStruct for FilteredMap<'_> {
    type Ok = Dynamic;
    type Error = ConvertError;

    fn serialize_field<T: ?Sized + Serialize>(
        &mut self,
        name: &'static str,
        value: &T,
    ) -> Result<(), ConvertError> {
        self.insert(name, value)
    }

    fn end(self) -> Converted {
        Ok(Dynamic::from_map(self.map))
    }
}

// === impl Elements ===

impl Elements {
    fn push<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), ConvertError> {
        self.0.push(to_dynamic(value)?);
        Ok(())
    }
}

impl ser::SerializeSeq for Elements {
    type Ok = Dynamic;
    type Error = ConvertError;

    fn serialize_element<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), ConvertError> {
        self.push(value)
    }

    fn end(self) -> Converted {
        Ok(Dynamic::from_array(self.0))
    }
}

impl ser::SerializeTuple for Elements {
    type Ok = Dynamic;
    type Error = ConvertError;

    fn serialize_element<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), ConvertError> {
        self.push(value)
    }

    fn end(self) -> Converted {
        Ok(Dynamic::from_array(self.0))
    }
}

impl ser::SerializeTupleStruct for Elements {
    type Ok = Dynamic;
    type Error = ConvertError;

    fn serialize_field<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), ConvertError> {
        self.push(value)
    }

    fn end(self) -> Converted {
        Ok(Dynamic::from_array(self.0))
    }
}

// === impl Variant ===

impl ser::SerializeTupleVariant for Variant<Array> {
    type Ok = Dynamic;
    type Error = ConvertError;

    fn serialize_field<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), ConvertError> {
        self.fields.push(to_dynamic(value)?);
        Ok(())
    }

    fn end(self) -> Converted {
        Ok(variant_map(self.variant, Dynamic::from_array(self.fields)))
    }
}

impl ser::SerializeStructVariant for Variant<Map> {
    type Ok = Dynamic;
    type Error = ConvertError;

    fn serialize_field<T: ?Sized + Serialize>(
        &mut self,
        name: &'static str,
        value: &T,
    ) -> Result<(), ConvertError> {
        self.fields.insert(name.into(), to_dynamic(value)?);
        Ok(())
    }

    fn end(self) -> Converted {
        Ok(variant_map(self.variant, Dynamic::from_map(self.fields)))
    }
}

#[cfg(test)]
mod tests;
