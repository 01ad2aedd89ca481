//! Builds a spanned YAML tree from granit-parser's event stream.
//!
//! serde-based deserialisers resolve scalars before we can see them (`01` becomes a float,
//! `yes` a boolean), lose the quoting style, and stop at the first error. mesh.yaml needs
//! the raw scalar text, its style and an exact byte span for every key and value, so that
//! every problem in a file can be reported at once with a pointer into the source.

use std::collections::{HashMap, HashSet};

use granit_parser::{Event, Parser, ScalarStyle as GScalarStyle, Span as GSpan};

use super::{Entry, Node, NodeValue, ScalarStyle, Span};

/// Resource limits applied while building a tree. Untrusted input must not be able to
/// exhaust memory through aliases ("billion laughs") or stack depth.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest accepted input, in bytes.
    pub max_bytes: usize,
    /// Deepest accepted nesting of sequences and mappings.
    pub max_depth: usize,
    /// Most nodes the tree may hold after alias expansion.
    pub max_nodes: usize,
    /// Most bytes of scalar text (keys and values) the tree may hold after alias expansion.
    /// Counting nodes alone lets one long string, aliased thousands of times, cost gigabytes.
    pub max_expanded_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bytes: 4 * 1024 * 1024,
            max_depth: 64,
            // About 150 bytes of memory each: the tree stays well under 100 MB.
            max_nodes: 500_000,
            max_expanded_bytes: 16 * 1024 * 1024,
        }
    }
}

/// A document parsed into a tree, with the mapping keys that appeared twice.
#[derive(Debug, Clone)]
pub struct Document {
    /// The root node, or `None` for an empty document (only comments or nothing).
    pub root: Option<Node>,
    /// Keys repeated within one mapping; the first occurrence is kept in the tree.
    pub duplicate_keys: Vec<DuplicateKey>,
}

/// One repeated mapping key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuplicateKey {
    /// The key text.
    pub key: String,
    /// Where the key first appeared.
    pub first: Span,
    /// Where it appeared again.
    pub again: Span,
}

/// Why a YAML text could not be turned into a tree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum YamlError {
    /// The text is not valid YAML.
    #[error("invalid YAML: {message}")]
    Syntax {
        /// The parser's description of the problem.
        message: String,
        /// Where the parser stopped.
        span: Span,
    },
    /// More than one YAML document (`---`) in a file that must hold one.
    #[error("found more than one YAML document; mesh.yaml must hold exactly one")]
    MultipleDocuments {
        /// Start of the second document.
        span: Span,
    },
    /// The input exceeds [`Limits::max_bytes`].
    #[error("input is {size} bytes, more than the limit of {limit} bytes")]
    TooLarge {
        /// Input size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// Nesting deeper than [`Limits::max_depth`].
    #[error("nesting is deeper than {limit} levels")]
    TooDeep {
        /// The limit.
        limit: usize,
        /// The collection that crossed it.
        span: Span,
    },
    /// More nodes than [`Limits::max_nodes`] after alias expansion.
    #[error("document expands to more than {limit} nodes (aliases included)")]
    TooManyNodes {
        /// The limit.
        limit: usize,
        /// Where the limit was crossed.
        span: Span,
    },
    /// More scalar text than [`Limits::max_expanded_bytes`] after alias expansion.
    #[error("document expands to more than {limit} bytes of text (aliases included)")]
    TooMuchText {
        /// The limit.
        limit: usize,
        /// Where the limit was crossed.
        span: Span,
    },
    /// A mapping key that is itself a sequence or mapping.
    #[error("mapping keys must be plain strings, not sequences or mappings")]
    ComplexKey {
        /// The key.
        span: Span,
    },
}

impl YamlError {
    /// The source location the error refers to, when it has one.
    pub fn span(&self) -> Option<Span> {
        match self {
            YamlError::Syntax { span, .. }
            | YamlError::MultipleDocuments { span }
            | YamlError::TooDeep { span, .. }
            | YamlError::TooManyNodes { span, .. }
            | YamlError::TooMuchText { span, .. }
            | YamlError::ComplexKey { span } => Some(*span),
            YamlError::TooLarge { .. } => None,
        }
    }
}

/// Parses `text` as a single YAML document into a spanned tree.
///
/// # Errors
/// Returns [`YamlError`] for invalid YAML, several documents, or input over `limits`.
pub fn parse(text: &str, limits: Limits) -> Result<Document, YamlError> {
    let mut docs = build(text, limits, false)?;
    Ok(docs.pop().unwrap_or(Document {
        root: None,
        duplicate_keys: Vec::new(),
    }))
}

/// Parses every document of a `---`-separated stream (Kubernetes manifests), in order. Empty
/// documents are kept (no root, or a null scalar) so that indexes match the source.
///
/// # Errors
/// Returns [`YamlError`] for invalid YAML or input over `limits`.
pub fn parse_stream(text: &str, limits: Limits) -> Result<Vec<Document>, YamlError> {
    build(text, limits, true)
}

fn build(text: &str, limits: Limits, multi: bool) -> Result<Vec<Document>, YamlError> {
    if text.len() > limits.max_bytes {
        return Err(YamlError::TooLarge {
            size: text.len(),
            limit: limits.max_bytes,
        });
    }
    let mut builder = Builder {
        text,
        limits,
        stack: Vec::new(),
        anchors: HashMap::new(),
        nodes: 0,
        bytes: 0,
        root: None,
        documents: 0,
        duplicate_keys: Vec::new(),
        multi,
        done: Vec::new(),
    };
    let parser = Parser::new_from_str_with_options(text, granit_parser::Options::default());
    for item in parser {
        let (event, span) = item.map_err(|e| {
            let m = e.marker();
            let offset = m.byte_offset().unwrap_or(text.len()).min(text.len());
            YamlError::Syntax {
                message: e.info(),
                span: Span {
                    offset,
                    len: 0,
                    line: m.line(),
                    column: m.col() + 1,
                },
            }
        })?;
        builder.event(event, span)?;
    }
    if !multi || builder.root.is_some() {
        builder.finish_document();
    }
    Ok(builder.done)
}

/// What an anchored node costs each time an alias repeats it.
#[derive(Clone, Copy)]
struct Cost {
    nodes: usize,
    bytes: usize,
}

enum Frame {
    Seq {
        start: Span,
        anchor: usize,
        /// The builder's counters when the collection began: its own cost is the difference
        /// at its end, computed once rather than by walking the subtree at every alias.
        at_start: Cost,
        items: Vec<Node>,
    },
    Map {
        start: Span,
        anchor: usize,
        at_start: Cost,
        entries: Vec<Entry>,
        pending_key: Option<Node>,
        /// Keys that came from `<<` merges: an explicit key later in the mapping replaces them
        /// silently instead of counting as a duplicate.
        merged: HashSet<String>,
        /// Key → position in `entries`, so that finding a repeated key stays linear in the
        /// size of the mapping (100,000 keys would otherwise cost 10^10 comparisons).
        index: HashMap<String, usize>,
    },
}

struct Builder<'t> {
    text: &'t str,
    limits: Limits,
    stack: Vec<Frame>,
    anchors: HashMap<usize, (Node, Cost)>,
    nodes: usize,
    bytes: usize,
    root: Option<Node>,
    documents: usize,
    duplicate_keys: Vec<DuplicateKey>,
    multi: bool,
    done: Vec<Document>,
}

impl Builder<'_> {
    fn span(&self, s: GSpan) -> Span {
        let range = s.byte_range().unwrap_or(0..0);
        let start = range.start.min(self.text.len());
        let end = range.end.clamp(start, self.text.len());
        Span {
            offset: start,
            len: end - start,
            line: s.start.line(),
            column: s.start.col() + 1,
        }
    }

    fn finish_document(&mut self) {
        self.done.push(Document {
            root: self.root.take(),
            duplicate_keys: std::mem::take(&mut self.duplicate_keys),
        });
        // Anchors do not cross documents.
        self.anchors.clear();
    }

    fn count(&mut self, cost: Cost, span: Span) -> Result<(), YamlError> {
        self.nodes = self.nodes.saturating_add(cost.nodes);
        self.bytes = self.bytes.saturating_add(cost.bytes);
        if self.nodes > self.limits.max_nodes {
            return Err(YamlError::TooManyNodes {
                limit: self.limits.max_nodes,
                span,
            });
        }
        if self.bytes > self.limits.max_expanded_bytes {
            return Err(YamlError::TooMuchText {
                limit: self.limits.max_expanded_bytes,
                span,
            });
        }
        Ok(())
    }

    fn counters(&self) -> Cost {
        Cost {
            nodes: self.nodes,
            bytes: self.bytes,
        }
    }

    /// The cost of a collection that began when the counters were `at_start`.
    fn since(&self, at_start: Cost) -> Cost {
        Cost {
            nodes: self.nodes - at_start.nodes,
            bytes: self.bytes - at_start.bytes,
        }
    }

    fn event(&mut self, event: Event<'_>, gspan: GSpan) -> Result<(), YamlError> {
        let span = self.span(gspan);
        match event {
            Event::StreamStart | Event::StreamEnd => Ok(()),
            Event::DocumentEnd => {
                if self.multi {
                    self.finish_document();
                }
                Ok(())
            }
            Event::DocumentStart(..) => {
                self.documents += 1;
                if self.documents > 1 && !self.multi {
                    return Err(YamlError::MultipleDocuments { span });
                }
                Ok(())
            }
            Event::Scalar(text, style, anchor, tag) => {
                let cost = Cost {
                    nodes: 1,
                    bytes: text.len(),
                };
                self.count(cost, span)?;
                let style = match style {
                    GScalarStyle::Plain => ScalarStyle::Plain,
                    GScalarStyle::SingleQuoted | GScalarStyle::DoubleQuoted => ScalarStyle::Quoted,
                    _ => ScalarStyle::Block,
                };
                let tag = tag.map(|t| {
                    if t.is_yaml_core_schema() {
                        format!("!!{}", t.suffix())
                    } else {
                        format!("{}{}", t.handle(), t.suffix())
                    }
                });
                let node = Node {
                    value: NodeValue::Scalar {
                        text: text.into_owned(),
                        style,
                        tag,
                    },
                    span,
                };
                if anchor != 0 {
                    self.anchors.insert(anchor, (node.clone(), cost));
                }
                self.push_node(node)
            }
            Event::Alias(id) => {
                // Check the budget before cloning: the clone is what costs the memory.
                let Some(cost) = self.anchors.get(&id).map(|(_, c)| *c) else {
                    return Err(YamlError::Syntax {
                        message: "alias refers to an unknown anchor".into(),
                        span,
                    });
                };
                self.count(cost, span)?;
                let target = self.anchors[&id].0.clone();
                // The alias is used here: point at the alias, keep the anchored content.
                let node = Node {
                    value: target.value,
                    span,
                };
                self.push_node(node)
            }
            Event::SequenceStart(_, anchor, _) => {
                let at_start = self.counters();
                self.count(Cost { nodes: 1, bytes: 0 }, span)?;
                self.enter(span)?;
                self.stack.push(Frame::Seq {
                    start: span,
                    anchor,
                    at_start,
                    items: Vec::new(),
                });
                Ok(())
            }
            Event::MappingStart(_, anchor, _) => {
                let at_start = self.counters();
                self.count(Cost { nodes: 1, bytes: 0 }, span)?;
                self.enter(span)?;
                self.stack.push(Frame::Map {
                    start: span,
                    anchor,
                    at_start,
                    entries: Vec::new(),
                    pending_key: None,
                    merged: HashSet::new(),
                    index: HashMap::new(),
                });
                Ok(())
            }
            Event::SequenceEnd => match self.stack.pop() {
                Some(Frame::Seq {
                    start,
                    anchor,
                    at_start,
                    items,
                }) => {
                    let node = Node {
                        span: self.extend(start, items.last().map(|n| n.span), span),
                        value: NodeValue::Seq(items),
                    };
                    if anchor != 0 {
                        let cost = self.since(at_start);
                        self.anchors.insert(anchor, (node.clone(), cost));
                    }
                    self.push_node(node)
                }
                _ => Err(self.unbalanced(span)),
            },
            Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Map {
                    start,
                    anchor,
                    at_start,
                    entries,
                    ..
                }) => {
                    let node = Node {
                        span: self.extend(start, entries.last().map(|e| e.value.span), span),
                        value: NodeValue::Map(entries),
                    };
                    if anchor != 0 {
                        let cost = self.since(at_start);
                        self.anchors.insert(anchor, (node.clone(), cost));
                    }
                    self.push_node(node)
                }
                _ => Err(self.unbalanced(span)),
            },
            // Comments, anchor metadata and anything newer carry no data for us.
            _ => Ok(()),
        }
    }

    fn unbalanced(&self, span: Span) -> YamlError {
        YamlError::Syntax {
            message: "unbalanced collection end".into(),
            span,
        }
    }

    fn enter(&self, span: Span) -> Result<(), YamlError> {
        if self.stack.len() >= self.limits.max_depth {
            return Err(YamlError::TooDeep {
                limit: self.limits.max_depth,
                span,
            });
        }
        Ok(())
    }

    /// A collection's span runs from its start to the end of its last child (block
    /// collections end where the next token starts, which is often lines later).
    fn extend(&self, start: Span, last: Option<Span>, end: Span) -> Span {
        let end_offset = match last {
            Some(l) => (l.offset + l.len).max(start.offset),
            None => (end.offset + end.len).max(start.offset),
        };
        Span {
            offset: start.offset,
            len: end_offset - start.offset,
            line: start.line,
            column: start.column,
        }
    }

    fn push_node(&mut self, node: Node) -> Result<(), YamlError> {
        match self.stack.last_mut() {
            None => {
                self.root = Some(node);
                Ok(())
            }
            Some(Frame::Seq { items, .. }) => {
                items.push(node);
                Ok(())
            }
            Some(Frame::Map {
                entries,
                pending_key,
                merged,
                index,
                ..
            }) => {
                let Some(key) = pending_key.take() else {
                    if !matches!(node.value, NodeValue::Scalar { .. }) {
                        return Err(YamlError::ComplexKey { span: node.span });
                    }
                    *pending_key = Some(node);
                    return Ok(());
                };
                let key_text = key.as_str().unwrap_or_default().to_owned();
                let is_merge = key_text == "<<" && key.is_plain();
                if is_merge {
                    merge_into(entries, merged, index, node);
                    return Ok(());
                }
                if let Some(&pos) = index.get(&key_text) {
                    if merged.remove(&key_text) {
                        // An explicit key overrides a merged one, as YAML 1.1 merge keys intend.
                        entries[pos] = Entry { key, value: node };
                    } else {
                        self.duplicate_keys.push(DuplicateKey {
                            key: key_text,
                            first: entries[pos].key.span,
                            again: key.span,
                        });
                    }
                    return Ok(());
                }
                index.insert(key_text, entries.len());
                entries.push(Entry { key, value: node });
                Ok(())
            }
        }
    }
}

/// Applies a `<<` merge: entries of the merged mapping(s) that the current mapping does not
/// already hold are appended. Values that are not mappings are ignored, as YAML 1.1 does.
fn merge_into(
    entries: &mut Vec<Entry>,
    merged: &mut HashSet<String>,
    index: &mut HashMap<String, usize>,
    value: Node,
) {
    let sources: Vec<Node> = match value.value {
        NodeValue::Map(_) => vec![value],
        NodeValue::Seq(items) => items,
        NodeValue::Scalar { .. } => Vec::new(),
    };
    for source in sources {
        if let NodeValue::Map(src_entries) = source.value {
            for e in src_entries {
                let Some(k) = e.key.as_str().map(str::to_owned) else {
                    continue;
                };
                if index.contains_key(&k) {
                    continue;
                }
                index.insert(k.clone(), entries.len());
                merged.insert(k);
                entries.push(e);
            }
        }
    }
}
