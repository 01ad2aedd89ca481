//! YAML output that every reader, YAML 1.1 (Helm) or 1.2, reads the same way.
//!
//! serde-saphyr quotes strings that a YAML 1.1 reader would take for booleans, numbers,
//! nulls or timestamps. [`ambiguous_plain_scalars`] re-reads our own output and lists any
//! plain scalar whose meaning differs between 1.1 and 1.2, so tests can prove the property
//! instead of trusting it.

use serde::Serialize;

use super::{Node, NodeValue, ScalarStyle, Span, tree};

/// Failure to turn a value into YAML.
#[derive(Debug, thiserror::Error)]
#[error("failed to write YAML: {0}")]
pub struct EmitError(String);

/// Serialises `value` as a block-style YAML document (2-space indent, no `---`).
///
/// # Errors
/// Returns [`EmitError`] if the value cannot be represented (non-string map keys).
pub fn to_yaml<T: Serialize>(value: &T) -> Result<String, EmitError> {
    let options = serde_saphyr::ser_options! {
        indent_step: 2,
        compact_list_indent: true,
        // Long base64 blobs stay on one line instead of becoming folded scalars.
        prefer_block_scalars: false,
    };
    serde_saphyr::to_string_with_options(value, options).map_err(|e| EmitError(e.to_string()))
}

/// Lists plain scalars in `text` that a YAML 1.1 reader would read differently from YAML 1.2,
/// with what 1.1 makes of each.
///
/// # Errors
/// Returns the parse error if `text` is not YAML at all.
pub fn ambiguous_plain_scalars(text: &str) -> Result<Vec<(String, String, Span)>, tree::YamlError> {
    let mut out = Vec::new();
    // Multi-document output (Secrets, Flux) is checked one document at a time.
    for part in text.split("\n---\n") {
        let doc = tree::parse(part, tree::Limits::default())?;
        if let Some(root) = &doc.root {
            walk(root, &mut out);
        }
    }
    Ok(out)
}

fn walk(node: &Node, out: &mut Vec<(String, String, Span)>) {
    match &node.value {
        NodeValue::Scalar {
            text,
            style: ScalarStyle::Plain,
            tag: None,
        } => {
            if let Some(reading) = super::yaml11_reading(text) {
                out.push((text.clone(), reading, node.span));
            }
        }
        NodeValue::Scalar { .. } => {}
        NodeValue::Seq(items) => items.iter().for_each(|n| walk(n, out)),
        NodeValue::Map(entries) => {
            for e in entries {
                walk(&e.key, out);
                walk(&e.value, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn quotes_every_yaml11_lookalike() {
        let words = [
            "yes",
            "no",
            "on",
            "off",
            "y",
            "n",
            "Y",
            "NO",
            "0123",
            "010",
            "1_000",
            "0o17",
            "true",
            "null",
            "~",
            "",
            "1.0",
            "12e3",
            "0x1F",
            "2001-01-01",
            "*.mylaptop.loc",
            "- x",
            "a: b",
            "#x",
        ];
        let map: BTreeMap<&str, &str> = words.iter().map(|w| (*w, *w)).collect();
        let text = to_yaml(&map).unwrap();
        assert_eq!(ambiguous_plain_scalars(&text).unwrap(), vec![]);
        // And every string reads back as the same string.
        let doc = tree::parse(&text, tree::Limits::default()).unwrap();
        let NodeValue::Map(entries) = doc.root.unwrap().value else {
            panic!("not a map")
        };
        for e in entries {
            assert_eq!(
                e.value.resolve(),
                Some(super::super::Resolved::Str),
                "{text}"
            );
            assert_eq!(e.key.as_str(), e.value.as_str());
        }
    }

    #[test]
    fn detects_ambiguity_in_foreign_yaml() {
        let found = ambiguous_plain_scalars("a: yes\nb: '010'\nc: 010\n").unwrap();
        let texts: Vec<&str> = found.iter().map(|f| f.0.as_str()).collect();
        assert_eq!(texts, vec!["yes", "010"]);
    }

    #[test]
    fn long_single_line_strings_stay_plain() {
        let long = "TFMwdExTMUNSVWRKVGlCRFJWSlVTVVpKUTBGVVJTMHRMUzB0Q2sxSlNVSjBla05EUVZZclowRjNTVUpCWjBsVlVUVlVh".repeat(3);
        let text = to_yaml(&BTreeMap::from([("k", long.as_str())])).unwrap();
        assert_eq!(text, format!("k: {long}\n"));
    }
}
