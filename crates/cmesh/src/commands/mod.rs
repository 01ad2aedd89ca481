//! One module per command: each turns parsed arguments (`cli`) into effects and an exit code;
//! `dispatch` runs the one the command line names, and `common` holds what several share
//! (loading mesh.yaml with its diagnostics, writing a report). A command never imports another,
//! except apply's status gate, which calls `status::survey`; `upgrade` lives inside `apply`.

pub(crate) use dispatch::main_impl;

pub(crate) mod apply;
pub(crate) mod check;
pub(crate) mod common;
pub(crate) mod completions;
mod dispatch;
pub(crate) mod init;
pub(crate) mod lab;
pub(crate) mod lint;
pub(crate) mod man;
pub(crate) mod pki;
pub(crate) mod probe;
pub(crate) mod render;
pub(crate) mod status;
pub(crate) mod test;
pub(crate) mod version;
