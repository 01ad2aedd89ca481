//! Diagnostics about a mesh.yaml: a stable rule code, a severity, a message, the field and
//! source span it concerns, related places, and a hint that says how to fix it.
//!
//! A [`Diagnostic`] implements [`miette::Diagnostic`], so the edge can render it with source
//! snippets; it also serialises to JSON for `--output json`.

use std::fmt;
use std::sync::Arc;

use miette::{LabeledSpan, NamedSource, SourceCode};
use serde::Serialize;

use crate::yaml::Span;

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Must be fixed; commands refuse to proceed.
    Error,
    /// Worth fixing; commands proceed.
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// A named source text (a file, or the built-in example) that spans point into.
#[derive(Debug)]
pub struct SourceText {
    named: NamedSource<String>,
    name: String,
}

impl SourceText {
    /// Wraps `text` under the display name `name` (usually the file path).
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Arc<Self> {
        let name = name.into();
        Arc::new(Self {
            named: NamedSource::new(name.clone(), text.into()),
            name,
        })
    }

    /// The display name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The full text.
    pub fn text(&self) -> &str {
        self.named.inner()
    }
}

/// A place related to a diagnostic (the other half of an overlap, the first of two
/// duplicates, ...).
#[derive(Debug, Clone, Serialize)]
pub struct Related {
    /// Field path, such as `clusters[1].podCIDR`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Source location.
    #[serde(skip_serializing_if = "Option::is_none", flatten, with = "span_json")]
    pub span: Option<Span>,
    /// What this place is.
    pub message: String,
}

/// One finding about a mesh.yaml.
#[derive(Debug, Clone, Serialize)]
pub struct Diagnostic {
    /// Stable rule code, such as `CM203`.
    pub code: &'static str,
    /// Error or warning.
    pub severity: Severity,
    /// What is wrong, as a lowercase sentence fragment.
    pub message: String,
    /// The field it concerns, as a path (`clusters[0].clustermesh.port`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Where in the source.
    #[serde(skip_serializing_if = "Option::is_none", flatten, with = "span_json")]
    pub span: Option<Span>,
    /// Other places involved.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub related: Vec<Related>,
    /// How to fix it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
    /// The text the spans point into.
    #[serde(skip)]
    pub source: Option<Arc<SourceText>>,
}

mod span_json {
    //! Spans appear in JSON as `line` and `column` only; byte offsets are an implementation
    //! detail of the renderer.
    use serde::Serializer;
    use serde::ser::SerializeMap;

    use crate::yaml::Span;

    pub(super) fn serialize<S: Serializer>(span: &Option<Span>, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        if let Some(span) = span {
            m.serialize_entry("line", &span.line)?;
            m.serialize_entry("column", &span.column)?;
        }
        m.end()
    }
}

impl Diagnostic {
    /// A diagnostic for `rule` with its default severity.
    pub fn new(rule: &Rule, message: impl Into<String>) -> Self {
        Self {
            code: rule.code,
            severity: rule.severity,
            message: message.into(),
            field: None,
            span: None,
            related: Vec::new(),
            help: None,
            source: None,
        }
    }

    /// Sets the field path and its span.
    pub fn at(mut self, field: impl Into<String>, span: Option<Span>) -> Self {
        self.field = Some(field.into());
        self.span = span;
        self
    }

    /// Adds a related place.
    pub fn related(
        mut self,
        field: Option<String>,
        span: Option<Span>,
        message: impl Into<String>,
    ) -> Self {
        self.related.push(Related {
            field,
            span,
            message: message.into(),
        });
        self
    }

    /// Sets the fix hint.
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Attaches the source text for rendering.
    pub fn with_source(mut self, source: &Arc<SourceText>) -> Self {
        self.source = Some(Arc::clone(source));
        self
    }

    /// True for errors.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Diagnostic {}

impl miette::Diagnostic for Diagnostic {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.code))
    }

    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn SourceCode> {
        self.source.as_ref().map(|s| &s.named as &dyn SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        self.source.as_ref()?;
        let text_len = self.source.as_ref().map_or(0, |s| s.text().len());
        let clamp = move |s: Span| {
            let offset = s.offset.min(text_len);
            (offset, s.len.min(text_len - offset))
        };
        let primary = self.span.map(|s| {
            let label = self.field.clone();
            LabeledSpan::new_primary_with_span(label, clamp(s))
        });
        let related = self.related.iter().filter_map(move |r| {
            r.span
                .map(|s| LabeledSpan::new_with_span(Some(r.message.clone()), clamp(s)))
        });
        Some(Box::new(primary.into_iter().chain(related)))
    }
}

/// A rule: its stable code, default severity and a one-line title for docs and listings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Rule {
    /// Stable code, `CM` followed by three digits.
    pub code: &'static str,
    /// Default severity.
    pub severity: Severity,
    /// One-line description.
    pub title: &'static str,
}

/// A summary count of diagnostics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Number of errors.
    pub errors: usize,
    /// Number of warnings.
    pub warnings: usize,
}

impl Counts {
    /// Counts `diags` by severity.
    pub fn of(diags: &[Diagnostic]) -> Self {
        let errors = diags.iter().filter(|d| d.is_error()).count();
        Self {
            errors,
            warnings: diags.len() - errors,
        }
    }
}
