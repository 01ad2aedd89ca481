//! End-to-end tests of the cmesh binary: each runs the real executable in a scratch
//! directory and checks exit codes, output and the files it writes.

mod check;
mod init;
mod lint;
mod pki;
mod render;

use std::path::Path;

use integration_tests::cli::{self, Run};

/// Runs the binary under test.
pub fn cmesh(dir: &Path, args: &[&str]) -> Run {
    cli::run(
        Path::new(env!("CARGO_BIN_EXE_cmesh-under-test")),
        dir,
        args,
        &[],
    )
}

/// Runs the binary under test with extra environment.
pub fn cmesh_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    cli::run(
        Path::new(env!("CARGO_BIN_EXE_cmesh-under-test")),
        dir,
        args,
        env,
    )
}

/// Asserts an exit code, showing the output on failure.
#[track_caller]
pub fn assert_code(run: &Run, code: i32) {
    assert_eq!(
        run.code, code,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
}

/// Unix mode bits of `path`.
pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn help_documents_commands_and_exit_codes() {
    let d = cli::scratch();
    let r = cmesh(d.path(), &["--help"]);
    assert_code(&r, 0);
    insta::assert_snapshot!("help", r.stdout);
    let r = cmesh(d.path(), &["frobnicate"]);
    assert_code(&r, 2);
}
