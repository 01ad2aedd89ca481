//! Locating external tools the tests use (helm, etcd, etcdctl).
//!
//! `scripts/test` installs them and sets `CMESH_REQUIRE_EXTERNAL=1`, which turns a missing tool
//! into a test failure; without it (a bare `cargo test`), tests that need one say so and pass
//! without running.

use std::path::{Path, PathBuf};

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

/// True when missing tools must fail tests.
pub fn required() -> bool {
    std::env::var_os("CMESH_REQUIRE_EXTERNAL").is_some_and(|v| v == "1")
}

/// Finds `name` via `env_var`, the workspace's `.tools/bin`, or PATH. Returns `None` (after
/// printing why) when it is missing and not required; panics when it is required.
pub fn find(name: &str, env_var: &str) -> Option<PathBuf> {
    let found = std::env::var_os(env_var)
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .or_else(|| {
            let p = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../.tools/bin")
                .join(name);
            p.is_file().then_some(p)
        })
        .or_else(|| on_path(name));
    if found.is_none() {
        if required() {
            panic!(
                "{name} is required (CMESH_REQUIRE_EXTERNAL=1) but not found: run scripts/install-test-deps"
            );
        }
        eprintln!("SKIPPED: {name} not found (run ./scripts/test, which installs it)");
    }
    found
}

/// The helm binary.
pub fn helm() -> Option<PathBuf> {
    find("helm", "CMESH_HELM")
}
