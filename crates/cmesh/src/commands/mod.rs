//! One module per command: each turns parsed arguments into effects and an exit code.

pub mod apply;
pub mod check;
pub mod common;
pub mod init;
pub mod lab;
pub mod lint;
pub mod pki;
pub mod probe;
pub mod render;
pub mod status;
pub mod test;
