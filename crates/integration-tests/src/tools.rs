//! Locating external tools the tests use (helm, etcd, etcdctl).
//!
//! `scripts/test` installs them. A test that needs one is `#[ignore = "needs …"]` (a bare
//! `cargo test` lists it as ignored); when it runs and the tool is missing, it fails.

use std::path::{Path, PathBuf};

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

/// Fails the test: `what` is missing. Tests that need components are marked
/// `#[ignore = "needs …"]`, so a bare `cargo test` reports them as ignored; run one (or
/// `scripts/test`, which installs everything and runs them all) and a missing component is a
/// failure, never a silent pass.
pub fn missing(what: &str) -> ! {
    panic!("{what} missing: run scripts/install-test-deps (or scripts/test, which runs it)")
}

/// Finds `name` via `env_var`, the workspace's `.tools/bin`, or PATH.
///
/// # Panics
/// When it is not found ([`missing`]).
pub fn find(name: &str, env_var: &str) -> PathBuf {
    std::env::var_os(env_var)
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .or_else(|| {
            let p = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../.tools/bin")
                .join(name);
            p.is_file().then_some(p)
        })
        .or_else(|| on_path(name))
        .unwrap_or_else(|| missing(name))
}

/// The helm binary.
pub fn helm() -> PathBuf {
    find("helm", "CMESH_HELM")
}
