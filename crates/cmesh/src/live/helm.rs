//! Running the real helm binary: `upgrade --install` and `get values`, with the cluster's
//! kubeconfig and context, a timeout, and helm's stderr kept for the error.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

/// Where the chart comes from.
#[derive(Debug, Clone)]
pub(crate) enum Chart {
    /// `cilium` from a repository URL at a version.
    Repo {
        /// Repository URL.
        url: String,
        /// Chart version.
        version: String,
    },
    /// A local chart directory or archive (`--chart`), for air-gapped installs and tests.
    Local(PathBuf),
}

impl Chart {
    /// The chart version this installs, when it can be known without helm: the repository
    /// version, or a chart directory's `Chart.yaml` `version:` (an archive says nothing).
    pub(crate) fn version(&self) -> Option<String> {
        match self {
            Chart::Repo { version, .. } => Some(version.clone()),
            Chart::Local(p) if p.is_dir() => {
                let text = std::fs::read_to_string(p.join("Chart.yaml")).ok()?;
                text.lines()
                    .find_map(|l| l.strip_prefix("version:"))
                    .map(|v| v.trim().trim_matches(['"', '\'']).to_owned())
            }
            Chart::Local(_) => None,
        }
    }
}

pub(crate) use cmesh_core::apply::Release;

/// The helm binary.
#[derive(Debug, Clone)]
pub(crate) struct Helm {
    /// Its path.
    pub bin: PathBuf,
}

/// A failed helm run.
#[derive(Debug, Clone, thiserror::Error)]
#[error("`helm {args}` failed{}: {stderr}", code.map(|c| format!(" (exit {c})")).unwrap_or_default())]
pub(crate) struct HelmError {
    /// The arguments (paths shortened).
    pub args: String,
    /// Exit code, if it exited.
    pub code: Option<i32>,
    /// What helm printed on stderr (or why it could not run).
    pub stderr: String,
}

/// Finds helm: `--helm`, then `$CMESH_HELM`, then `helm` on PATH.
///
/// # Errors
/// A message naming where it looked.
pub(crate) fn locate(flag: Option<&Path>) -> Result<Helm, String> {
    if let Some(p) = flag {
        return if p.is_file() {
            Ok(Helm {
                bin: p.to_path_buf(),
            })
        } else {
            Err(format!("--helm {} does not exist", p.display()))
        };
    }
    if let Some(p) = std::env::var_os("CMESH_HELM").filter(|v| !v.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(Helm { bin: p })
        } else {
            Err(format!("$CMESH_HELM={} does not exist", p.display()))
        };
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("helm"))
                .find(|p| p.is_file())
        })
        .map(|bin| Helm { bin })
        .ok_or_else(|| "helm is not on PATH".to_owned())
}

/// Kubeconfig and context flags for a cluster.
#[derive(Debug, Clone, Default)]
pub(crate) struct Target {
    /// `--kubeconfig`.
    pub kubeconfig: Option<PathBuf>,
    /// `--kube-context`.
    pub context: Option<String>,
}

impl Target {
    /// The cluster `conn` reaches, as helm's flags.
    pub(crate) fn of(conn: &crate::live::kube::Conn) -> Target {
        Target {
            kubeconfig: conn.kubeconfig.clone(),
            context: conn.context.clone(),
        }
    }
}

impl Helm {
    async fn run(
        &self,
        args: Vec<String>,
        target: &Target,
        timeout: Duration,
    ) -> Result<String, HelmError> {
        let mut all = args.clone();
        if let Some(k) = &target.kubeconfig {
            all.push("--kubeconfig".into());
            all.push(k.display().to_string());
        }
        if let Some(c) = &target.context {
            all.push("--kube-context".into());
            all.push(c.clone());
        }
        let shown = args.join(" ");
        tracing::debug!(helm = %self.bin.display(), args = %shown, context = ?target.context, "helm");
        let started = std::time::Instant::now();
        let mut cmd = Command::new(&self.bin);
        cmd.args(&all)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let out = match tokio::time::timeout(timeout, cmd.output()).await {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => {
                return Err(HelmError {
                    args: shown,
                    code: None,
                    stderr: format!("cannot run {}: {e}", self.bin.display()),
                });
            }
            Err(_) => {
                return Err(HelmError {
                    args: shown,
                    code: None,
                    stderr: format!("timed out after {}s", timeout.as_secs()),
                });
            }
        };
        tracing::debug!(args = %shown, code = ?out.status.code(), elapsed = ?started.elapsed(), "helm done");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(HelmError {
                args: shown,
                code: out.status.code(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            })
        }
    }

    /// `helm upgrade --install <release> <chart> --namespace <ns> -f <values>`.
    ///
    /// # Errors
    /// [`HelmError`] with helm's stderr.
    pub(crate) async fn upgrade_install(
        &self,
        release: &str,
        chart: &Chart,
        namespace: &str,
        values: &Path,
        target: &Target,
        timeout: Duration,
    ) -> Result<String, HelmError> {
        let mut args: Vec<String> = vec!["upgrade".into(), "--install".into(), release.into()];
        match chart {
            Chart::Repo { url, version } => {
                args.extend([
                    "cilium".into(),
                    "--repo".into(),
                    url.clone(),
                    "--version".into(),
                    version.clone(),
                ]);
            }
            Chart::Local(p) => args.push(p.display().to_string()),
        }
        args.extend([
            "--namespace".into(),
            namespace.into(),
            "--values".into(),
            values.display().to_string(),
        ]);
        self.run(args, target, timeout).await
    }

    /// `helm list --filter ^<release>$ -o json`: the release's chart and status, `None` if there
    /// is no release.
    ///
    /// # Errors
    /// [`HelmError`].
    pub(crate) async fn release(
        &self,
        release: &str,
        namespace: &str,
        target: &Target,
        timeout: Duration,
    ) -> Result<Option<Release>, HelmError> {
        let args = vec![
            "list".into(),
            "--namespace".into(),
            namespace.into(),
            "--all".into(),
            "--filter".into(),
            format!("^{release}$"),
            "--output".into(),
            "json".into(),
        ];
        let text = self.run(args, target, timeout).await?;
        let v: serde_json::Value = serde_json::from_str(text.trim()).map_err(|e| HelmError {
            args: format!("list {release}"),
            code: Some(0),
            stderr: format!("unreadable output: {e}"),
        })?;
        Ok(v.as_array().and_then(|a| a.first()).map(|r| Release {
            chart: r["chart"].as_str().unwrap_or_default().to_owned(),
            status: r["status"].as_str().unwrap_or_default().to_owned(),
        }))
    }

    /// `helm get values <release> -o json`: the user-supplied values, `None` if there is no
    /// release.
    ///
    /// # Errors
    /// [`HelmError`] for anything but a missing release.
    pub(crate) async fn get_values(
        &self,
        release: &str,
        namespace: &str,
        target: &Target,
        timeout: Duration,
    ) -> Result<Option<serde_json::Value>, HelmError> {
        let args = vec![
            "get".into(),
            "values".into(),
            release.into(),
            "--namespace".into(),
            namespace.into(),
            "--output".into(),
            "json".into(),
        ];
        match self.run(args, target, timeout).await {
            Ok(text) => {
                let v: serde_json::Value =
                    serde_json::from_str(text.trim()).map_err(|e| HelmError {
                        args: format!("get values {release}"),
                        code: Some(0),
                        stderr: format!("unreadable output: {e}"),
                    })?;
                Ok(Some(if v.is_null() {
                    serde_json::json!({})
                } else {
                    v
                }))
            }
            Err(e) if e.stderr.contains("release: not found") => Ok(None),
            Err(e) => Err(e),
        }
    }
}
