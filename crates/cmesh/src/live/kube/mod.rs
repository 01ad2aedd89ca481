//! Talking to one cluster's Kubernetes API: connecting as kubectl would (the cluster's
//! kubeconfig and context from mesh.yaml, else `$KUBECONFIG`, else `~/.kube/config`), and the
//! reads and writes `apply` and `status` need. Every call is bounded by the connection's
//! timeouts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cmesh_core::spec::{CILIUM_NAMESPACE, Cluster};
use cmesh_core::status::{Rollout, ServiceObs};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use kube::api::{
    Api, ApiResource, AttachParams, DeleteParams, DynamicObject, GroupVersionKind, ListParams,
    Patch, PatchParams, PostParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::io::AsyncReadExt;

mod connect;
mod error;

pub(crate) use error::KubeError;

/// Most output kept of one command run in a pod (an agent's `node list` in a 5,000-node mesh
/// is about 1 MiB).
const MAX_EXEC_OUTPUT: u64 = 16 * 1024 * 1024;

/// A connection to one cluster.
#[derive(Clone)]
pub(crate) struct Conn {
    /// The cluster's name in mesh.yaml.
    pub name: String,
    /// The client.
    pub client: kube::Client,
    /// The kubeconfig file used, for helm (`None`: helm's own default, as kubectl).
    pub kubeconfig: Option<PathBuf>,
    /// The context, for helm.
    pub context: Option<String>,
    /// The bound on one request (and on one exec in `exec`).
    pub timeout: Duration,
    /// Where the cluster was dialled, as errors name it: the server URL, kubeconfig and context.
    pub(crate) target: String,
}

/// Connects to `cluster`. The error says what failed (file, context, TLS, ...).
///
/// # Errors
/// A readable reason.
pub(crate) async fn connect(
    cluster: &Cluster,
    base_dir: &Path,
    timeout: Duration,
) -> Result<Conn, KubeError> {
    connect_to(
        &cluster.name,
        cluster.kubeconfig.as_deref(),
        cluster.context.as_deref(),
        base_dir,
        timeout,
    )
    .await
}

/// Connects to the cluster `name` reached through `kubeconfig` (relative to `base_dir`; the
/// default kubeconfig when `None`) and `context`: a cluster of mesh.yaml, or one that left it
/// (the membership record, `disconnect --kubeconfig`).
///
/// # Errors
/// A readable reason.
pub(crate) async fn connect_to(
    name: &str,
    kubeconfig: Option<&str>,
    context: Option<&str>,
    base_dir: &Path,
    timeout: Duration,
) -> Result<Conn, KubeError> {
    // Relative to mesh.yaml's directory, as mesh.yaml writes it.
    let path = kubeconfig.map(|k| base_dir.join(k));
    let context = context.map(str::to_owned);
    let mut kubeconfig = match &path {
        Some(p) => {
            // Checked first: a kubeconfig path could name a FIFO (kube would wait on it for
            // ever) or a huge file. kube then reads it, resolving its relative paths.
            crate::fs::bounded::read(p, 16 * 1024 * 1024).map_err(|e| KubeError::Kubeconfig {
                what: format!("kubeconfig {}", p.display()),
                reason: e.to_string(),
            })?;
            Kubeconfig::read_from(p).map_err(|e| KubeError::Kubeconfig {
                what: format!("kubeconfig {}", p.display()),
                reason: e.to_string(),
            })?
        }
        None => Kubeconfig::read().map_err(|e| KubeError::Kubeconfig {
            what: "kubeconfig ($KUBECONFIG or ~/.kube/config)".into(),
            reason: e.to_string(),
        })?,
    };
    if let Some(want) = &context
        && !kubeconfig.contexts.iter().any(|c| &c.name == want)
    {
        let mut have: Vec<&str> = kubeconfig
            .contexts
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        have.sort_unstable();
        return Err(KubeError::Kubeconfig {
            what: format!(
                "context `{want}` in {}",
                path.as_ref()
                    .map_or("the default kubeconfig".into(), |p| p.display().to_string())
            ),
            reason: if have.is_empty() {
                "no such context: the kubeconfig has none".into()
            } else {
                format!("no such context; it has: {}", have.join(", "))
            },
        });
    }
    connect::resolve_exec_plugin(&mut kubeconfig, context.as_deref(), timeout).await?;
    let opts = KubeConfigOptions {
        context: context.clone(),
        ..KubeConfigOptions::default()
    };
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &opts)
        .await
        .map_err(|e| KubeError::Kubeconfig {
            what: match &context {
                Some(c) => format!("context `{c}`"),
                None => "kubeconfig".into(),
            },
            reason: e.to_string(),
        })?;
    config.connect_timeout = Some(timeout);
    config.read_timeout = Some(timeout);
    config.write_timeout = Some(timeout);
    let target = format!(
        "{} (kubeconfig {}, context {})",
        config.cluster_url,
        path.as_ref()
            .map_or("$KUBECONFIG or ~/.kube/config".into(), |p| p
                .display()
                .to_string()),
        context.as_deref().unwrap_or("current")
    );
    tracing::debug!(cluster = %name, %target, timeout = ?timeout, "connecting");
    let client = connect::client(config, timeout).map_err(KubeError::api("client"))?;
    Ok(Conn {
        target,
        name: name.to_owned(),
        client,
        kubeconfig: path,
        context: context.clone(),
        timeout,
    })
}

/// Connects to `clusters` of `spec` (all when empty) concurrently, keeping mesh.yaml's order.
pub(crate) async fn connect_all(
    spec: &cmesh_core::spec::MeshSpec,
    base_dir: &Path,
    clusters: &[String],
    timeout: Duration,
) -> Vec<(String, Result<Conn, KubeError>)> {
    let mut set = tokio::task::JoinSet::new();
    for (i, c) in spec
        .clusters
        .iter()
        .enumerate()
        .filter(|(_, c)| clusters.is_empty() || clusters.contains(&c.name))
    {
        let c = c.clone();
        let base = base_dir.to_path_buf();
        set.spawn(async move { (i, c.name.clone(), connect(&c, &base, timeout).await) });
    }
    let mut out = Vec::new();
    while let Some(Ok(r)) = set.join_next().await {
        out.push(r);
    }
    out.sort_by_key(|(i, _, _)| *i);
    out.into_iter().map(|(_, n, c)| (n, c)).collect()
}

impl Conn {
    /// The API server's version.
    ///
    /// # Errors
    /// Unreachable.
    pub(crate) async fn version(&self) -> Result<String, KubeError> {
        self.client
            .apiserver_version()
            .await
            .map(|v| v.git_version)
            .map_err(KubeError::api(self.target.clone()))
    }

    /// DaemonSet rollout state.
    ///
    /// # Errors
    /// API errors.
    pub(crate) async fn daemonset(&self, name: &str) -> Result<Option<Rollout>, KubeError> {
        let api: Api<DaemonSet> = Api::namespaced(self.client.clone(), CILIUM_NAMESPACE);
        Ok(api
            .get_opt(name)
            .await
            .map_err(KubeError::api(""))?
            .map(|d| {
                let s = d.status.unwrap_or_default();
                Rollout {
                    desired: i64::from(s.desired_number_scheduled),
                    ready: i64::from(s.number_ready),
                    updated: i64::from(s.updated_number_scheduled.unwrap_or(0)),
                    total: i64::from(s.current_number_scheduled),
                    generation: d.metadata.generation.unwrap_or(0),
                    observed_generation: s.observed_generation.unwrap_or(0),
                }
            }))
    }

    /// The Argo CD Application tracking DaemonSet `name`: the part before the first `:` of its
    /// `argocd.argoproj.io/tracking-id` annotation (`<app>:<group>/<kind>:<ns>/<name>`, with
    /// `<namespace>_<app>` for Applications outside Argo CD's namespace). `None` when the
    /// DaemonSet or the annotation is absent.
    ///
    /// # Errors
    /// API errors.
    pub(crate) async fn argocd_application(&self, name: &str) -> Result<Option<String>, KubeError> {
        let api: Api<DaemonSet> = Api::namespaced(self.client.clone(), CILIUM_NAMESPACE);
        Ok(api
            .get_metadata_opt(name)
            .await
            .map_err(KubeError::api(""))?
            .and_then(|d| d.metadata.annotations)
            .and_then(|a| a.get("argocd.argoproj.io/tracking-id").cloned())
            .and_then(|id| id.split(':').next().map(str::to_owned))
            .filter(|app| !app.is_empty()))
    }

    /// Deployment rollout state.
    ///
    /// # Errors
    /// API errors.
    pub(crate) async fn deployment(&self, name: &str) -> Result<Option<Rollout>, KubeError> {
        self.deployment_in(CILIUM_NAMESPACE, name).await
    }

    /// Deployment rollout state in namespace `ns`.
    ///
    /// # Errors
    /// API errors.
    pub(crate) async fn deployment_in(
        &self,
        ns: &str,
        name: &str,
    ) -> Result<Option<Rollout>, KubeError> {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), ns);
        Ok(api
            .get_opt(name)
            .await
            .map_err(KubeError::api(""))?
            .map(|d| {
                let s = d.status.unwrap_or_default();
                Rollout {
                    desired: i64::from(d.spec.replicas.unwrap_or(1)),
                    ready: i64::from(s.ready_replicas.unwrap_or(0)),
                    updated: i64::from(s.updated_replicas.unwrap_or(0)),
                    total: i64::from(s.replicas.unwrap_or(0)),
                    generation: d.metadata.generation.unwrap_or(0),
                    observed_generation: s.observed_generation.unwrap_or(0),
                }
            }))
    }

    /// The clustermesh-apiserver Service.
    ///
    /// # Errors
    /// API errors.
    pub(crate) async fn apiserver_service(&self) -> Result<Option<ServiceObs>, KubeError> {
        let api: Api<Service> = Api::namespaced(self.client.clone(), CILIUM_NAMESPACE);
        Ok(api
            .get_opt("clustermesh-apiserver")
            .await
            .map_err(KubeError::api(""))?
            .map(|s| {
                let spec = s.spec.unwrap_or_default();
                let node_port = spec
                    .ports
                    .unwrap_or_default()
                    .iter()
                    .find(|p| p.port == 2379)
                    .and_then(|p| p.node_port)
                    .map(i64::from);
                ServiceObs {
                    service_type: spec.type_.unwrap_or_else(|| "ClusterIP".into()),
                    node_port,
                }
            }))
    }

    /// A Secret's data, decoded to text.
    ///
    /// # Errors
    /// API errors.
    pub(crate) async fn secret_data(
        &self,
        name: &str,
    ) -> Result<Option<BTreeMap<String, String>>, KubeError> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), CILIUM_NAMESPACE);
        Ok(api
            .get_opt(name)
            .await
            .map_err(KubeError::api(""))?
            .map(|s| {
                s.data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                    .collect()
            }))
    }

    /// A ConfigMap's data in the Cilium namespace, `None` when it does not exist.
    ///
    /// # Errors
    /// API errors.
    pub(crate) async fn configmap_data(
        &self,
        name: &str,
    ) -> Result<Option<BTreeMap<String, String>>, KubeError> {
        let api: Api<k8s_openapi::api::core::v1::ConfigMap> =
            Api::namespaced(self.client.clone(), CILIUM_NAMESPACE);
        Ok(api
            .get_opt(name)
            .await
            .map_err(KubeError::api(""))?
            .map(|c| c.data.unwrap_or_default().into_iter().collect()))
    }

    /// Creates or updates a Secret by server-side apply (field manager `cmesh`).
    ///
    /// # Errors
    /// API errors.
    pub(crate) async fn apply_secret(&self, secret: &serde_json::Value) -> Result<(), KubeError> {
        let name = secret
            .pointer("/metadata/name")
            .and_then(|n| n.as_str())
            .unwrap_or_default()
            .to_owned();
        let api: Api<Secret> = Api::namespaced(self.client.clone(), CILIUM_NAMESPACE);
        api.patch(
            &name,
            &PatchParams::apply("cmesh").force(),
            &Patch::Apply(secret),
        )
        .await
        .map(|_| ())
        .map_err(KubeError::api(format!("Secret {name}")))
    }

    /// Deletes a Secret in the Cilium namespace. `Ok(false)` when it did not exist.
    ///
    /// # Errors
    /// API errors.
    pub(crate) async fn delete_secret(&self, name: &str) -> Result<bool, KubeError> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), CILIUM_NAMESPACE);
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
            Err(e) => Err(KubeError::api(format!("Secret {name}"))(e)),
        }
    }

    /// The pods of DaemonSet `name` (its selector's), by name and UID, and how many of them
    /// may be down at once (its `maxUnavailable`, [`cmesh_core::apply::restart_batch`]).
    ///
    /// # Errors
    /// API errors, a DaemonSet that does not exist or selects nothing.
    pub(crate) async fn daemonset_pods(
        &self,
        name: &str,
    ) -> Result<(Vec<(String, String)>, usize), KubeError> {
        use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
        let missing = |why: &str| KubeError::Object {
            what: format!("DaemonSet {name}"),
            reason: why.into(),
        };
        let api: Api<DaemonSet> = Api::namespaced(self.client.clone(), CILIUM_NAMESPACE);
        let d = api
            .get_opt(name)
            .await
            .map_err(KubeError::api(""))?
            .ok_or_else(|| missing("not found"))?;
        let desired = d.status.as_ref().map_or(0, |s| s.desired_number_scheduled);
        let max = d
            .spec
            .update_strategy
            .as_ref()
            .and_then(|u| u.rolling_update.as_ref())
            .and_then(|r| r.max_unavailable.as_ref())
            .map(|m| match m {
                IntOrString::Int(n) => n.to_string(),
                IntOrString::String(s) => s.clone(),
            });
        let batch = cmesh_core::apply::restart_batch(max.as_deref(), i64::from(desired));
        let labels = d.spec.selector.match_labels.unwrap_or_default();
        if labels.is_empty() {
            return Err(missing("has no matchLabels selector"));
        }
        let selector: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), CILIUM_NAMESPACE);
        let pods = pods
            .list(&ListParams::default().labels(&selector.join(",")))
            .await
            .map_err(KubeError::api(""))?
            .items
            .into_iter()
            .filter_map(|p| Some((p.metadata.name?, p.metadata.uid?)))
            .collect();
        Ok((pods, batch))
    }

    /// Restarts Deployment `name` as `kubectl rollout restart` does (its pod template
    /// annotated): the Deployment's surge starts the new pod before the old one stops, which
    /// clustermesh-apiserver needs. The price: the charts render that template's annotations
    /// empty, so the next `helm upgrade` removes the annotation and rolls it once more.
    ///
    /// # Errors
    /// API errors.
    pub(crate) async fn rollout_restart_deployment(
        &self,
        name: &str,
        stamp: &str,
    ) -> Result<(), KubeError> {
        let patch = serde_json::json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": stamp}}}}});
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), CILIUM_NAMESPACE);
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
            .map_err(KubeError::api(""))
    }

    /// Deletes pod `name` if it is still the one with `uid` (a replacement of the same name,
    /// as a StatefulSet would make, is left alone). `Ok` when it is already gone.
    ///
    /// # Errors
    /// API errors.
    pub(crate) async fn delete_pod(&self, name: &str, uid: &str) -> Result<(), KubeError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), CILIUM_NAMESPACE);
        let dp = DeleteParams {
            preconditions: Some(kube::api::Preconditions {
                uid: Some(uid.to_owned()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(name, &dp).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
            Err(e) => Err(KubeError::Api {
                context: format!("delete pod {name}"),
                source: e,
            }),
        }
    }

    /// Agent pods (`k8s-app=cilium`) with their Ready condition.
    ///
    /// # Errors
    /// API errors.
    pub(crate) async fn agent_pods(&self) -> Result<Vec<(String, bool)>, KubeError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), CILIUM_NAMESPACE);
        let pods = api
            .list(&ListParams::default().labels("k8s-app=cilium"))
            .await
            .map_err(KubeError::api(""))?;
        Ok(pods
            .items
            .into_iter()
            .map(|p| {
                let ready = p
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                (p.metadata.name.unwrap_or_default(), ready)
            })
            .collect())
    }

    /// Runs a command in a pod's container and returns stdout, or the error with stderr.
    ///
    /// # Errors
    /// Exec failures and non-zero exits.
    pub(crate) async fn exec(
        &self,
        pod: &str,
        container: &str,
        command: &[&str],
    ) -> Result<String, KubeError> {
        self.exec_within(pod, container, command, self.timeout)
            .await
    }

    /// [`Conn::exec`] bounded by `bound` instead of the request timeout (for commands that
    /// take their own time, such as a troubleshoot that dials every peer).
    ///
    /// # Errors
    /// Exec failures, non-zero exits and the bound.
    pub(crate) async fn exec_within(
        &self,
        pod: &str,
        container: &str,
        command: &[&str],
        bound: Duration,
    ) -> Result<String, KubeError> {
        // An exec stream can stay open without traffic (seen when the command exits on a
        // kubelet that never sends the status frame): bound the whole call.
        tracing::debug!(cluster = %self.name, pod, container, command = %command.join(" "), "exec");
        let started = std::time::Instant::now();
        let result = match tokio::time::timeout(
            bound,
            self.exec_in(CILIUM_NAMESPACE, pod, container, command),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(KubeError::ExecTimeout {
                command: command.join(" "),
                pod: pod.to_owned(),
                container: container.to_owned(),
                bound,
            }),
        };
        tracing::debug!(
            cluster = %self.name,
            pod,
            ok = result.is_ok(),
            elapsed = ?started.elapsed(),
            "exec done"
        );
        result
    }

    /// [`Conn::exec`] in namespace `ns`.
    ///
    /// # Errors
    /// Exec failures and non-zero exits.
    pub(crate) async fn exec_in(
        &self,
        ns: &str,
        pod: &str,
        container: &str,
        command: &[&str],
    ) -> Result<String, KubeError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let ap = AttachParams::default()
            .container(container)
            .stdin(false)
            .stdout(true)
            .stderr(true);
        let mut proc = api
            .exec(pod, command.to_vec(), &ap)
            .await
            .map_err(KubeError::api(""))?;
        let mut stdout = String::new();
        let mut stderr = String::new();
        // Bounded, and both streams at once (a command filling stderr while stdout is read
        // would otherwise stall until the bound).
        let mut out_bytes = Vec::new();
        let mut err_bytes = Vec::new();
        let (o, e) = (proc.stdout(), proc.stderr());
        tokio::join!(
            async {
                if let Some(o) = o {
                    let _ = o.take(MAX_EXEC_OUTPUT).read_to_end(&mut out_bytes).await;
                }
            },
            async {
                if let Some(e) = e {
                    let _ = e.take(64 * 1024).read_to_end(&mut err_bytes).await;
                }
            }
        );
        stdout.push_str(&String::from_utf8_lossy(&out_bytes));
        stderr.push_str(&String::from_utf8_lossy(&err_bytes));
        let status = match proc.take_status() {
            Some(f) => f.await,
            None => None,
        };
        let _ = proc.join().await;
        match status {
            Some(s) if s.status.as_deref() == Some("Failure") => Err(KubeError::CommandFailed {
                command: command.join(" "),
                // The exit code, as the kubelet reports it (reason NonZeroExitCode, cause
                // ExitCode).
                exit_code: s
                    .details
                    .as_ref()
                    .and_then(|d| d.causes.as_ref())
                    .and_then(|c| c.iter().find(|c| c.reason.as_deref() == Some("ExitCode")))
                    .and_then(|c| c.message.as_deref()?.parse().ok()),
                message: if stderr.trim().is_empty() {
                    s.message.unwrap_or_default()
                } else {
                    stderr.trim().to_owned()
                },
            }),
            _ => Ok(stdout),
        }
    }
}

/// A pod as `test` needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PodObs {
    /// Name.
    pub name: String,
    /// Pod IP, once assigned.
    pub ip: Option<String>,
    /// Ready condition.
    pub ready: bool,
    /// Being deleted.
    pub terminating: bool,
}

/// The API resource of `apiVersion`/`kind` (plural by Kubernetes' rules).
fn api_resource(api_version: &str, kind: &str) -> ApiResource {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind))
}

fn dynamic_api(
    client: &kube::Client,
    api_version: &str,
    kind: &str,
    ns: Option<&str>,
) -> Api<DynamicObject> {
    let ar = api_resource(api_version, kind);
    match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    }
}

impl Conn {
    /// Creates `obj` (any kind; namespace from its metadata).
    ///
    /// # Errors
    /// API errors, such as AlreadyExists.
    pub(crate) async fn create(&self, obj: &serde_json::Value) -> Result<(), KubeError> {
        let api_version = obj["apiVersion"].as_str().unwrap_or_default();
        let kind = obj["kind"].as_str().unwrap_or_default();
        let ns = obj.pointer("/metadata/namespace").and_then(|v| v.as_str());
        let name = obj
            .pointer("/metadata/name")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        let dynamic: DynamicObject =
            serde_json::from_value(obj.clone()).map_err(|e| KubeError::Object {
                what: format!("{kind} {name}"),
                reason: e.to_string(),
            })?;
        dynamic_api(&self.client, api_version, kind, ns)
            .create(&PostParams::default(), &dynamic)
            .await
            .map(|_| ())
            .map_err(KubeError::api(format!("create {kind} {name}")))
    }

    /// Reads one object as JSON (`None` when it does not exist).
    ///
    /// # Errors
    /// API errors.
    pub(crate) async fn get_json(
        &self,
        api_version: &str,
        kind: &str,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Option<serde_json::Value>, KubeError> {
        let o = dynamic_api(&self.client, api_version, kind, ns)
            .get_opt(name)
            .await
            .map_err(KubeError::api(""))?;
        o.map(|o| {
            serde_json::to_value(o).map_err(|e| KubeError::Object {
                what: format!("{kind} {name}"),
                reason: e.to_string(),
            })
        })
        .transpose()
    }

    /// Lists objects as JSON (`ns` `None`: every namespace), optionally by label selector.
    ///
    /// # Errors
    /// API errors.
    pub(crate) async fn list_json(
        &self,
        api_version: &str,
        kind: &str,
        ns: Option<&str>,
        selector: Option<&str>,
    ) -> Result<Vec<serde_json::Value>, KubeError> {
        let mut lp = ListParams::default();
        if let Some(s) = selector {
            lp = lp.labels(s);
        }
        let list = dynamic_api(&self.client, api_version, kind, ns)
            .list(&lp)
            .await
            .map_err(KubeError::api(format!("list {kind}")))?;
        let mut out = Vec::new();
        for o in list.items {
            let mut v = serde_json::to_value(o).map_err(|e| KubeError::Object {
                what: kind.to_owned(),
                reason: e.to_string(),
            })?;
            // List items come without apiVersion and kind; put them back for the readers.
            v["apiVersion"] = serde_json::json!(api_version);
            v["kind"] = serde_json::json!(kind);
            out.push(v);
        }
        Ok(out)
    }

    /// JSON merge patch of one object.
    ///
    /// # Errors
    /// API errors.
    pub(crate) async fn merge_patch(
        &self,
        api_version: &str,
        kind: &str,
        ns: Option<&str>,
        name: &str,
        patch: &serde_json::Value,
    ) -> Result<(), KubeError> {
        dynamic_api(&self.client, api_version, kind, ns)
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map(|_| ())
            .map_err(KubeError::api(format!("patch {kind} {name}")))
    }

    /// Sets a Deployment's replicas.
    ///
    /// # Errors
    /// API errors.
    pub(crate) async fn scale(
        &self,
        ns: &str,
        deployment: &str,
        replicas: i32,
    ) -> Result<(), KubeError> {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), ns);
        let patch = serde_json::json!({"spec": {"replicas": replicas}});
        api.patch_scale(deployment, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
            .map_err(KubeError::api(format!("scale {deployment}")))
    }

    /// Pods in `ns` matching `selector`.
    ///
    /// # Errors
    /// API errors.
    pub(crate) async fn pods(&self, ns: &str, selector: &str) -> Result<Vec<PodObs>, KubeError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let pods = api
            .list(&ListParams::default().labels(selector))
            .await
            .map_err(KubeError::api(""))?;
        Ok(pods
            .items
            .into_iter()
            .map(|p| {
                let terminating = p.metadata.deletion_timestamp.is_some();
                let status = p.status.unwrap_or_default();
                let ready = status
                    .conditions
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                PodObs {
                    name: p.metadata.name.unwrap_or_default(),
                    ip: status.pod_ip,
                    ready,
                    terminating,
                }
            })
            .collect())
    }

    /// Deletes a namespace. `Ok(false)` when it did not exist.
    ///
    /// # Errors
    /// API errors.
    pub(crate) async fn delete_namespace(&self, name: &str) -> Result<bool, KubeError> {
        let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(self.client.clone());
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
            Err(e) => Err(KubeError::api("")(e)),
        }
    }

    /// Whether a namespace exists (terminating or not).
    ///
    /// # Errors
    /// API errors.
    pub(crate) async fn namespace_exists(&self, name: &str) -> Result<bool, KubeError> {
        let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(self.client.clone());
        api.get_opt(name)
            .await
            .map(|n| n.is_some())
            .map_err(KubeError::api(""))
    }

    /// Names of the namespaces matching `selector`.
    ///
    /// # Errors
    /// API errors.
    pub(crate) async fn namespaces(&self, selector: &str) -> Result<Vec<String>, KubeError> {
        let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(self.client.clone());
        let list = api
            .list(&ListParams::default().labels(selector))
            .await
            .map_err(KubeError::api(""))?;
        Ok(list
            .items
            .into_iter()
            .filter_map(|n| n.metadata.name)
            .collect())
    }
}
