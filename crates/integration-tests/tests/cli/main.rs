//! End-to-end tests of the cmesh binary: each runs the real executable in a scratch
//! directory and checks exit codes, output and the files it writes.

mod check;
mod init;
mod lint;
mod pki;
mod render;

use integration_tests::cli;
pub use integration_tests::cli::{assert_code, cmesh, cmesh_env, mode};

#[test]
fn help_documents_commands_and_exit_codes() {
    let d = cli::scratch();
    let r = cmesh(d.path(), &["--help"]);
    assert_code(&r, 0);
    insta::assert_snapshot!("help", r.stdout);
    let r = cmesh(d.path(), &["frobnicate"]);
    assert_code(&r, 2);
}
