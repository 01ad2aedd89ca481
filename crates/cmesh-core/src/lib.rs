//! cmesh-core: the pure part of cmesh.
//!
//! It owns the mesh.yaml model and its validation ([`spec`]), Cilium version knowledge
//! ([`version`]), Helm values ([`value`]) and YAML handling ([`yaml`]). Nothing here performs
//! I/O: no sockets, no processes, no async runtime, no file system. Functions take text,
//! bytes and a clock, and return values and plans that the `cmesh` binary carries out.

pub mod apply;
pub mod diag;
pub mod lab;
pub mod lint;
pub mod membership;
pub mod meshtest;
mod par;
pub mod pki;
pub mod plan;
pub mod probe;
pub mod render;
pub mod spec;
pub mod status;
pub mod upgrade;
pub mod value;
pub mod version;
pub mod yaml;

pub use diag::{Diagnostic, Severity};
