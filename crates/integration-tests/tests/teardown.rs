//! The lab leaves nothing behind (issue 18): after a panic in a test holding a lab with real
//! Cilium agents (their eBPF datapath on the nodes, socket load balancing on the nodes'
//! cgroups, pods in network namespaces of their own), no network namespace of the lab's slot,
//! no mount below its directory, no cgroup, no BPF program and no process of it remains. A test
//! binary of its own: cargo runs test binaries one after another, so no other lab loads BPF
//! programs while this one counts them.

use std::path::Path;
use std::process::Command;

use integration_tests::cli::bin;
use integration_tests::lab::net;
use integration_tests::mesh::{Mesh, MeshOptions};

/// BPF programs loaded on the machine (`bpftool prog show`), by ID.
fn bpf_programs() -> Vec<String> {
    let out = Command::new("bpftool")
        .args(["prog", "show"])
        .output()
        .expect("bpftool (Debian bpftool; scripts/install-test-deps installs it)");
    assert!(out.status.success(), "bpftool prog show failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(':').next())
        .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
        .map(str::to_owned)
        .collect()
}

/// BPF programs attached to the machine's cgroup v2 root.
fn root_cgroup_programs() -> String {
    let root = integration_tests::lab::node::cgroup2_root();
    let out = Command::new("bpftool")
        .args(["cgroup", "show", &root.display().to_string()])
        .output()
        .expect("bpftool");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every file below `dir` with its contents.
fn files(dir: &Path) -> std::collections::BTreeMap<std::path::PathBuf, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                todo.push(p);
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

fn mounts_below(dir: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4).map(str::to_owned))
        .filter(|m| m.starts_with(dir))
        .collect()
}

/// Processes whose command line names `dir` (every lab process runs from or with its files),
/// by the lab's own spelling of the path (`crates/integration-tests/../../target/lab/…`) or the
/// canonical one.
fn processes_of(dirs: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if dirs.iter().any(|d| cmd.contains(d)) {
            out.push(format!("{name}: {cmd}"));
        }
    }
    out
}

#[test]
#[ignore = "needs the lab: root, network namespaces, the components of scripts/install-test-deps"]
fn regression_18_a_panicking_test_leaves_no_namespace_mount_cgroup_bpf_program_or_process() {
    let before = bpf_programs();
    let root_before = root_cgroup_programs();
    // The BPF sources the agents compile from are the Go module cache's: they must come out
    // as they went in (the agents write their probes' headers into their copy of the tree).
    let sources = std::fs::canonicalize(
        integration_tests::lab::components::tools_dir().join("cilium/v1.20.0/agent/bpf"),
    )
    .expect("the 1.20.0 agent's BPF sources");
    let sources_before = files(&sources);
    let mut seen = None;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let m = Mesh::start(&MeshOptions::new(2, "1.20.0"));
        let r = m.apply(bin(), &["--phase", "base"]);
        assert_eq!(r.code, 0, "{}\n{}\n{}", r.stdout, r.stderr, m.lab.logs(25));
        let slot = m.lab.slot();
        let dir = std::fs::canonicalize(m.dir())
            .unwrap()
            .display()
            .to_string();
        let raw = m.dir().display().to_string();
        // While the lab runs: agents, their datapath and the nodes' namespaces exist. (New
        // programs by ID: a lab that ended just before may still be freeing its own.)
        let loaded = bpf_programs()
            .into_iter()
            .filter(|p| !before.contains(p))
            .count();
        assert!(loaded > 0, "no BPF program loaded by the agents");
        assert!(!net::namespaces_of(slot).is_empty());
        assert!(!mounts_below(&dir).is_empty(), "no node bpffs mounted");
        assert!(
            !processes_of(&[&dir, &raw]).is_empty(),
            "no process of the lab found"
        );
        // Nothing attaches to the machine's own cgroup root.
        assert_eq!(root_cgroup_programs(), root_before);
        seen = Some((slot, dir, raw));
        panic!("a test fails while its lab runs");
    }));
    assert!(result.is_err());
    let (slot, dir, raw) = seen.expect("the lab started");
    assert_eq!(
        net::namespaces_of(slot),
        Vec::<String>::new(),
        "namespaces left"
    );
    assert_eq!(mounts_below(&dir), Vec::<String>::new(), "mounts left");
    assert_eq!(
        processes_of(&[&dir, &raw]),
        Vec::<String>::new(),
        "processes left"
    );
    let cgroup = integration_tests::lab::node::cgroup2_root().join(format!("cmesh-lab-{slot}"));
    assert!(!cgroup.exists(), "{} left", cgroup.display());
    assert!(!Path::new(&dir).exists(), "{dir} left");
    // The agents' programs go with their devices, cgroups and bpffs: the machine has the
    // programs it had before (the kernel frees them asynchronously: wait a little).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let now = bpf_programs();
        let extra: Vec<&String> = now.iter().filter(|p| !before.contains(p)).collect();
        if extra.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "BPF programs left: {extra:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let changed: Vec<_> = files(&sources)
        .into_iter()
        .filter(|(p, b)| sources_before.get(p) != Some(b))
        .map(|(p, _)| p)
        .collect();
    assert!(
        changed.is_empty(),
        "the lab changed the module cache: {changed:?}"
    );
    // And against the downloaded archives' hashes, which also catches a change an earlier run
    // made.
    let components = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/components/main");
    let out = Command::new("go")
        .args(["mod", "verify"])
        .current_dir(&components)
        .output()
        .expect("go (scripts/install-test-deps needs it)");
    assert!(
        out.status.success(),
        "go mod verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
