//! Spanned YAML to JSON: the form Kubernetes objects are checked in, with the source span of
//! every node kept by JSON pointer so that a finding can name its file, line and column.

use std::collections::BTreeMap;

use serde_json::{Map, Number, Value};

use super::{Node, NodeValue, Resolved, ScalarStyle, Span, yaml11_reading};

/// Spans of the nodes of one document, by JSON pointer (`/metadata/annotations/a~1b`).
pub type Spans = BTreeMap<String, Span>;

/// Converts `node` to JSON. Plain scalars resolve as kubectl reads manifests: the YAML 1.2
/// core schema, except that YAML 1.1 booleans (`yes`, `off`, ...) are booleans too, since
/// Kubernetes' YAML reader is YAML 1.1 there. `spans` receives every node's span (a mapping
/// entry's is its key's).
pub fn to_json(node: &Node, spans: &mut Spans) -> Value {
    walk(node, String::new(), spans)
}

/// Parses a state file cmesh wrote (the rotation's state, the membership record) into JSON,
/// an empty document being `null`: their readers then look fields up by name.
///
/// # Errors
/// [`super::YamlError`] for text that is not YAML.
pub fn parse_to_json(text: &str) -> Result<Value, super::YamlError> {
    let doc = super::parse(text, super::Limits::default())?;
    Ok(doc
        .root
        .map(|r| to_json(&r, &mut Spans::new()))
        .unwrap_or_default())
}

/// Escapes one JSON pointer segment (RFC 6901).
pub fn pointer_segment(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

fn walk(node: &Node, pointer: String, spans: &mut Spans) -> Value {
    let v = match &node.value {
        NodeValue::Scalar { text, style, tag } => scalar(text, *style, tag.as_deref()),
        NodeValue::Seq(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, n)| walk(n, format!("{pointer}/{i}"), spans))
                .collect(),
        ),
        NodeValue::Map(entries) => {
            let mut m = Map::new();
            for e in entries {
                let k = e.key.as_str().unwrap_or_default().to_owned();
                let p = format!("{pointer}/{}", pointer_segment(&k));
                let v = walk(&e.value, p.clone(), spans);
                // A field is where its key is written.
                spans.insert(p, e.key.span);
                m.insert(k, v);
            }
            Value::Object(m)
        }
    };
    spans.insert(pointer, node.span);
    v
}

fn scalar(text: &str, style: ScalarStyle, tag: Option<&str>) -> Value {
    if style != ScalarStyle::Plain || tag == Some("!!str") {
        return Value::String(text.to_owned());
    }
    match super::resolve_plain(text) {
        Resolved::Null => Value::Null,
        Resolved::Bool(b) => Value::Bool(b),
        Resolved::Int(i) => i64::try_from(i)
            .map(|i| Value::Number(i.into()))
            .unwrap_or_else(|_| Value::String(text.to_owned())),
        Resolved::Float(f) => Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(text.to_owned())),
        Resolved::Str => match yaml11_reading(text).as_deref() {
            Some("the boolean true") => Value::Bool(true),
            Some("the boolean false") => Value::Bool(false),
            _ => Value::String(text.to_owned()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml::{Limits, parse_stream};

    #[test]
    fn documents_to_json_with_spans() {
        let text = "a: 1\nb:\n  c/d: yes\n  e: \"true\"\n---\n---\nlist: [x, 2.5, ~]\n";
        let docs = parse_stream(text, Limits::default()).unwrap();
        assert_eq!(docs.len(), 3);
        // An empty document is nothing, or a null scalar.
        assert!(
            docs[1]
                .root
                .as_ref()
                .is_none_or(|n| n.resolve() == Some(Resolved::Null))
        );
        let mut spans = Spans::new();
        let v = to_json(docs[0].root.as_ref().unwrap(), &mut spans);
        assert_eq!(
            v,
            serde_json::json!({"a": 1, "b": {"c/d": true, "e": "true"}})
        );
        assert_eq!(spans["/b/c~1d"].line, 3);
        assert_eq!(spans["/b/e"].line, 4);
        assert_eq!(spans["/b"].column, 1);
        let mut spans = Spans::new();
        let v = to_json(docs[2].root.as_ref().unwrap(), &mut spans);
        assert_eq!(v, serde_json::json!({"list": ["x", 2.5, null]}));
        assert_eq!(spans["/list/1"].line, 7);
    }

    #[test]
    fn single_document_parse_still_refuses_streams() {
        assert!(crate::yaml::parse("a: 1\n---\nb: 2\n", Limits::default()).is_err());
        assert_eq!(
            parse_stream("a: 1\n---\nb: 2\n", Limits::default())
                .unwrap()
                .len(),
            2
        );
    }
}
