//! Runs the cmesh binary as a user would, in a scratch directory, and redacts its output for
//! snapshots.

use std::path::Path;
use std::process::Command;

/// The outcome of one run.
#[derive(Debug, Clone)]
pub struct Run {
    /// Exit code (-1 if killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    /// `exit: N`, stdout and stderr in one text for snapshots, with `dir` replaced by `[DIR]`.
    pub fn snapshot(&self, dir: &Path) -> String {
        let d = dir.display().to_string();
        format!(
            "exit: {}\n--- stdout\n{}--- stderr\n{}",
            self.code,
            redact(&self.stdout.replace(&d, "[DIR]")),
            redact(&self.stderr.replace(&d, "[DIR]"))
        )
    }
}

/// Replaces dates, fingerprints and serials with placeholders.
pub fn redact(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for line in s.split_inclusive('\n') {
        let mut l = line.to_owned();
        // 2026-11-24 12:00 UTC
        while let Some(i) = find_date(&l) {
            l.replace_range(i..i + 20, "[DATE]");
        }
        // Serial numbers and SHA-256 fingerprints: long runs of hex digits (and colons).
        let mut rebuilt = String::with_capacity(l.len());
        for (i, token) in l.split(' ').enumerate() {
            if i > 0 {
                rebuilt.push(' ');
            }
            let core = token.trim_end();
            if core.len() >= 32 && core.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
                rebuilt.push_str("[HEX]");
                rebuilt.push_str(&token[core.len()..]);
            } else {
                rebuilt.push_str(token);
            }
        }
        out.push_str(&rebuilt);
    }
    out
}

fn find_date(l: &str) -> Option<usize> {
    (0..l.len()).find(|&i| {
        let Some(s) = l.get(i..i + 20) else {
            return false;
        };
        let b = s.as_bytes();
        b[4] == b'-'
            && b[7] == b'-'
            && b[10] == b' '
            && b[13] == b':'
            && s.ends_with(" UTC")
            && s[..4].bytes().all(|c| c.is_ascii_digit())
    })
}

/// The binary under test, `cmesh-under-test`, which cargo builds beside every test binary of
/// this package (`target/<profile>/`; test binaries live in its `deps/`).
///
/// # Panics
/// When it is not there.
pub fn bin() -> &'static Path {
    static BIN: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test binary's path");
        let dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>");
        let bin = dir.join("cmesh-under-test");
        assert!(bin.is_file(), "{} is not built", bin.display());
        bin
    })
}

/// Runs the binary under test in `dir`.
pub fn cmesh(dir: &Path, args: &[&str]) -> Run {
    run(bin(), dir, args, &[])
}

/// Runs the binary under test in `dir` with extra environment.
pub fn cmesh_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    run(bin(), dir, args, env)
}

/// Runs the binary under test in `dir` with `input` on its stdin.
pub fn cmesh_stdin(dir: &Path, args: &[&str], input: &[u8]) -> Run {
    use std::io::Write as _;
    let mut child = command(bin(), dir, args, &[])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin().display()));
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    // Written from a thread: a child that stops reading must not block the test.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let run = wait(child);
    let _ = writer.join();
    run
}

/// Runs real `git` in `dir` (with a fixed identity for commits); panics with git's stderr
/// when it fails; returns its stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=cmesh-test",
            "-c",
            "user.email=cmesh@test.invalid",
        ])
        .args(args)
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
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

/// Runs `bin args…` in `dir` with a clean environment (no colours, fixed width, no
/// kubeconfig from the developer's machine) plus `env`.
pub fn run(bin: &Path, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let out = command(bin, dir, args, env)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Starts `bin args…` as [`run`] would, with stdout and stderr piped, for tests that signal
/// it; finish with [`wait`].
pub fn spawn(bin: &Path, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> std::process::Child {
    command(bin, dir, args, env)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()))
}

/// Waits for a spawned run.
pub fn wait(child: std::process::Child) -> Run {
    let out = child.wait_with_output().expect("wait");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Sends `signal` (such as `INT` or `KILL`) to a process.
pub fn signal(pid: u32, signal: &str) {
    let ok = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{signal} {pid} failed");
}

fn command(bin: &Path, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("NO_COLOR", "1")
        .env("COLUMNS", "100");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// A scratch directory, removed when dropped.
pub fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("cmesh-it-")
        .tempdir()
        .expect("temp dir")
}

/// Every file under `dir` (relative path → bytes), for comparing trees; empty if `dir` is
/// missing.
pub fn snapshot_tree(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    fn walk(root: &Path, dir: &Path, out: &mut std::collections::BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.insert(
                    p.strip_prefix(root).unwrap().display().to_string(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    if dir.exists() {
        walk(dir, dir, &mut out);
    }
    out
}

/// Runs `bin args…` as [`run`] does and also returns its peak resident memory in KiB, read
/// by a Python parent with `getrusage(RUSAGE_CHILDREN)` (so that other tests' processes in
/// this test binary do not count).
pub fn run_measured(bin: &Path, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (Run, u64) {
    const SCRIPT: &str = "import resource, subprocess, sys\n\
r = subprocess.run(sys.argv[1:])\n\
sys.stderr.write('\\nmaxrss-kib %d\\n' % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n\
sys.exit(r.returncode if r.returncode >= 0 else 128 - r.returncode)\n";
    let mut all: Vec<&str> = vec!["-c", SCRIPT, bin.to_str().expect("utf-8 path")];
    all.extend_from_slice(args);
    let mut r = run(Path::new("python3"), dir, &all, env);
    let (rest, rss) = r
        .stderr
        .rsplit_once("\nmaxrss-kib ")
        .map(|(a, b)| (a.to_owned(), b.trim().parse().unwrap_or(u64::MAX)))
        .unwrap_or_else(|| (r.stderr.clone(), u64::MAX));
    r.stderr = rest;
    (r, rss)
}
