//! Named points between the steps of cmesh's multi-step writes (the CA pair, the tree swap),
//! where a test can stop the process to kill it there with SIGKILL and prove that the next
//! run finds a usable state and repairs it. Inert unless `CMESH_TEST_PAUSE_AT` names the
//! point: then cmesh creates the file `CMESH_TEST_PAUSE_FILE` and waits to be killed.

/// The points, in the order a render passes them (docs/ARCHITECTURE.md, "Guarantees").
pub(crate) const POINTS: &[&str] = &[
    "pki-ca-staged",
    "pki-ca-key-placed",
    "pki-leaf-written",
    "pki-keys-synced",
    "pki-rotation-promoted",
    "tree-staged",
    "tree-swapped",
    "tree-old-moved",
];

/// Pauses here if a test asked for this point: until killed, or until a signal arrives.
pub(crate) fn point(name: &str) {
    debug_assert!(POINTS.contains(&name), "unknown fault point {name}");
    if std::env::var_os("CMESH_TEST_PAUSE_AT").is_some_and(|p| p == name) {
        if let Some(file) = std::env::var_os("CMESH_TEST_PAUSE_FILE") {
            let _ = std::fs::write(file, name);
        }
        // Until killed, or until a signal makes the command stop at its next safe point.
        while !crate::host::signals::interrupted() {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// True when a test turned off `what` (`CMESH_TEST_DISABLE=exchange`: the tree swap falls
/// back to two renames, as on a file system without `RENAME_EXCHANGE`).
pub(crate) fn disabled(what: &str) -> bool {
    std::env::var("CMESH_TEST_DISABLE").is_ok_and(|v| v.split(',').any(|x| x == what))
}
