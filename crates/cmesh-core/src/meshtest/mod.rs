//! `cmesh test`: the reference article's part 2 as a suite. This module owns what is pure
//! about it: the objects each cluster gets ([`manifests`]), the curl runs and how their
//! output is read ([`curl`]), how each result cell is judged ([`judge`]) and the report. The
//! edge creates the objects, runs the commands, scales, and cleans up.

pub mod curl;
pub mod judge;
pub mod manifests;

use serde::Serialize;

use crate::version::CiliumVersion;

/// Label every object of a run carries, with [`MANAGED_BY`].
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// This tool.
pub const MANAGED_BY: &str = "cmesh";
/// Label with the run ID: leftovers of any run are found by it (`cmesh test --cleanup`).
pub const LABEL_RUN: &str = "cmesh.io/test-run";
/// Prefix of the namespaces a run creates.
pub const NAMESPACE_PREFIX: &str = "cmesh-test-";
/// The HTTP server Deployment, and the global Service in front of it.
pub const SERVER: &str = "echo";
/// The global Service with `affinity: local`.
pub const SERVER_LOCAL: &str = "echo-local";
/// The global Service with `affinity: remote`.
pub const SERVER_REMOTE: &str = "echo-remote";
/// The client pod.
pub const CLIENT: &str = "client";
/// The server's port.
pub const PORT: u16 = 8080;
/// `app.kubernetes.io/name` of the server pods.
pub const SERVER_APP: &str = "cmesh-echo";
/// `app.kubernetes.io/name` of the client pod.
pub const CLIENT_APP: &str = "cmesh-client";
/// Default server image (nginx: the suite configures it to answer with its cluster's name).
pub const DEFAULT_SERVER_IMAGE: &str = "docker.io/library/nginx:1.27-alpine";
/// Default client image (needs `sh` and `curl`).
pub const DEFAULT_CLIENT_IMAGE: &str = "docker.io/curlimages/curl:8.11.1";

/// The label selector of everything any run created.
pub fn leftovers_selector() -> String {
    format!("{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_RUN}")
}

/// A run ID: six characters of `[a-z0-9]` from `entropy`.
pub fn run_id(mut entropy: u64) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..6)
        .map(|_| {
            let c = ALPHABET[(entropy % 36) as usize] as char;
            entropy /= 36;
            c
        })
        .collect()
}

/// The four parts of the suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Pod IP to pod IP across clusters.
    Pod,
    /// The global Service (and its affinity variants).
    Service,
    /// Local replicas at 0, then back.
    Failover,
    /// ingress-nginx to the global Service, with and without `service-upstream`.
    Ingress,
}

impl Kind {
    /// All kinds, in the order they run.
    pub const ALL: [Kind; 4] = [Kind::Pod, Kind::Service, Kind::Failover, Kind::Ingress];

    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Pod => "pod",
            Kind::Service => "service",
            Kind::Failover => "failover",
            Kind::Ingress => "ingress",
        }
    }
}

/// What one run uses.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The run ID.
    pub run_id: String,
    /// `cmesh-test-<run_id>`.
    pub namespace: String,
    /// Server image (nginx-compatible: it reads `/etc/nginx/conf.d/*.conf`).
    pub server_image: String,
    /// Client image (`sh` and `curl`).
    pub client_image: String,
    /// The mesh's Cilium version (1.20 needs global namespaces).
    pub version: CiliumVersion,
    /// Bound on each HTTP request, in seconds.
    pub http_timeout_secs: u32,
    /// Requests per batch to a Service.
    pub requests: u32,
}

impl Settings {
    /// Settings for run `run_id`.
    pub fn new(run_id: &str, version: CiliumVersion) -> Settings {
        Settings {
            run_id: run_id.to_owned(),
            namespace: format!("{NAMESPACE_PREFIX}{run_id}"),
            server_image: DEFAULT_SERVER_IMAGE.into(),
            client_image: DEFAULT_CLIENT_IMAGE.into(),
            version,
            http_timeout_secs: 5,
            requests: 16,
        }
    }

    /// The in-cluster URL of Service `name`.
    pub fn service_url(&self, name: &str) -> String {
        format!("http://{name}.{}.svc:{PORT}/", self.namespace)
    }

    /// The host name the test Ingress answers for.
    pub fn ingress_host(&self) -> String {
        format!("{}.cmesh.invalid", self.namespace)
    }
}

/// How a namespace's cleanup went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum CleanupOutcome {
    /// Deleted and gone.
    Deleted,
    /// Deletion accepted; still terminating when cmesh stopped waiting.
    Terminating,
    /// Left in place (`--keep`).
    Kept,
    /// Could not be deleted.
    Failed {
        /// Why.
        reason: String,
    },
}

/// One namespace's cleanup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cleanup {
    /// Cluster.
    pub cluster: String,
    /// Namespace.
    pub namespace: String,
    /// What happened.
    #[serde(flatten)]
    pub outcome: CleanupOutcome,
}

impl Cleanup {
    /// True unless the namespace could not be deleted.
    pub fn ok(&self) -> bool {
        !matches!(self.outcome, CleanupOutcome::Failed { .. })
    }
}

/// The article's lesson, as observed in one cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lesson {
    /// Cluster.
    pub cluster: String,
    /// What was observed.
    pub observed: String,
    /// What to do about it.
    pub fix: String,
}

/// Everything a run found.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Run ID.
    pub run_id: String,
    /// Namespace used in every cluster.
    pub namespace: String,
    /// Clusters, in mesh order.
    pub clusters: Vec<String>,
    /// The kinds that ran.
    pub kinds: Vec<Kind>,
    /// Result cells.
    pub cells: Vec<judge::Cell>,
    /// The article's lesson where the ingress test showed it.
    pub lessons: Vec<Lesson>,
    /// Problems that stopped parts of the run (setup failures, timeouts).
    pub errors: Vec<String>,
    /// Cleanup per cluster.
    pub cleanup: Vec<Cleanup>,
    /// Stopped by Ctrl-C or SIGTERM.
    pub interrupted: bool,
    /// Wall time in seconds.
    pub seconds: f64,
}

impl Report {
    /// True when every cell passed or was skipped, nothing stopped the run, and cleanup worked.
    pub fn ok(&self) -> bool {
        !self.interrupted
            && self.errors.is_empty()
            && self.cells.iter().all(|c| c.outcome != judge::Outcome::Fail)
            && self.cleanup.iter().all(Cleanup::ok)
    }

    /// (passed, failed, skipped) cell counts.
    pub fn counts(&self) -> (usize, usize, usize) {
        let n = |o| self.cells.iter().filter(|c| c.outcome == o).count();
        (
            n(judge::Outcome::Pass),
            n(judge::Outcome::Fail),
            n(judge::Outcome::Skip),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_dns_labels_and_differ() {
        let a = run_id(0);
        let b = run_id(u64::MAX);
        assert_eq!(a, "aaaaaa");
        assert_ne!(a, b);
        assert!(
            b.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
        let s = Settings::new(&b, "1.16.19".parse().unwrap());
        assert!(s.namespace.len() <= 63);
        assert_eq!(
            s.service_url(SERVER),
            format!("http://echo.cmesh-test-{b}.svc:8080/")
        );
    }
}
