//! Helm values as a tree with sorted maps, and Helm's deep-merge rule.
//!
//! Sorted maps make every rendering byte-stable regardless of insertion order or of which
//! features some dependency turns on in `serde_json`.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

/// A Helm value.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Value {
    /// `null`: in values given to Helm, removes the chart's default for that key.
    #[default]
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A floating-point number (finite).
    Float(f64),
    /// A string.
    Str(String),
    /// A list.
    Seq(Vec<Value>),
    /// A mapping with sorted keys.
    Map(BTreeMap<String, Value>),
}

/// A mapping of Helm values.
pub type Map = BTreeMap<String, Value>;

impl Value {
    /// An empty mapping.
    pub fn map() -> Self {
        Value::Map(BTreeMap::new())
    }

    /// The mapping inside, if any.
    pub fn as_map(&self) -> Option<&Map> {
        match self {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    /// The string inside, if any.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The boolean inside, if any.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The integer inside, if any.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// Looks up a dotted path of map keys (`clustermesh.apiserver.tls.authMode`).
    pub fn get(&self, path: &[&str]) -> Option<&Value> {
        let mut cur = self;
        for key in path {
            cur = cur.as_map()?.get(*key)?;
        }
        Some(cur)
    }

    /// Sets a path of map keys, creating (or replacing non-map values with) maps on the way.
    pub fn set(&mut self, path: &[&str], value: impl Into<Value>) {
        let Some((last, parents)) = path.split_last() else {
            *self = value.into();
            return;
        };
        let mut cur = self;
        for key in parents {
            if !matches!(cur, Value::Map(_)) {
                *cur = Value::map();
            }
            let Value::Map(m) = cur else {
                unreachable!("just made a map")
            };
            cur = m.entry((*key).to_owned()).or_insert_with(Value::map);
        }
        if !matches!(cur, Value::Map(_)) {
            *cur = Value::map();
        }
        if let Value::Map(m) = cur {
            m.insert((*last).to_owned(), value.into());
        }
    }

    /// Deep-merges `overlay` into `self` the way Helm merges `-f` files: maps merge key by
    /// key, anything else (lists included, and `null`) replaces.
    pub fn merge(&mut self, overlay: &Value) {
        match (self, overlay) {
            (Value::Map(base), Value::Map(over)) => {
                for (k, v) in over {
                    match base.get_mut(k) {
                        Some(existing) => existing.merge(v),
                        None => {
                            base.insert(k.clone(), v.clone());
                        }
                    }
                }
            }
            (slot, v) => *slot = v.clone(),
        }
    }

    /// Every leaf path (keys joined into a list) of this value; maps are descended, anything
    /// else (lists included) is a leaf. An empty map is a leaf.
    pub fn leaf_paths(&self) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        fn walk(v: &Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
            match v {
                Value::Map(m) if !m.is_empty() => {
                    for (k, child) in m {
                        prefix.push(k.clone());
                        walk(child, prefix, out);
                        prefix.pop();
                    }
                }
                _ => out.push(prefix.clone()),
            }
        }
        walk(self, &mut Vec::new(), &mut out);
        out
    }

    /// Converts from JSON (what `helm get values -o json` prints).
    pub fn from_json(v: &serde_json::Value) -> Value {
        match v {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => n
                .as_i64()
                .map(Value::Int)
                .unwrap_or_else(|| Value::Float(n.as_f64().unwrap_or_default())),
            serde_json::Value::String(s) => Value::Str(s.clone()),
            serde_json::Value::Array(items) => {
                Value::Seq(items.iter().map(Value::from_json).collect())
            }
            serde_json::Value::Object(m) => Value::Map(
                m.iter()
                    .map(|(k, v)| (k.clone(), Value::from_json(v)))
                    .collect(),
            ),
        }
    }

    /// Converts to a JSON value (for schema validation and JSON output).
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Int(i) => serde_json::Value::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Value::Str(s) => serde_json::Value::String(s.clone()),
            Value::Seq(items) => {
                serde_json::Value::Array(items.iter().map(Value::to_json).collect())
            }
            Value::Map(m) => {
                serde_json::Value::Object(m.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
            }
        }
    }
}

/// How one leaf differs between two values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    /// Only in the new value.
    Added,
    /// Only in the old value.
    Removed,
    /// In both, different.
    Changed,
}

/// The leaf paths (dotted) where `old` and `new` differ, sorted. Maps are compared key by
/// key; anything else (lists included) as a whole.
pub fn diff(old: &Value, new: &Value) -> Vec<(String, Change)> {
    fn walk(
        a: Option<&Value>,
        b: Option<&Value>,
        path: &mut Vec<String>,
        out: &mut Vec<(String, Change)>,
    ) {
        match (a, b) {
            (Some(Value::Map(x)), Some(Value::Map(y))) => {
                let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                for k in keys {
                    path.push(k.clone());
                    walk(x.get(k), y.get(k), path, out);
                    path.pop();
                }
            }
            (Some(x), Some(y)) if x == y => {}
            (Some(_), Some(_)) => out.push((path.join("."), Change::Changed)),
            // A subtree on one side only: name its leaves, which is what changes.
            (None, Some(Value::Map(y))) if !y.is_empty() => {
                for (k, v) in y {
                    path.push(k.clone());
                    walk(None, Some(v), path, out);
                    path.pop();
                }
            }
            (Some(Value::Map(x)), None) if !x.is_empty() => {
                for (k, v) in x {
                    path.push(k.clone());
                    walk(Some(v), None, path, out);
                    path.pop();
                }
            }
            (None, Some(_)) => out.push((path.join("."), Change::Added)),
            (Some(_), None) => out.push((path.join("."), Change::Removed)),
            (None, None) => {}
        }
    }
    let mut out = Vec::new();
    walk(Some(old), Some(new), &mut Vec::new(), &mut out);
    out
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}
impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}
impl From<u16> for Value {
    fn from(i: u16) -> Self {
        Value::Int(i64::from(i))
    }
}
impl From<u32> for Value {
    fn from(i: u32) -> Self {
        Value::Int(i64::from(i))
    }
}
impl From<u8> for Value {
    fn from(i: u8) -> Self {
        Value::Int(i64::from(i))
    }
}
impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.to_owned())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(s)
    }
}
impl From<Map> for Value {
    fn from(m: Map) -> Self {
        Value::Map(m)
    }
}
impl<T: Into<Value>> From<Vec<T>> for Value {
    fn from(v: Vec<T>) -> Self {
        Value::Seq(v.into_iter().map(Into::into).collect())
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::Float(f) => s.serialize_f64(*f),
            Value::Str(v) => s.serialize_str(v),
            Value::Seq(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for i in items {
                    seq.serialize_element(i)?;
                }
                seq.end()
            }
            Value::Map(m) => {
                let mut map = s.serialize_map(Some(m.len()))?;
                for (k, v) in m {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Value;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a Helm value")
            }
            fn visit_unit<E>(self) -> Result<Value, E> {
                Ok(Value::Null)
            }
            fn visit_none<E>(self) -> Result<Value, E> {
                Ok(Value::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
                Value::deserialize(d)
            }
            fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
                Ok(Value::Bool(b))
            }
            fn visit_i64<E>(self, i: i64) -> Result<Value, E> {
                Ok(Value::Int(i))
            }
            fn visit_u64<E: de::Error>(self, i: u64) -> Result<Value, E> {
                i64::try_from(i)
                    .map(Value::Int)
                    .or(Ok(Value::Float(i as f64)))
            }
            fn visit_f64<E>(self, f: f64) -> Result<Value, E> {
                Ok(Value::Float(f))
            }
            fn visit_str<E>(self, s: &str) -> Result<Value, E> {
                Ok(Value::Str(s.to_owned()))
            }
            fn visit_string<E>(self, s: String) -> Result<Value, E> {
                Ok(Value::Str(s))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Value, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = a.next_element()? {
                    v.push(x);
                }
                Ok(Value::Seq(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Value, A::Error> {
                let mut m = BTreeMap::new();
                while let Some((k, v)) = a.next_entry::<String, Value>()? {
                    m.insert(k, v);
                }
                Ok(Value::Map(m))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_is_deep_and_lists_replace() {
        let mut base = Value::map();
        base.set(&["a", "b"], 1i64);
        base.set(&["a", "c"], vec!["x"]);
        base.set(&["d"], true);
        let mut over = Value::map();
        over.set(&["a", "c"], vec!["y", "z"]);
        over.set(&["a", "e"], "new");
        over.set(&["d"], Value::Null);
        base.merge(&over);
        assert_eq!(base.get(&["a", "b"]), Some(&Value::Int(1)));
        assert_eq!(base.get(&["a", "c"]), Some(&Value::from(vec!["y", "z"])));
        assert_eq!(base.get(&["a", "e"]), Some(&Value::from("new")));
        assert_eq!(base.get(&["d"]), Some(&Value::Null));
    }

    #[test]
    fn diffs_leaves() {
        let mut a = Value::map();
        a.set(&["x", "y"], 1i64);
        a.set(&["x", "z"], 2i64);
        a.set(&["l"], vec!["a"]);
        let mut b = a.clone();
        b.set(&["x", "y"], 3i64);
        b.set(&["n"], true);
        b.set(&["m", "deep", "leaf"], 1i64);
        b.set(&["l"], vec!["a", "b"]);
        if let Value::Map(m) = &mut b
            && let Some(Value::Map(x)) = m.get_mut("x")
        {
            x.remove("z");
        }
        assert_eq!(
            diff(&a, &b),
            vec![
                ("l".into(), Change::Changed),
                ("m.deep.leaf".into(), Change::Added),
                ("n".into(), Change::Added),
                ("x.y".into(), Change::Changed),
                ("x.z".into(), Change::Removed)
            ]
        );
        assert!(diff(&a, &a).is_empty());
    }

    #[test]
    fn set_replaces_scalars_on_the_way() {
        let mut v = Value::map();
        v.set(&["a"], 1i64);
        v.set(&["a", "b"], 2i64);
        assert_eq!(v.get(&["a", "b"]), Some(&Value::Int(2)));
        assert_eq!(v.leaf_paths(), vec![vec!["a".to_string(), "b".to_string()]]);
    }
}
