//! The lab's processes: every component runs as a child of one long-lived spawner thread,
//! under `setpriv --pdeathsig KILL` so that it dies with that thread, i.e. with the test
//! process even when that is killed without unwinding, and inside its cluster's network
//! namespace (`nsenter --net`). Output goes to a log file per process, which a failing test
//! prints. Dropping a [`Proc`] kills it and waits for it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::{Duration, Instant};

type Request = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Spawns processes from one thread that lives as long as the lab (see the module docs).
pub struct Spawner {
    tx: Mutex<Option<mpsc::Sender<Request>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Spawner {
    /// Starts the spawner thread.
    pub fn new() -> Spawner {
        let (tx, rx) = mpsc::channel::<Request>();
        let thread = std::thread::Builder::new()
            .name("lab-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("spawner thread");
        Spawner {
            tx: Mutex::new(Some(tx)),
            thread: Some(thread),
        }
    }

    /// Spawns `cmd` from the spawner thread.
    ///
    /// # Errors
    /// What `Command::spawn` says.
    pub fn spawn(&self, cmd: Command) -> std::io::Result<Child> {
        let (reply, rx) = mpsc::channel();
        self.tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .expect("spawner stopped")
            .send((cmd, reply))
            .map_err(|_| std::io::Error::other("spawner stopped"))?;
        rx.recv()
            .map_err(|_| std::io::Error::other("spawner stopped"))?
    }
}

impl Default for Spawner {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Spawner {
    fn drop(&mut self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How to start one process.
#[derive(Debug, Clone)]
pub struct ProcSpec {
    /// A short name for logs (`etcd`, `kube-apiserver`, ...).
    pub name: String,
    /// The network namespace to run in (`None`: the host's).
    pub netns: Option<String>,
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Environment (the process gets only this, as a container does).
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub cwd: PathBuf,
    /// The log file (stdout and stderr).
    pub log: PathBuf,
}

impl ProcSpec {
    /// A spec with the usual PATH and the lab's log layout: `<dir>/<name>.log`.
    pub fn new(name: &str, netns: &str, dir: &Path, argv: Vec<String>) -> ProcSpec {
        ProcSpec {
            name: name.into(),
            netns: Some(netns.into()),
            argv,
            env: vec![("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into())],
            cwd: dir.to_path_buf(),
            log: dir.join(format!("{name}.log")),
        }
    }

    /// Adds an environment variable.
    pub fn env(mut self, k: &str, v: &str) -> ProcSpec {
        self.env.push((k.into(), v.into()));
        self
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--pdeathsig", "KILL", "--"]);
        if let Some(ns) = &self.netns {
            cmd.arg("nsenter")
                .arg(format!("--net={}", super::net::netns_path(ns)))
                .arg("--");
        }
        cmd.args(&self.argv);
        cmd.env_clear();
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd.current_dir(&self.cwd);
        cmd
    }
}

/// A running process.
pub struct Proc {
    /// What it was started from.
    pub spec: ProcSpec,
    child: Option<Child>,
}

impl Proc {
    /// Starts `spec` through `spawner`.
    ///
    /// # Panics
    /// When the process cannot be started.
    pub fn start(spawner: &Spawner, spec: ProcSpec) -> Proc {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log)
            .unwrap_or_else(|e| panic!("{}: {e}", spec.log.display()));
        let mut cmd = spec.command();
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        let child = spawner
            .spawn(cmd)
            .unwrap_or_else(|e| panic!("start {}: {e}", spec.name));
        Proc {
            spec,
            child: Some(child),
        }
    }

    /// `Some(exit status)` once it has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits up to `timeout` for it to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(s) = self.exited() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.spec.log, lines)
    }

    /// Kills it (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The last `lines` lines of a file.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Processes started together (one controller set), reported together.
#[derive(Default)]
pub struct Group(pub Vec<Proc>);

impl Group {
    /// The last `lines` lines of each process's log.
    pub fn logs(&self, lines: usize) -> String {
        self.0
            .iter()
            .map(|p| format!("--- {} ---\n{}\n", p.spec.name, p.log_tail(lines)))
            .collect()
    }

    /// Panics with its log when a process has exited.
    pub fn assert_running(&mut self) {
        for p in &mut self.0 {
            if let Some(s) = p.exited() {
                panic!("{} exited ({s}):\n{}", p.spec.name, p.log_tail(40));
            }
        }
    }

    /// Kills every process.
    pub fn stop(&mut self) {
        for p in &mut self.0 {
            p.kill();
        }
    }
}
