//! The Kubernetes layer's one error type: what failed, with kube's error kept as the source,
//! and the distinctions callers act on (a command missing from an
//! image, an exec that outlived its bound) as variants and methods instead of message text.

use std::time::Duration;

/// A failed call to a cluster.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KubeError {
    /// The kubeconfig could not be read, or names no usable context.
    #[error("{what}: {reason}")]
    Kubeconfig {
        /// `kubeconfig <path>`, `context `x``, ...
        what: String,
        /// Why.
        reason: String,
    },
    /// The kubeconfig's exec credential plugin failed (could not start, timed out, printed no
    /// credential).
    #[error("{0}")]
    ExecPlugin(String),
    /// A request failed: the API server's answer (status and message) or the transport's.
    #[error("{}{}", context_prefix(.context), describe(.source))]
    Api {
        /// What was being done (`create Deployment x`), empty for plain reads.
        context: String,
        /// kube's error.
        #[source]
        source: kube::Error,
    },
    /// A command run in a pod exited non-zero (or the runtime could not start it).
    #[error("`{command}` failed: {message}")]
    CommandFailed {
        /// The command line.
        command: String,
        /// Its stderr, else the runtime's message.
        message: String,
        /// Its exit code, when the runtime gave one.
        exit_code: Option<i32>,
    },
    /// A command run in a pod did not finish within its bound.
    #[error("`{command}` in {pod}/{container} did not finish within {}s", .bound.as_secs_f64())]
    ExecTimeout {
        /// The command line.
        command: String,
        /// Pod.
        pod: String,
        /// Container.
        container: String,
        /// The bound.
        bound: Duration,
    },
    /// An object that could not be converted to or from JSON.
    #[error("{what}: {reason}")]
    Object {
        /// `Deployment x`.
        what: String,
        /// Why.
        reason: String,
    },
}

fn context_prefix(context: &str) -> String {
    if context.is_empty() {
        String::new()
    } else {
        format!("{context}: ")
    }
}

/// An API error as `message (code)`; any other error with its chain of causes (kube's own
/// message often leaves out the part that says what went wrong, such as a refused connection).
fn describe(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({})", s.message, s.code),
        other => {
            let mut m = other.to_string();
            let mut src = std::error::Error::source(other);
            while let Some(s) = src {
                let t = s.to_string();
                if !m.contains(&t) {
                    m.push_str(": ");
                    m.push_str(&t);
                }
                src = s.source();
            }
            m
        }
    }
}

impl KubeError {
    /// The API server answered 404: the object, or its kind (a CRD not installed), is not there.
    pub(crate) fn is_not_found(&self) -> bool {
        matches!(self, KubeError::Api { source: kube::Error::Api(s), .. } if s.code == 404)
    }

    /// A request's error, with what was being done.
    pub(crate) fn api(context: impl Into<String>) -> impl FnOnce(kube::Error) -> KubeError {
        let context = context.into();
        move |source| KubeError::Api { context, source }
    }

    /// The command is not in the container's image: exit code 127 where the runtime reports
    /// it (the kubelet's ExitCode cause); otherwise the words runtimes and shells use for it
    /// (runc: "executable file not found in $PATH"; a shell's `exec`: "sh: 1: exec: x: not
    /// found"; a missing path: "No such file or directory"), since some exec servers (kwok's)
    /// report only the message. Used to fall back from `cilium-dbg` to Cilium 1.14's `cilium`.
    pub(crate) fn command_not_found(&self) -> bool {
        match self {
            KubeError::CommandFailed {
                exit_code, message, ..
            } => {
                let m = message.to_lowercase();
                *exit_code == Some(127)
                    || m.contains("executable file not found")
                    || m.contains(": not found")
                    || m.contains("no such file or directory")
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(exit_code: Option<i32>, message: &str) -> KubeError {
        KubeError::CommandFailed {
            command: "cilium-dbg status".into(),
            message: message.into(),
            exit_code,
        }
    }

    #[test]
    fn a_missing_command_is_told_from_a_failing_one() {
        assert!(failed(Some(127), "sh: cilium-dbg: not found").command_not_found());
        assert!(
            failed(
                None,
                "exec: \"cilium-dbg\": executable file not found in $PATH: unknown"
            )
            .command_not_found()
        );
        assert!(failed(None, "sh: 1: exec: cilium-dbg: not found").command_not_found());
        assert!(
            failed(
                None,
                "chroot: failed to run command 'cilium-dbg': No such file or directory"
            )
            .command_not_found()
        );
        assert!(!failed(Some(1), "Error: cannot reach the agent").command_not_found());
        assert!(!failed(Some(1), "node k8s02/node-1 not found").command_not_found());
        let timeout = KubeError::ExecTimeout {
            command: "cilium-dbg status".into(),
            pod: "cilium-x".into(),
            container: "cilium-agent".into(),
            bound: Duration::from_millis(1500),
        };
        assert!(!timeout.command_not_found());
        assert_eq!(
            timeout.to_string(),
            "`cilium-dbg status` in cilium-x/cilium-agent did not finish within 1.5s"
        );
    }

    #[test]
    fn api_errors_keep_the_servers_words_and_code() {
        let mut status =
            kube::core::Status::failure("namespaces \"x\" already exists", "AlreadyExists");
        status.code = 409;
        let e = KubeError::api("create Namespace x")(kube::Error::Api(status.boxed()));
        assert_eq!(
            e.to_string(),
            "create Namespace x: namespaces \"x\" already exists (409)"
        );
        assert!(std::error::Error::source(&e).is_some());
    }
}
