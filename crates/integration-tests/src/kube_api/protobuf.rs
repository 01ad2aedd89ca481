//! Kubernetes' protobuf encoding, for the request bodies client-go's typed clients send (helm
//! stores its releases as Secrets through one). Only Secret and ConfigMap are decoded; the
//! double answers in JSON, which client-go accepts.
//!
//! Field numbers are those of k8s.io/api/core/v1 and k8s.io/apimachinery meta/v1
//! `generated.proto`; unknown fields are skipped.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::{Map, Value, json};

/// The 4-byte prefix of Kubernetes protobuf bodies.
pub const MAGIC: &[u8] = b"k8s\0";

#[derive(Clone, PartialEq, prost::Message)]
struct TypeMeta {
    #[prost(string, optional, tag = "1")]
    api_version: Option<String>,
    #[prost(string, optional, tag = "2")]
    kind: Option<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Unknown {
    #[prost(message, optional, tag = "1")]
    type_meta: Option<TypeMeta>,
    #[prost(bytes = "vec", optional, tag = "2")]
    raw: Option<Vec<u8>>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ObjectMeta {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
    #[prost(string, optional, tag = "2")]
    generate_name: Option<String>,
    #[prost(string, optional, tag = "3")]
    namespace: Option<String>,
    #[prost(string, optional, tag = "6")]
    resource_version: Option<String>,
    #[prost(btree_map = "string, string", tag = "11")]
    labels: BTreeMap<String, String>,
    #[prost(btree_map = "string, string", tag = "12")]
    annotations: BTreeMap<String, String>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Secret {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(btree_map = "string, bytes", tag = "2")]
    data: BTreeMap<String, Vec<u8>>,
    #[prost(string, optional, tag = "3")]
    r#type: Option<String>,
    #[prost(btree_map = "string, string", tag = "4")]
    string_data: BTreeMap<String, String>,
    #[prost(bool, optional, tag = "5")]
    immutable: Option<bool>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ConfigMap {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(btree_map = "string, string", tag = "2")]
    data: BTreeMap<String, String>,
    #[prost(btree_map = "string, bytes", tag = "3")]
    binary_data: BTreeMap<String, Vec<u8>>,
}

fn meta_json(m: Option<ObjectMeta>) -> Value {
    let m = m.unwrap_or_default();
    let mut out = Map::new();
    if let Some(v) = m.name {
        out.insert("name".into(), json!(v));
    }
    if let Some(v) = m.generate_name {
        out.insert("generateName".into(), json!(v));
    }
    if let Some(v) = m.namespace {
        out.insert("namespace".into(), json!(v));
    }
    if let Some(v) = m.resource_version.filter(|v| !v.is_empty()) {
        out.insert("resourceVersion".into(), json!(v));
    }
    if !m.labels.is_empty() {
        out.insert("labels".into(), json!(m.labels));
    }
    if !m.annotations.is_empty() {
        out.insert("annotations".into(), json!(m.annotations));
    }
    Value::Object(out)
}

/// Decodes a Kubernetes protobuf body into the equivalent JSON object.
///
/// # Errors
/// A message for bodies that are not a Secret or ConfigMap in the protobuf envelope.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    use prost::Message as _;
    let rest = body.strip_prefix(MAGIC).ok_or("no k8s protobuf magic")?;
    let unknown = Unknown::decode(rest).map_err(|e| e.to_string())?;
    let tm = unknown.type_meta.unwrap_or_default();
    let raw = unknown.raw.unwrap_or_default();
    let b64 = |v: &[u8]| base64::engine::general_purpose::STANDARD.encode(v);
    match tm.kind.as_deref() {
        Some("Secret") => {
            let s = Secret::decode(raw.as_slice()).map_err(|e| e.to_string())?;
            let mut data: BTreeMap<String, String> =
                s.data.iter().map(|(k, v)| (k.clone(), b64(v))).collect();
            for (k, v) in s.string_data {
                data.insert(k, b64(v.as_bytes()));
            }
            let mut o = json!({"apiVersion": "v1", "kind": "Secret", "metadata": meta_json(s.metadata), "data": data});
            if let Some(t) = s.r#type {
                o["type"] = json!(t);
            }
            if let Some(i) = s.immutable {
                o["immutable"] = json!(i);
            }
            Ok(o)
        }
        Some("ConfigMap") => {
            let c = ConfigMap::decode(raw.as_slice()).map_err(|e| e.to_string())?;
            let mut o = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta_json(c.metadata), "data": c.data});
            if !c.binary_data.is_empty() {
                let bin: BTreeMap<String, String> = c
                    .binary_data
                    .iter()
                    .map(|(k, v)| (k.clone(), b64(v)))
                    .collect();
                o["binaryData"] = json!(bin);
            }
            Ok(o)
        }
        other => Err(format!(
            "protobuf bodies of kind {other:?} are not supported by the test double"
        )),
    }
}
