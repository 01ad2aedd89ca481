//! The source of a mesh.yaml and an index from field paths to spans.
//!
//! Rules and later stages name a field by its path (`clusters[1].podCIDR`) and look the span
//! up here, so the typed model does not have to carry a span on every field.

use std::collections::HashMap;
use std::sync::Arc;

use crate::diag::SourceText;
use crate::yaml::{Node, NodeValue, Span};

/// A mesh.yaml text and the spans of every key and value in it.
#[derive(Debug)]
pub struct SpecSource {
    text: Arc<SourceText>,
    /// path → (key span, value span). The root has the empty path.
    index: HashMap<String, (Option<Span>, Span)>,
}

impl SpecSource {
    /// Indexes `root` (if any) of `text`.
    pub fn new(text: Arc<SourceText>, root: Option<&Node>) -> Self {
        let mut index = HashMap::new();
        if let Some(root) = root {
            index_node(root, String::new(), None, &mut index);
        }
        Self { text, index }
    }

    /// The text.
    pub fn text(&self) -> &Arc<SourceText> {
        &self.text
    }

    /// The span of the value at `path`.
    pub fn span(&self, path: &str) -> Option<Span> {
        self.index.get(path).map(|(_, v)| *v)
    }

    /// The span of `path`, or of its nearest written ancestor's key when the field was left to
    /// its default (a rule about the default `authMode` points at the `clustermesh` block).
    pub fn nearest_span(&self, path: &str) -> Option<Span> {
        if let Some(s) = self.span(path) {
            return Some(s);
        }
        let mut p = path;
        loop {
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
            if let Some(s) = self.key_span(p) {
                return Some(s);
            }
        }
    }

    /// The span of the key at `path` (falls back to the value for list items and the root).
    pub fn key_span(&self, path: &str) -> Option<Span> {
        self.index.get(path).map(|(k, v)| k.unwrap_or(*v))
    }
}

impl Default for SpecSource {
    fn default() -> Self {
        Self::new(SourceText::new("<none>", ""), None)
    }
}

/// Joins a map key onto a path. Keys that would make the path ambiguous are quoted.
pub fn child(parent: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    match (parent.is_empty(), plain) {
        (true, true) => key.to_owned(),
        (false, true) => format!("{parent}.{key}"),
        (_, false) => format!("{parent}[{key:?}]"),
    }
}

/// Joins a list index onto a path.
pub fn item(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}

fn index_node(
    node: &Node,
    path: String,
    key: Option<Span>,
    index: &mut HashMap<String, (Option<Span>, Span)>,
) {
    match &node.value {
        NodeValue::Scalar { .. } => {}
        NodeValue::Seq(items) => {
            for (i, n) in items.iter().enumerate() {
                index_node(n, item(&path, i), None, index);
            }
        }
        NodeValue::Map(entries) => {
            for e in entries {
                if let Some(k) = e.key.as_str() {
                    index_node(&e.value, child(&path, k), Some(e.key.span), index);
                }
            }
        }
    }
    index.insert(path, (key, node.span));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml::{Limits, parse};

    #[test]
    fn indexes_paths() {
        let text = "a:\n  b: [1, 2]\n  'x.y': z\nl:\n  - k: v\n";
        let doc = parse(text, Limits::default()).unwrap();
        let src = SpecSource::new(SourceText::new("t", text), doc.root.as_ref());
        let at = |p: &str| src.span(p).map(|s| &text[s.offset..s.offset + s.len]);
        assert_eq!(at("a.b[1]"), Some("2"));
        assert_eq!(at("a[\"x.y\"]"), Some("z"));
        assert_eq!(at("l[0].k"), Some("v"));
        assert_eq!(src.key_span("l[0].k").map(|s| s.line), Some(5));
    }
}
