//! Building a Kubernetes client that no server can hang or exhaust: each request (headers and
//! whole body) must complete within the request timeout, however slowly the server trickles
//! bytes; a response body larger than [`MAX_RESPONSE_BYTES`] is cut off with an error rather
//! than held in memory; and a kubeconfig `exec` credential plugin runs under the same
//! timeout, killed when it overruns (kube-rs would wait for it without limit, blocking).

use super::KubeError;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use kube::client::DynBody;
use kube::config::{AuthInfo, ExecConfig, Kubeconfig};
use tokio::io::AsyncReadExt;

/// Largest response body read from an API server (`/version` is a few hundred bytes; the
/// largest list cmesh makes, the agent pods of a 5,000-node cluster, about 40 MiB).
pub(crate) const MAX_RESPONSE_BYTES: u64 = 64 * 1024 * 1024;

/// Largest credential an exec plugin may print.
const MAX_EXEC_CREDENTIAL: u64 = 1024 * 1024;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What kube's service stack returns for a request.
type ResponseFuture = Pin<
    Box<dyn std::future::Future<Output = Result<http::Response<Box<DynBody>>, BoxError>> + Send>,
>;

/// Builds the client for `config`: every request bounded by `timeout` from its start to the
/// last byte of its body, and bodies by [`MAX_RESPONSE_BYTES`].
///
/// # Errors
/// kube's own client errors (TLS material in the kubeconfig, proxy settings).
pub(crate) fn client(config: kube::Config, timeout: Duration) -> Result<kube::Client, kube::Error> {
    let layer = tower::ServiceBuilder::new().map_future(move |fut: ResponseFuture| {
        let deadline = tokio::time::Instant::now() + timeout;
        let started = std::time::Instant::now();
        async move {
            let res = tokio::time::timeout_at(deadline, fut).await;
            // Method and path are logged by the client (-vv); here what came back and when.
            match &res {
                Ok(Ok(r)) => tracing::debug!(status = r.status().as_u16(), elapsed = ?started.elapsed(), "API response"),
                Ok(Err(e)) => tracing::debug!(error = %e, elapsed = ?started.elapsed(), "API request failed"),
                Err(_) => tracing::debug!(?timeout, "API request timed out"),
            }
            let res = match res {
                Ok(r) => r?,
                Err(_) => return Err(incomplete(timeout)),
            };
            Ok(res.map(|b| {
                Box::new(Guarded {
                    inner: b,
                    deadline: Box::pin(tokio::time::sleep_until(deadline)),
                    timeout,
                    read: 0,
                }) as Box<DynBody>
            }))
        }
    });
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&layer)
        .build())
}

fn incomplete(timeout: Duration) -> BoxError {
    format!(
        "the API server did not send a complete response within {}s (--request-timeout)",
        timeout.as_secs_f64()
    )
    .into()
}

/// A response body that fails once the request's deadline passes or too much arrives.
struct Guarded {
    inner: Box<DynBody>,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
    read: u64,
}

impl Body for Guarded {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(incomplete(this.timeout))));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.read += data.len() as u64;
                    if this.read > MAX_RESPONSE_BYTES {
                        return Poll::Ready(Some(Err(format!(
                            "the API server's response is larger than {} MiB; cmesh stops reading",
                            MAX_RESPONSE_BYTES >> 20
                        )
                        .into())));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Runs the `exec` credential plugin of the kubeconfig user that `context` (or the current
/// context) selects, bounded by `timeout`, and puts the credential it prints in place of the
/// plugin, so that kube-rs never runs it itself (it would, blocking and without a bound).
///
/// # Errors
/// The plugin could not start, failed, overran `timeout`, or printed no usable credential.
pub(crate) async fn resolve_exec_plugin(
    kubeconfig: &mut Kubeconfig,
    context: Option<&str>,
    timeout: Duration,
) -> Result<(), KubeError> {
    let Some(ctx_name) = context
        .map(str::to_owned)
        .or_else(|| kubeconfig.current_context.clone())
    else {
        return Ok(());
    };
    let Some(ctx) = kubeconfig
        .contexts
        .iter()
        .find(|c| c.name == ctx_name)
        .and_then(|c| c.context.clone())
    else {
        return Ok(());
    };
    let cluster = kubeconfig
        .clusters
        .iter()
        .find(|c| c.name == ctx.cluster)
        .and_then(|c| c.cluster.clone());
    let Some(user) = ctx.user else { return Ok(()) };
    let Some(named) = kubeconfig.auth_infos.iter_mut().find(|a| a.name == user) else {
        return Ok(());
    };
    let Some(info) = named.auth_info.as_mut() else {
        return Ok(());
    };
    let Some(exec) = info.exec.clone() else {
        return Ok(());
    };
    let credential = run_plugin(&exec, cluster.as_ref(), timeout).await?;
    apply_credential(info, credential)
}

/// What an exec plugin printed, as `client.authentication.k8s.io` defines it.
#[derive(serde::Deserialize)]
struct ExecCredential {
    status: Option<ExecStatus>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExecStatus {
    token: Option<String>,
    client_certificate_data: Option<String>,
    client_key_data: Option<String>,
}

async fn run_plugin(
    exec: &ExecConfig,
    cluster: Option<&kube::config::Cluster>,
    timeout: Duration,
) -> Result<ExecStatus, KubeError> {
    let Some(command) = exec.command.as_deref() else {
        return Err(KubeError::ExecPlugin(
            "the kubeconfig's exec plugin has no command".into(),
        ));
    };
    let mut cmd = tokio::process::Command::new(command);
    cmd.args(exec.args.iter().flatten());
    for env in exec.env.iter().flatten() {
        if let (Some(name), Some(value)) = (env.get("name"), env.get("value")) {
            cmd.env(name, value);
        }
    }
    for name in exec.drop_env.iter().flatten() {
        cmd.env_remove(name);
    }
    let mut spec = serde_json::json!({ "interactive": false });
    if exec.provide_cluster_info
        && let Some(c) = cluster
    {
        spec["cluster"] = serde_json::json!({
            "server": c.server,
            "certificate-authority-data": c.certificate_authority_data,
            "insecure-skip-tls-verify": c.insecure_skip_tls_verify,
            "tls-server-name": c.tls_server_name,
        });
    }
    let info = serde_json::json!({
        "apiVersion": exec.api_version.as_deref().unwrap_or("client.authentication.k8s.io/v1"),
        "kind": "ExecCredential",
        "spec": spec,
    });
    cmd.env("KUBERNETES_EXEC_INFO", info.to_string());
    // cmesh talks to many clusters at once: a plugin gets no terminal to prompt on.
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let hint = exec
        .install_hint
        .as_deref()
        .map(|h| format!(" ({})", h.trim()))
        .unwrap_or_default();
    let mut child = cmd.spawn().map_err(|e| {
        KubeError::ExecPlugin(format!(
            "the kubeconfig's exec plugin `{command}` cannot start: {e}{hint}"
        ))
    })?;
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let run = async {
        let mut out = Vec::new();
        let mut err = Vec::new();
        // Both pipes at once: a plugin filling one while the other is read would stall.
        let read_out = async {
            if let Some(o) = stdout.as_mut() {
                let _ = o.take(MAX_EXEC_CREDENTIAL).read_to_end(&mut out).await;
            }
        };
        let read_err = async {
            if let Some(e) = stderr.as_mut() {
                let _ = e.take(64 * 1024).read_to_end(&mut err).await;
            }
        };
        tokio::join!(read_out, read_err);
        (child.wait().await, out, err)
    };
    let (status, out, err) = match tokio::time::timeout(timeout, run).await {
        Ok(r) => r,
        Err(_) => {
            // `kill_on_drop` ends the plugin when `child` goes with the future.
            return Err(KubeError::ExecPlugin(format!(
                "the kubeconfig's exec plugin `{command}` did not answer within {}s (--request-timeout)",
                timeout.as_secs_f64()
            )));
        }
    };
    let status =
        status.map_err(|e| KubeError::ExecPlugin(format!("exec plugin `{command}`: {e}")))?;
    if !status.success() {
        let err = String::from_utf8_lossy(&err);
        return Err(KubeError::ExecPlugin(format!(
            "the kubeconfig's exec plugin `{command}` failed ({status}): {}",
            err.trim().lines().last().unwrap_or_default()
        )));
    }
    let cred: ExecCredential = serde_json::from_slice(&out).map_err(|e| {
        KubeError::ExecPlugin(format!(
            "the kubeconfig's exec plugin `{command}` printed no ExecCredential: {e}"
        ))
    })?;
    cred.status.ok_or_else(|| {
        KubeError::ExecPlugin(format!(
            "the exec plugin `{command}`'s ExecCredential has no status"
        ))
    })
}

fn apply_credential(info: &mut AuthInfo, cred: ExecStatus) -> Result<(), KubeError> {
    info.exec = None;
    if let Some(token) = cred.token {
        info.token = Some(secrecy::SecretString::from(token));
        return Ok(());
    }
    match (cred.client_certificate_data, cred.client_key_data) {
        (Some(cert), Some(key)) => {
            use base64::Engine;
            // The kubeconfig fields hold base64 of the PEM text the plugin printed.
            let b64 = base64::engine::general_purpose::STANDARD;
            info.client_certificate_data = Some(b64.encode(cert));
            info.client_key_data = Some(secrecy::SecretString::from(b64.encode(key)));
            Ok(())
        }
        _ => Err(KubeError::ExecPlugin(
            "the exec plugin's credential has neither a token nor a client certificate and key"
                .into(),
        )),
    }
}
