//! What `cmesh lab` needs of the machine: the external tools (kind, docker/podman, virsh,
//! virt-install, qemu-img, ssh) found on PATH with the package to install when one is missing,
//! running one planned command with its output captured, asking the tools what exists, and the
//! lab's state file, which records what `lab up` created so that `lab down` removes only that.
//!
//! The commands themselves come from the core (`cmesh_core::lab::plan`); nothing here decides
//! what to create.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use cmesh_core::lab::{Provider, Step};
use serde::{Deserialize, Serialize};

use crate::errors::ExpectedError;
use crate::fs::atomic::{self as fsx, Mode};

/// An external program `lab` drives, and where to get it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tool {
    /// The command name.
    pub name: &'static str,
    /// How to install it.
    pub install: &'static str,
}

/// kind.
pub(crate) const KIND: Tool = Tool {
    name: "kind",
    install: "install kind: `go install sigs.k8s.io/kind@v0.33.0`, or a release binary from https://kind.sigs.k8s.io/docs/user/quick-start/#installation",
};
/// Docker.
pub(crate) const DOCKER: Tool = Tool {
    name: "docker",
    install: "install Docker (Debian/Ubuntu package `docker.io`), or use Podman with --engine podman",
};
/// Podman.
pub(crate) const PODMAN: Tool = Tool {
    name: "podman",
    install: "install Podman (Debian/Ubuntu package `podman`), or use Docker with --engine docker",
};
/// virsh.
pub(crate) const VIRSH: Tool = Tool {
    name: "virsh",
    install: "install libvirt (Debian/Ubuntu packages `libvirt-clients` and `libvirt-daemon-system`)",
};
/// virt-install.
pub(crate) const VIRT_INSTALL: Tool = Tool {
    name: "virt-install",
    install: "install virt-install (Debian/Ubuntu package `virtinst`)",
};
/// qemu-img.
pub(crate) const QEMU_IMG: Tool = Tool {
    name: "qemu-img",
    install: "install qemu-img (Debian/Ubuntu package `qemu-utils`)",
};
/// ssh.
pub(crate) const SSH: Tool = Tool {
    name: "ssh",
    install: "install the OpenSSH client (Debian/Ubuntu package `openssh-client`)",
};
/// curl (only for --image-url).
pub(crate) const CURL: Tool = Tool {
    name: "curl",
    install: "install curl (Debian/Ubuntu package `curl`), or download the image yourself and pass --image",
};

/// Where `name` is on PATH.
pub(crate) fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    {
        p.is_file()
    }
}

/// Fails with the install hint of the first of `tools` that is not on PATH.
///
/// # Errors
/// [`ExpectedError::ToolMissing`].
pub(crate) fn require(tools: &[Tool], provider: Provider) -> Result<(), ExpectedError> {
    match tools.iter().find(|t| which(t.name).is_none()) {
        None => Ok(()),
        Some(t) => Err(ExpectedError::ToolMissing {
            tool: t.name.to_owned(),
            why: format!("`cmesh lab --provider {}` runs it", provider.as_str()),
            install: t.install.to_owned(),
        }),
    }
}

/// What a finished command printed.
#[derive(Debug, Clone)]
pub(crate) struct Output {
    /// Whether it exited 0.
    pub ok: bool,
    /// Its exit code, if it exited.
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs `argv` with `env` added, capturing its output. A command that cannot be started at
/// all (missing after the PATH check, not executable) is an `Err` with the reason.
pub(crate) fn run(argv: &[String], env: &[(String, String)]) -> Result<Output, String> {
    let (prog, args) = argv.split_first().ok_or("empty command")?;
    let out = Command::new(prog)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {prog}: {e}"))?;
    Ok(Output {
        ok: out.status.success(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Runs one planned step; a failure becomes an error naming the cluster, the phase, the
/// command and the last lines it printed.
///
/// # Errors
/// [`ExpectedError::Cluster`].
pub(crate) fn run_step(step: &Step) -> Result<Output, ExpectedError> {
    let fail = |why: String| {
        ExpectedError::Cluster {
        message: format!(
            "{}{}: `{}` failed: {why}",
            step.cluster
                .as_deref()
                .map_or_else(String::new, |c| format!("{c}: ")),
            step.phase,
            step.argv.join(" ")
        ),
        hint: "fix the cause and run `cmesh lab up` again: it continues where it stopped; `cmesh lab down` removes what was created".into(),
    }
    };
    let out = run(&step.argv, &step.env).map_err(fail)?;
    if out.ok {
        Ok(out)
    } else {
        Err(fail(last_lines(&out)))
    }
}

/// The last few lines of a failed command's output, for an error message.
pub(crate) fn last_lines(out: &Output) -> String {
    let text = if out.stderr.trim().is_empty() {
        &out.stdout
    } else {
        &out.stderr
    };
    let lines: Vec<&str> = text.trim_end().lines().collect();
    let tail = lines[lines.len().saturating_sub(3)..].join(" / ");
    match out.code {
        Some(c) if tail.is_empty() => format!("exit status {c}"),
        Some(c) => format!("exit status {c}: {tail}"),
        None => format!("killed by a signal: {tail}"),
    }
}

/// The kind clusters that exist (`kind get clusters`).
///
/// # Errors
/// [`ExpectedError::Cluster`] when kind fails (the engine is not running, say).
pub(crate) fn kind_clusters(env: &[(String, String)]) -> Result<Vec<String>, ExpectedError> {
    let step = Step {
        cluster: None,
        phase: "list kind clusters",
        argv: vec!["kind".into(), "get".into(), "clusters".into()],
        env: env.to_vec(),
    };
    Ok(names(&run_step(&step)?.stdout))
}

/// One name per non-empty line, as `kind get clusters` and `virsh list --name` print them.
fn names(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Whether a command that only looks something up succeeds (`docker network inspect NAME`,
/// `virsh net-info NAME`).
pub(crate) fn exists(argv: &[&str]) -> bool {
    let argv: Vec<String> = argv.iter().map(|s| (*s).to_owned()).collect();
    run(&argv, &[]).is_ok_and(|o| o.ok)
}

/// The libvirt domains that exist (`virsh list --all --name`).
///
/// # Errors
/// [`ExpectedError::Cluster`] when virsh cannot reach libvirt.
pub(crate) fn libvirt_domains(uri: &str) -> Result<Vec<String>, ExpectedError> {
    let step = Step {
        cluster: None,
        phase: "list VMs",
        argv: ["virsh", "--connect", uri, "list", "--all", "--name"]
            .map(str::to_owned)
            .to_vec(),
        env: Vec::new(),
    };
    Ok(names(&run_step(&step)?.stdout))
}

/// The address of kind node container `node` on network `net`
/// (`<engine> inspect --format '{{json .NetworkSettings.Networks}}'`).
///
/// # Errors
/// [`ExpectedError::Cluster`] when the container is missing or not on the network.
pub(crate) fn container_address(
    engine: &str,
    node: &str,
    net: &str,
) -> Result<String, ExpectedError> {
    let step = Step {
        cluster: None,
        phase: "read node address",
        argv: [
            engine,
            "inspect",
            "--format",
            "{{json .NetworkSettings.Networks}}",
            node,
        ]
        .map(str::to_owned)
        .to_vec(),
        env: Vec::new(),
    };
    let out = run_step(&step)?;
    let nets: serde_json::Value =
        serde_json::from_str(out.stdout.trim()).map_err(|e| ExpectedError::Cluster {
            message: format!("{engine} inspect {node}: unexpected output ({e})"),
            hint: format!("is `{engine}` Docker- or Podman-compatible?"),
        })?;
    nets.get(net)
        .and_then(|n| n.get("IPAddress"))
        .and_then(|a| a.as_str())
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| ExpectedError::Cluster {
            message: format!("{node} has no address on network {net}"),
            hint: format!("was it created by another tool? `cmesh lab down` then `cmesh lab up` recreates it on {net}"),
        })
}

/// What `lab up` created, kept in `<state dir>/state.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LabState {
    /// The provider the lab was made with.
    pub provider: String,
    /// Whether `up` created the shared network.
    pub network: bool,
    /// The clusters `up` created, by name.
    pub clusters: BTreeMap<String, ClusterState>,
}

/// One created cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ClusterState {
    /// The kubeconfig `up` wrote (relative to mesh.yaml's directory), once written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<String>,
}

impl LabState {
    /// The state file in `dir`.
    pub(crate) fn path(dir: &Path) -> PathBuf {
        dir.join("state.json")
    }

    /// Reads the state in `dir`, or the empty state when there is none.
    ///
    /// # Errors
    /// [`ExpectedError::Read`], or [`ExpectedError::Usage`] for a file that is not cmesh's.
    pub(crate) fn load(dir: &Path) -> Result<LabState, ExpectedError> {
        let path = Self::path(dir);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| ExpectedError::Usage {
                message: format!("{}: not a cmesh lab state file ({e})", path.display()),
                hint: Some(
                    "remove it if nothing in the lab is needed, or pass another --state-dir".into(),
                ),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(LabState::default()),
            Err(source) => Err(ExpectedError::Read { path, source }),
        }
    }

    /// Writes the state to `dir` (atomically), or removes the file when nothing is left.
    ///
    /// # Errors
    /// [`ExpectedError::Write`].
    pub(crate) fn save(&self, dir: &Path) -> Result<(), ExpectedError> {
        let path = Self::path(dir);
        if !self.network && self.clusters.is_empty() {
            return match std::fs::remove_file(&path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(source) => Err(ExpectedError::Write { path, source }),
            };
        }
        std::fs::create_dir_all(dir).map_err(|source| ExpectedError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
        text.push('\n');
        fsx::write_atomic(&path, text.as_bytes(), Mode::Public, true)
    }
}
