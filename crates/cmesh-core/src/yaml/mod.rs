//! YAML in and out: a spanned tree for reading mesh.yaml, YAML 1.2 scalar resolution with
//! detection of YAML 1.1 readings that Helm would apply, and safe emission.

mod emit;
mod json;
mod scalar;
mod tree;

pub use emit::{EmitError, ambiguous_plain_scalars, to_yaml};
pub use json::{Spans, parse_to_json, pointer_segment, to_json};
pub use scalar::{Resolved, resolve_plain, yaml11_reading};
pub use tree::{Document, DuplicateKey, Limits, YamlError, parse, parse_stream};

/// A location in a source text: byte offset and length, plus 1-based line and column of the
/// start for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize)]
pub struct Span {
    /// Byte offset of the first byte.
    pub offset: usize,
    /// Length in bytes.
    pub len: usize,
    /// 1-based line of the first byte.
    pub line: usize,
    /// 1-based column (in characters) of the first byte.
    pub column: usize,
}

/// How a scalar was written. Only plain scalars are subject to type resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScalarStyle {
    /// Unquoted.
    Plain,
    /// Single- or double-quoted.
    Quoted,
    /// Literal (`|`) or folded (`>`) block.
    Block,
}

/// A YAML node with its source span.
#[derive(Debug, Clone)]
pub struct Node {
    /// The content.
    pub value: NodeValue,
    /// Where it is written.
    pub span: Span,
}

/// The content of a [`Node`].
#[derive(Debug, Clone)]
pub enum NodeValue {
    /// A scalar: its text after escape processing, style and explicit tag if any
    /// (`!!str` style for core-schema tags).
    Scalar {
        /// Text after escape processing.
        text: String,
        /// How it was written.
        style: ScalarStyle,
        /// An explicit tag, such as `!!str`.
        tag: Option<String>,
    },
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in source order, keys unique.
    Map(Vec<Entry>),
}

/// One mapping entry.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The key node (always a scalar).
    pub key: Node,
    /// The value node.
    pub value: Node,
}

impl Node {
    /// The scalar text, if this is a scalar.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            NodeValue::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// True for an untagged plain scalar.
    pub fn is_plain(&self) -> bool {
        matches!(
            self.value,
            NodeValue::Scalar {
                style: ScalarStyle::Plain,
                tag: None,
                ..
            }
        )
    }

    /// Resolves this scalar under the YAML 1.2 core schema (tags honoured).
    /// Returns `None` for collections.
    pub fn resolve(&self) -> Option<Resolved> {
        match &self.value {
            NodeValue::Scalar { text, style, tag } => Some(match tag.as_deref() {
                Some("!!str") => Resolved::Str,
                Some(_) | None if *style != ScalarStyle::Plain => Resolved::Str,
                _ => resolve_plain(text),
            }),
            _ => None,
        }
    }

    /// A short name of this node's kind for "expected X, found Y" messages.
    pub fn kind_name(&self) -> &'static str {
        match &self.value {
            NodeValue::Seq(_) => "a list",
            NodeValue::Map(_) => "a mapping",
            NodeValue::Scalar { .. } => match self.resolve() {
                Some(Resolved::Null) => "null",
                Some(Resolved::Bool(_)) => "a boolean",
                Some(Resolved::Int(_)) => "an integer",
                Some(Resolved::Float(_)) => "a number",
                _ => "a string",
            },
        }
    }
}
