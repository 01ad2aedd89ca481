//! Command-line parsing and dispatch.

mod args;
mod dispatch;

pub use args::*;
pub use dispatch::main_impl;
