//! Argo CD, Flux and plain-helm artifacts, and the tree's README and .gitignore.
//!
//! Everything here is a pure function of the spec and the rendered values, with no timestamps
//! or machine-specific paths, so a tree renders byte-identically on every machine.

use std::fmt::Write as _;

use crate::pki::LeafKind;
use crate::spec::{CILIUM_NAMESPACE, CertMethod, Cluster, MeshSpec};
use crate::value::{Map, Value};

use super::secrets::{CLUSTER_LABEL, MANAGED_BY, MESH_LABEL};
use super::values::Phase;

/// Namespace Argo CD runs in.
pub const ARGOCD_NAMESPACE: &str = "argocd";
/// Namespace Flux runs in.
pub const FLUX_NAMESPACE: &str = "flux-system";
/// The Helm release name (the article's).
pub const RELEASE: &str = "cilium";

fn labels(spec: &MeshSpec, cluster: Option<&Cluster>) -> Value {
    let mut m = Map::new();
    m.insert(MANAGED_BY.0.into(), MANAGED_BY.1.into());
    m.insert(MESH_LABEL.into(), spec.name.as_str().into());
    if let Some(c) = cluster {
        m.insert(CLUSTER_LABEL.into(), c.name.as_str().into());
    }
    Value::Map(m)
}

/// Secrets the chart regenerates on every render with `certificates: helm`: the only place
/// an `ignoreDifferences` is unavoidable.
fn helm_method_secrets(spec: &MeshSpec, cluster: &Cluster) -> Vec<&'static str> {
    if spec.clustermesh.certificates != CertMethod::Helm {
        return Vec::new();
    }
    let mut names: Vec<&'static str> = crate::pki::catalog::leaves_for(spec, cluster)
        .into_iter()
        .map(|(k, _)| k.secret_name())
        .collect();
    if !(spec.cilium.version.has_local_cert()
        && spec.clustermesh.kvstoremesh_enabled(&spec.cilium.version))
    {
        names.retain(|n| *n != LeafKind::ClustermeshLocal.secret_name());
    }
    names
}

/// The repository URL rendered when mesh.yaml and the flags give none (`render` warns).
pub const PLACEHOLDER_REPO: &str = "https://git.example.com/REPLACE-ME/platform.git";

/// Where the tree lives in git, as the GitOps objects reference it.
#[derive(Debug, Clone)]
pub struct GitSource {
    /// Repository URL.
    pub repo: String,
    /// Revision.
    pub revision: String,
    /// The tree's directory in the repository (`.` for the root).
    pub path: String,
    /// The directory of the sealed Secrets, `<cluster>/` each.
    pub sealed: String,
}

impl GitSource {
    /// From mesh.yaml's `gitops:` block.
    pub fn of(spec: &MeshSpec) -> GitSource {
        GitSource {
            repo: spec
                .gitops
                .repo_url
                .clone()
                .unwrap_or_else(|| PLACEHOLDER_REPO.to_owned()),
            revision: spec.gitops.revision.clone(),
            path: spec.gitops.path.clone(),
            sealed: spec.gitops.sealed_path.clone().unwrap_or_else(|| {
                if spec.gitops.path == "." {
                    "sealed".to_owned()
                } else {
                    format!("{}-sealed", spec.gitops.path)
                }
            }),
        }
    }

    /// `rel` inside the tree, relative to the repository root.
    pub fn join(&self, rel: &str) -> String {
        if self.path == "." {
            rel.to_owned()
        } else {
            format!("{}/{rel}", self.path)
        }
    }
}

/// The AppProject every Application of the mesh belongs to.
pub fn argocd_project_name(spec: &MeshSpec) -> String {
    format!("cilium-{}", spec.name)
}

fn sync_policy(ignore: bool) -> Value {
    let mut p = Value::map();
    // A CNI must never be pruned by accident: deleting its resources cuts every pod off.
    p.set(&["automated", "prune"], false);
    p.set(&["automated", "selfHeal"], true);
    // Server-side apply: the chart's CRDs and large ConfigMaps exceed the 256 KiB
    // last-applied annotation of client-side apply, and it merges with Cilium's own fields.
    let mut opts = vec![
        "ServerSideApply=true",
        "PruneLast=true",
        "ApplyOutOfSyncOnly=true",
    ];
    if ignore {
        opts.push("RespectIgnoreDifferences=true");
    }
    p.set(&["syncOptions"], opts);
    // A CNI rollout waits on every node; retry with backoff rather than fail the sync.
    p.set(&["retry", "limit"], 5i64);
    p.set(&["retry", "backoff", "duration"], "30s");
    p.set(&["retry", "backoff", "factor"], 2i64);
    p.set(&["retry", "backoff", "maxDuration"], "10m");
    p
}

fn ignore_differences(names: &[&str]) -> Value {
    Value::Seq(
        names
            .iter()
            .map(|n| {
                let mut m = Value::map();
                m.set(&["group"], "");
                m.set(&["kind"], "Secret");
                m.set(&["name"], *n);
                m.set(&["namespace"], CILIUM_NAMESPACE);
                m.set(&["jsonPointers"], vec!["/data"]);
                m
            })
            .collect(),
    )
}

/// The three sources of a cluster's Application: the chart at the pinned version with the
/// cluster's values files from git (`$values/...`), the git repository as `ref: values`, and the
/// cluster's sealed Secrets (synced in wave -1 before the chart). `dir` and `sealed` are the
/// cluster's directories (Go templates in the ApplicationSet).
fn argocd_sources(
    spec: &MeshSpec,
    git: &GitSource,
    dir: &str,
    sealed: &str,
    secret_values: bool,
) -> Value {
    let mut chart = Value::map();
    chart.set(&["repoURL"], spec.cilium.repo.as_str());
    chart.set(&["chart"], "cilium");
    chart.set(&["targetRevision"], spec.cilium.version.to_string());
    chart.set(&["helm", "releaseName"], RELEASE);
    let mut files = vec![format!("$values/{dir}/values.yaml")];
    if secret_values {
        files.push(format!("$values/{dir}/secret-values.yaml"));
    }
    chart.set(&["helm", "valueFiles"], files);
    let mut values = Value::map();
    values.set(&["repoURL"], git.repo.as_str());
    values.set(&["targetRevision"], git.revision.as_str());
    values.set(&["ref"], "values");
    let mut manifests = Value::map();
    manifests.set(&["repoURL"], git.repo.as_str());
    manifests.set(&["targetRevision"], git.revision.as_str());
    manifests.set(&["path"], sealed);
    Value::Seq(vec![chart, values, manifests])
}

/// One Argo CD Application for `cluster`: multi-source, values from git.
pub fn argocd_application(
    spec: &MeshSpec,
    cluster: &Cluster,
    git: &GitSource,
    secret_values: bool,
) -> Value {
    let mut a = Value::map();
    a.set(&["apiVersion"], "argoproj.io/v1alpha1");
    a.set(&["kind"], "Application");
    a.set(&["metadata", "name"], format!("cilium-{}", cluster.name));
    a.set(&["metadata", "namespace"], ARGOCD_NAMESPACE);
    a.set(&["metadata", "labels"], labels(spec, Some(cluster)));
    a.set(&["spec", "project"], argocd_project_name(spec));
    // The Argo CD cluster registered as `argocd cluster add <context> --name <cluster>`.
    a.set(&["spec", "destination", "name"], cluster.name.as_str());
    a.set(&["spec", "destination", "namespace"], CILIUM_NAMESPACE);
    a.set(
        &["spec", "sources"],
        argocd_sources(
            spec,
            git,
            &git.join(&cluster.name),
            &format!("{}/{}", git.sealed, cluster.name),
            secret_values,
        ),
    );
    let ignore = helm_method_secrets(spec, cluster);
    a.set(&["spec", "syncPolicy"], sync_policy(!ignore.is_empty()));
    if !ignore.is_empty() {
        a.set(&["spec", "ignoreDifferences"], ignore_differences(&ignore));
    }
    a
}

/// The ApplicationSet alternative: a list generator whose elements are only a cluster's name
/// and directory, so its size grows with N (each cluster's values stay in its own file).
pub fn argocd_application_set(spec: &MeshSpec, git: &GitSource, secret_values: bool) -> Value {
    let mut s = Value::map();
    s.set(&["apiVersion"], "argoproj.io/v1alpha1");
    s.set(&["kind"], "ApplicationSet");
    s.set(&["metadata", "name"], format!("cilium-{}", spec.name));
    s.set(&["metadata", "namespace"], ARGOCD_NAMESPACE);
    s.set(&["metadata", "labels"], labels(spec, None));
    s.set(&["spec", "goTemplate"], true);
    s.set(&["spec", "goTemplateOptions"], vec!["missingkey=error"]);
    let elements: Vec<Value> = spec
        .clusters
        .iter()
        .map(|c| {
            let mut e = Value::map();
            e.set(&["cluster"], c.name.as_str());
            e.set(&["path"], git.join(&c.name));
            e.set(&["sealed"], format!("{}/{}", git.sealed, c.name));
            e
        })
        .collect();
    let mut generator = Value::map();
    generator.set(&["list", "elements"], Value::Seq(elements));
    s.set(&["spec", "generators"], Value::Seq(vec![generator]));
    fn at<'a>(rest: &[&'a str]) -> Vec<&'a str> {
        ["spec", "template"]
            .iter()
            .copied()
            .chain(rest.iter().copied())
            .collect()
    }
    s.set(&at(&["metadata", "name"]), "cilium-{{ .cluster }}");
    let mut l = labels(spec, None);
    l.set(&[CLUSTER_LABEL], "{{ .cluster }}");
    s.set(&at(&["metadata", "labels"]), l);
    s.set(&at(&["spec", "project"]), argocd_project_name(spec));
    s.set(&at(&["spec", "destination", "name"]), "{{ .cluster }}");
    s.set(&at(&["spec", "destination", "namespace"]), CILIUM_NAMESPACE);
    s.set(
        &at(&["spec", "sources"]),
        argocd_sources(spec, git, "{{ .path }}", "{{ .sealed }}", secret_values),
    );
    let ignore = spec
        .clusters
        .first()
        .map(|c| helm_method_secrets(spec, c))
        .unwrap_or_default();
    s.set(
        &at(&["spec", "syncPolicy"]),
        sync_policy(!ignore.is_empty()),
    );
    if !ignore.is_empty() {
        s.set(
            &at(&["spec", "ignoreDifferences"]),
            ignore_differences(&ignore),
        );
    }
    s
}

/// The mesh's AppProject: only the chart repository and the tree's repository as sources,
/// only the mesh's clusters and kube-system as destinations, and the cluster-scoped kinds a CNI
/// installs.
pub fn argocd_project(spec: &MeshSpec, git: &GitSource) -> Value {
    let mut p = Value::map();
    p.set(&["apiVersion"], "argoproj.io/v1alpha1");
    p.set(&["kind"], "AppProject");
    p.set(&["metadata", "name"], argocd_project_name(spec));
    p.set(&["metadata", "namespace"], ARGOCD_NAMESPACE);
    p.set(&["metadata", "labels"], labels(spec, None));
    p.set(
        &["spec", "description"],
        format!("Cilium Cluster Mesh {} (rendered by cmesh)", spec.name),
    );
    p.set(
        &["spec", "sourceRepos"],
        vec![spec.cilium.repo.clone(), git.repo.clone()],
    );
    let dest: Vec<Value> = spec
        .clusters
        .iter()
        .map(|c| {
            let mut d = Value::map();
            d.set(&["name"], c.name.as_str());
            d.set(&["namespace"], CILIUM_NAMESPACE);
            d
        })
        .collect();
    p.set(&["spec", "destinations"], Value::Seq(dest));
    let cluster_kinds: Vec<Value> = [
        ("apiextensions.k8s.io", "CustomResourceDefinition"),
        ("rbac.authorization.k8s.io", "ClusterRole"),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
        ("cilium.io", "*"),
        ("admissionregistration.k8s.io", "*"),
        ("", "Namespace"),
    ]
    .iter()
    .map(|(g, k)| {
        let mut m = Value::map();
        m.set(&["group"], *g);
        m.set(&["kind"], *k);
        m
    })
    .collect();
    p.set(
        &["spec", "clusterResourceWhitelist"],
        Value::Seq(cluster_kinds),
    );
    p
}

/// Argo CD's default `resource.exclusions` (its install manifests' argocd-cm, v3.5 and v3.6
/// alike), which already leave out Cilium's CiliumIdentity, CiliumEndpoint and
/// CiliumEndpointSlice. The patch carries the whole list because `resource.exclusions` is one
/// string: a patch holding only Cilium's entry would replace the defaults and make Argo CD
/// watch every Endpoints, EndpointSlice, Lease and review object of every cluster.
const ARGOCD_EXCLUSIONS: &str = "\
# Argo CD's default exclusions (argocd-cm of its install manifests, v3.5 and v3.6), with
# Cilium's agent-created objects (CiliumIdentity first: Cilium's docs ask for it).
- apiGroups:
  - ''
  - discovery.k8s.io
  kinds:
  - Endpoints
  - EndpointSlice
- apiGroups:
  - coordination.k8s.io
  kinds:
  - Lease
- apiGroups:
  - authentication.k8s.io
  - authorization.k8s.io
  kinds:
  - SelfSubjectReview
  - TokenReview
  - LocalSubjectAccessReview
  - SelfSubjectAccessReview
  - SelfSubjectRulesReview
  - SubjectAccessReview
- apiGroups:
  - certificates.k8s.io
  kinds:
  - CertificateSigningRequest
- apiGroups:
  - cert-manager.io
  kinds:
  - CertificateRequest
- apiGroups:
  - cilium.io
  kinds:
  - CiliumIdentity
  - CiliumEndpoint
  - CiliumEndpointSlice
- apiGroups:
  - kyverno.io
  - reports.kyverno.io
  - wgpolicyk8s.io
  kinds:
  - PolicyReport
  - ClusterPolicyReport
  - EphemeralReport
  - ClusterEphemeralReport
  - AdmissionReport
  - ClusterAdmissionReport
  - BackgroundScanReport
  - ClusterBackgroundScanReport
  - UpdateRequest
";

/// A patch for Argo CD's `argocd-cm`: Cilium's docs ask Argo CD not to track CiliumIdentity
/// (the agents create them; tracking makes every Application OutOfSync and may prune them).
/// Argo CD's own defaults are kept (see [`ARGOCD_EXCLUSIONS`]).
pub fn argocd_cm_patch() -> Value {
    let mut cm = Value::map();
    cm.set(&["apiVersion"], "v1");
    cm.set(&["kind"], "ConfigMap");
    cm.set(&["metadata", "name"], "argocd-cm");
    cm.set(&["metadata", "namespace"], ARGOCD_NAMESPACE);
    cm.set(&["data", "resource.exclusions"], ARGOCD_EXCLUSIONS);
    cm
}

/// The name of `cluster`'s values ConfigMap and, for sensitive values, Secret (Flux).
pub fn flux_values_names(cluster: &Cluster) -> (String, String) {
    (
        format!("cilium-values-{}", cluster.name),
        format!("cilium-secret-values-{}", cluster.name),
    )
}

/// Flux HelmRepository, the values ConfigMap (text spliced in for `values_marker`) and the
/// HelmRelease for `cluster`. `secret_values`: the release also reads the Secret with the
/// sensitive values (delivered with the cluster's Secrets, not in git).
pub fn flux(
    spec: &MeshSpec,
    cluster: &Cluster,
    values_marker: &str,
    secret_values: bool,
) -> Vec<Value> {
    let mut repo = Value::map();
    repo.set(&["apiVersion"], "source.toolkit.fluxcd.io/v1");
    repo.set(&["kind"], "HelmRepository");
    repo.set(&["metadata", "name"], "cilium");
    repo.set(&["metadata", "namespace"], FLUX_NAMESPACE);
    repo.set(&["metadata", "labels"], labels(spec, None));
    repo.set(&["spec", "interval"], "1h");
    repo.set(&["spec", "url"], spec.cilium.repo.as_str());

    let (cm_name, secret_name) = flux_values_names(cluster);
    let mut cm = Value::map();
    cm.set(&["apiVersion"], "v1");
    cm.set(&["kind"], "ConfigMap");
    cm.set(&["metadata", "name"], cm_name.as_str());
    cm.set(&["metadata", "namespace"], FLUX_NAMESPACE);
    cm.set(&["metadata", "labels"], labels(spec, Some(cluster)));
    cm.set(&["data", "values.yaml"], values_marker);

    let mut rel = Value::map();
    rel.set(&["apiVersion"], "helm.toolkit.fluxcd.io/v2");
    rel.set(&["kind"], "HelmRelease");
    rel.set(&["metadata", "name"], format!("cilium-{}", cluster.name));
    rel.set(&["metadata", "namespace"], FLUX_NAMESPACE);
    rel.set(&["metadata", "labels"], labels(spec, Some(cluster)));
    rel.set(&["spec", "interval"], "10m");
    rel.set(&["spec", "releaseName"], RELEASE);
    rel.set(&["spec", "targetNamespace"], CILIUM_NAMESPACE);
    rel.set(&["spec", "storageNamespace"], CILIUM_NAMESPACE);
    rel.set(&["spec", "chart", "spec", "chart"], "cilium");
    rel.set(
        &["spec", "chart", "spec", "version"],
        spec.cilium.version.to_string(),
    );
    rel.set(
        &["spec", "chart", "spec", "sourceRef", "kind"],
        "HelmRepository",
    );
    rel.set(&["spec", "chart", "spec", "sourceRef", "name"], "cilium");
    // A CNI rollout restarts an agent per node: give it time before calling the release failed.
    rel.set(&["spec", "timeout"], "15m");
    // Flux's default install remediation uninstalls a failed release and retries: for a CNI
    // that removes networking from every pod in the cluster, so a failed install stays as it
    // is (for a human or the next reconcile), and a failed upgrade rolls back instead.
    rel.set(&["spec", "install", "crds"], "CreateReplace");
    rel.set(&["spec", "install", "remediation", "retries"], 0i64);
    rel.set(&["spec", "upgrade", "crds"], "CreateReplace");
    rel.set(&["spec", "upgrade", "remediation", "retries"], 3i64);
    rel.set(&["spec", "upgrade", "remediation", "strategy"], "rollback");
    rel.set(
        &["spec", "upgrade", "remediation", "remediateLastFailure"],
        true,
    );
    rel.set(&["spec", "driftDetection", "mode"], "enabled");
    // Keep the CNI in place if the HelmRelease is deleted.
    rel.set(&["spec", "uninstall", "keepHistory"], true);
    rel.set(&["spec", "suspend"], false);
    let mut from = vec![{
        let mut v = Value::map();
        v.set(&["kind"], "ConfigMap");
        v.set(&["name"], cm_name.as_str());
        v.set(&["valuesKey"], "values.yaml");
        v
    }];
    if secret_values {
        let mut v = Value::map();
        v.set(&["kind"], "Secret");
        v.set(&["name"], secret_name.as_str());
        v.set(&["valuesKey"], "values.yaml");
        from.push(v);
    }
    rel.set(&["spec", "valuesFrom"], Value::Seq(from));
    if spec.gitops.flux_kubeconfig {
        rel.set(
            &["spec", "kubeConfig", "secretRef", "name"],
            format!("{}-kubeconfig", cluster.name),
        );
        rel.set(&["spec", "kubeConfig", "secretRef", "key"], "value");
    }
    vec![repo, cm, rel]
}

/// What bootstraps one cluster in Flux: the tree's GitRepository, a Kustomization for the
/// cluster's Secrets (sealed or encrypted, in the sealed path), and one for the release
/// that depends on it, so the Secrets exist before the chart.
pub fn flux_sync(spec: &MeshSpec, cluster: &Cluster, git: &GitSource) -> Vec<Value> {
    let mut repo = Value::map();
    repo.set(&["apiVersion"], "source.toolkit.fluxcd.io/v1");
    repo.set(&["kind"], "GitRepository");
    repo.set(&["metadata", "name"], format!("cilium-{}", spec.name));
    repo.set(&["metadata", "namespace"], FLUX_NAMESPACE);
    repo.set(&["metadata", "labels"], labels(spec, None));
    repo.set(&["spec", "interval"], "5m");
    repo.set(&["spec", "url"], git.repo.as_str());
    let r = git.revision.as_str();
    let kind = if r == "HEAD" || r.starts_with("refs/") {
        "name"
    } else if r.len() == 40 && r.bytes().all(|b| b.is_ascii_hexdigit()) {
        "commit"
    } else {
        "branch"
    };
    repo.set(&["spec", "ref", kind], r);
    // `remote`: the Kustomization applies into the mesh cluster itself (its Secrets); the
    // release's objects stay with Flux, whose HelmRelease reaches the cluster on its own.
    let ks = |name: String, path: String, depends: Option<String>, remote: bool| {
        let mut k = Value::map();
        k.set(&["apiVersion"], "kustomize.toolkit.fluxcd.io/v1");
        k.set(&["kind"], "Kustomization");
        k.set(&["metadata", "name"], name);
        k.set(&["metadata", "namespace"], FLUX_NAMESPACE);
        k.set(&["metadata", "labels"], labels(spec, Some(cluster)));
        k.set(&["spec", "interval"], "10m");
        k.set(&["spec", "path"], format!("./{path}"));
        k.set(&["spec", "prune"], false);
        k.set(&["spec", "sourceRef", "kind"], "GitRepository");
        k.set(
            &["spec", "sourceRef", "name"],
            format!("cilium-{}", spec.name),
        );
        k.set(&["spec", "timeout"], "15m");
        if let Some(d) = depends {
            k.set(
                &["spec", "dependsOn"],
                Value::Seq(vec![{
                    let mut m = Value::map();
                    m.set(&["name"], d);
                    m
                }]),
            );
            k.set(&["spec", "wait"], true);
        }
        if remote {
            k.set(&["spec", "decryption", "provider"], "sops");
        }
        if remote && spec.gitops.flux_kubeconfig {
            k.set(
                &["spec", "kubeConfig", "secretRef", "name"],
                format!("{}-kubeconfig", cluster.name),
            );
            k.set(&["spec", "kubeConfig", "secretRef", "key"], "value");
        }
        k
    };
    let secrets_name = format!("cilium-{}-secrets", cluster.name);
    vec![
        repo,
        ks(
            secrets_name.clone(),
            format!("{}/{}", git.sealed, cluster.name),
            None,
            true,
        ),
        ks(
            format!("cilium-{}", cluster.name),
            git.join(&format!("flux/{}/release", cluster.name)),
            Some(secrets_name),
            false,
        ),
    ]
}

/// Shell-quotes `s` for POSIX sh.
fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:@,+".contains(&b))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Paths the helm script needs, relative to the output directory.
#[derive(Debug, Clone)]
pub struct ScriptPaths {
    /// From the output directory to the directory of mesh.yaml (kubeconfig paths are relative
    /// to it).
    pub spec_dir: String,
    /// From the output directory to the directory holding `<cluster>/secrets.yaml`.
    pub secrets_dir: String,
}

/// `helm/<cluster>.sh`: the article's plain helm commands, for any number of clusters.
pub fn helm_script(
    spec: &MeshSpec,
    cluster: &Cluster,
    phase: Phase,
    has_secrets: bool,
    has_secret_values: bool,
    paths: &ScriptPaths,
) -> String {
    let mut s = String::new();
    let n = &cluster.name;
    let _ = writeln!(s, "#!/bin/sh");
    let _ = writeln!(
        s,
        "# Install or upgrade Cilium {} on cluster {n} (mesh {}, phase {}).",
        spec.cilium.version,
        spec.name,
        phase.as_str()
    );
    let _ = writeln!(
        s,
        "# Generated by cmesh from mesh.yaml; `cmesh apply` does the same with waiting and checks."
    );
    let _ = writeln!(s, "set -eu");
    let _ = writeln!(s, "here=$(cd \"$(dirname \"$0\")\" && pwd)");
    let _ = writeln!(s, "tree=\"$here/..\"");
    let _ = writeln!(s, "spec_dir=\"$tree/{}\"", paths.spec_dir);
    let mut kube = String::new();
    let mut helm_kube = String::new();
    if let Some(k) = &cluster.kubeconfig {
        let path = if k.starts_with('/') {
            sh_quote(k)
        } else {
            format!("\"$spec_dir\"/{}", sh_quote(k))
        };
        let _ = write!(kube, " --kubeconfig {path}");
        let _ = write!(helm_kube, " --kubeconfig {path}");
    }
    if let Some(ctx) = &cluster.context {
        let _ = write!(kube, " --context {}", sh_quote(ctx));
        let _ = write!(helm_kube, " --kube-context {}", sh_quote(ctx));
    }
    if has_secrets {
        let _ = writeln!(
            s,
            "\n# 1. Secrets the chart expects to exist (shared CA, pre-issued certificates)."
        );
        let _ = writeln!(
            s,
            "kubectl{kube} apply --server-side --field-manager=cmesh -f \"$tree/{}/{n}/secrets.yaml\"",
            paths.secrets_dir
        );
    }
    let _ = writeln!(
        s,
        "\n# {}. The chart with this cluster's values.",
        if has_secrets { 2 } else { 1 }
    );
    let secret_values = if has_secret_values {
        format!(
            " \\\n  --values \"$tree/{}/{n}/secret-values.yaml\"",
            paths.secrets_dir
        )
    } else {
        String::new()
    };
    let _ = writeln!(
        s,
        "helm upgrade --install {RELEASE} cilium --repo {} --version {} --namespace {CILIUM_NAMESPACE}{helm_kube} \\\n  --values \"$tree/{n}/values.yaml\"{secret_values}",
        sh_quote(&spec.cilium.repo),
        spec.cilium.version
    );
    if phase == Phase::Mesh {
        let _ = writeln!(
            s,
            "\n# Agents read the Cluster Mesh configuration and certificates at start: restart them"
        );
        let _ = writeln!(
            s,
            "# (the article deletes the pods by hand) and wait for the rollout."
        );
        let _ = writeln!(
            s,
            "kubectl{kube} -n {CILIUM_NAMESPACE} rollout restart daemonset/cilium"
        );
        let _ = writeln!(
            s,
            "kubectl{kube} -n {CILIUM_NAMESPACE} rollout status daemonset/cilium --timeout=10m"
        );
    }
    s
}

/// The folder of the per-cluster Applications (one alternative).
pub const ARGOCD_APPLICATIONS: &str = "argocd/applications";
/// The folder of the ApplicationSet (the other alternative).
pub const ARGOCD_APPLICATIONSET: &str = "argocd/applicationset";
/// The argocd-cm patch: Argo CD's own configuration, outside any folder of Applications.
pub const ARGOCD_CM_PATCH: &str = "argocd-config/argocd-cm-patch.yaml";

/// A kustomize `kustomization.yaml` listing `resources` (files of its own folder), so that a
/// tool pointed at the folder takes exactly these.
pub fn kustomization(resources: &[String]) -> Value {
    let mut k = Value::map();
    k.set(&["apiVersion"], "kustomize.config.k8s.io/v1beta1");
    k.set(&["kind"], "Kustomization");
    k.set(
        &["resources"],
        Value::Seq(resources.iter().map(|r| Value::from(r.as_str())).collect()),
    );
    k
}

/// The .gitignore of the tree.
pub fn gitignore(keys_in_values: bool) -> String {
    let mut s = String::from(
        "# Generated by cmesh.\n\
         # These files hold private keys. Never commit them in plain text: seal them (kubeseal),\n\
         # encrypt them (sops, helm-secrets) or deliver them from a vault, and commit that instead\n\
         # (into gitops.sealedPath/<cluster>/, outside this tree, for Argo CD and Flux to apply).\n\
         */secrets.yaml\n",
    );
    if keys_in_values {
        s.push_str(
            "# This Cilium version takes some private keys only as Helm values: they are in these.\n\
             */secret-values.yaml\n\
             */flux-secret-values.yaml\n",
        );
    }
    s
}

/// Facts the README reports per cluster.
#[derive(Debug, Clone)]
pub struct ReadmeCluster {
    /// Cluster name.
    pub name: String,
    /// Its endpoint URL.
    pub endpoint: String,
    /// Whether it has a secrets.yaml.
    pub has_secrets: bool,
    /// Whether its values hold private keys.
    pub keys_in_values: bool,
    /// Leaves delivered as Secrets.
    pub secret_leaves: Vec<LeafKind>,
}

/// Most clusters whose peerings the topology draws one by one: beyond, a full mesh's
/// N×(N−1)/2 edges would be a picture of nothing but lines (and megabytes of README).
pub const TOPOLOGY_EDGES_UP_TO: usize = 16;

/// The mesh as a Mermaid graph (GitHub and GitLab draw it in the README): each cluster with its
/// ID, pod and service ranges and clustermesh endpoint; an edge per peering (every cluster
/// peers with every other).
pub fn topology(spec: &MeshSpec, clusters: &[ReadmeCluster]) -> String {
    let join = |nets: &[ipnet::IpNet]| {
        nets.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    // Node IDs are positions, never names: a cluster called `end` would end the graph.
    let mut s = String::from("```mermaid\ngraph LR\n");
    for (i, c) in spec.clusters.iter().enumerate() {
        let endpoint = clusters
            .iter()
            .find(|r| r.name == c.name)
            .map_or(String::new(), |r| format!("<br/>{}", r.endpoint));
        let _ = writeln!(
            s,
            "  c{i}[\"<b>{}</b><br/>id {}<br/>pods {}<br/>services {}{endpoint}\"]",
            c.name,
            c.id,
            join(&c.pod_cidrs),
            join(&c.service_cidrs)
        );
    }
    let n = spec.clusters.len();
    if n <= TOPOLOGY_EDGES_UP_TO {
        for i in 0..n {
            for j in i + 1..n {
                let _ = writeln!(s, "  c{i} <--> c{j}");
            }
        }
    }
    s.push_str("```\n");
    if n > TOPOLOGY_EDGES_UP_TO {
        let _ = writeln!(
            s,
            "\nEvery cluster peers with every other: {} peerings, not drawn above {TOPOLOGY_EDGES_UP_TO} clusters.",
            n * (n - 1) / 2
        );
    }
    s
}

/// The tree's README.md.
pub fn readme(
    spec: &MeshSpec,
    phase: Phase,
    clusters: &[ReadmeCluster],
    secrets_elsewhere: bool,
) -> String {
    let mut s = String::new();
    let v = &spec.cilium.version;
    let _ = writeln!(
        s,
        "# Cilium Cluster Mesh `{}`: rendered by cmesh\n",
        spec.name
    );
    let _ = writeln!(
        s,
        "Cilium chart {v} from {}, phase `{}`, {} clusters, certificates: `{}`, authMode `{}`.",
        spec.cilium.repo,
        phase.as_str(),
        spec.clusters.len(),
        spec.clustermesh.certificates.as_str(),
        spec.clustermesh.auth_mode.as_str()
    );
    let _ = writeln!(
        s,
        "Everything here is generated from mesh.yaml by `cmesh render`: edit mesh.yaml, not these files."
    );
    let _ = writeln!(
        s,
        "`cmesh render --check` fails if this tree is out of date (use it in CI).\n"
    );
    let _ = writeln!(s, "## Topology\n");
    s.push_str(&topology(spec, clusters));
    let _ = writeln!(s, "\n## Files\n");
    let _ = writeln!(s, "| path | what |\n|---|---|");
    let _ = writeln!(
        s,
        "| `<cluster>/values.yaml` | Helm values for that cluster's `cilium` release |"
    );
    if clusters.iter().any(|c| c.has_secrets) {
        let where_ = if secrets_elsewhere {
            " (written to the separate `--secrets-out` directory)"
        } else {
            ""
        };
        let _ = writeln!(
            s,
            "| `<cluster>/secrets.yaml` | Secrets that must exist before the chart{where_}. **Sensitive** |"
        );
    }
    if clusters.iter().any(|c| c.keys_in_values) {
        let _ = writeln!(
            s,
            "| `<cluster>/secret-values.yaml` | the private keys this chart version takes only as values: the second values file. **Sensitive** |"
        );
        let _ = writeln!(
            s,
            "| `<cluster>/flux-secret-values.yaml` | the same as the Secret Flux's HelmRelease reads (`valuesFrom`). **Sensitive** |"
        );
    }
    let sealed = GitSource::of(spec).sealed;
    let _ = writeln!(
        s,
        "| `argocd/applications/` | one Argo CD Application per cluster (`<cluster>.yaml`: the chart, its values files from git, the sealed Secrets), the AppProject they belong to, and a `kustomization.yaml`: point an app-of-apps or `kubectl apply -k` here, **or** at `argocd/applicationset/`, never both |"
    );
    let _ = writeln!(
        s,
        "| `argocd/applicationset/` | the same Applications as one ApplicationSet (list generator: name and path per cluster), with the AppProject and a `kustomization.yaml` |"
    );
    let _ = writeln!(
        s,
        "| `argocd-config/argocd-cm-patch.yaml` | patch for `argocd-cm` where Argo CD is installed: Argo CD must not track CiliumIdentity; its `resource.exclusions` is Argo CD's default list (which holds Cilium's kinds), so patching keeps the defaults; if your argocd-cm has a list of its own, add the `cilium.io` entry to it instead |"
    );
    let _ = writeln!(
        s,
        "| `flux/<cluster>/sync.yaml` | the GitRepository and the cluster's two Kustomizations (Secrets, then the release); the folder's `kustomization.yaml` lists only it |"
    );
    let _ = writeln!(
        s,
        "| `flux/<cluster>/release/release.yaml` | HelmRepository, the values ConfigMap and the HelmRelease |"
    );
    let _ = writeln!(
        s,
        "| `kustomization.yaml`, `local/` | yours, if you add them: an overlay over the folders above, your own files; `cmesh render` keeps them |"
    );
    let _ = writeln!(
        s,
        "| `helm/<cluster>.sh` | the plain `helm upgrade --install` commands |\n"
    );
    let _ = writeln!(s, "## Clusters\n");
    let _ = writeln!(
        s,
        "| cluster | clustermesh endpoint | secrets.yaml | private keys in values |\n|---|---|---|---|"
    );
    for c in clusters {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} |",
            c.name,
            c.endpoint,
            if c.has_secrets { "yes" } else { "no" },
            if c.keys_in_values { "yes" } else { "no" }
        );
    }
    let _ = writeln!(s, "\n## Order\n");
    let _ = writeln!(
        s,
        "1. Apply each cluster's `secrets.yaml` (if it has one) before the chart. The files are"
    );
    let _ = writeln!(
        s,
        "   plain Kubernetes Secrets: convert them for your secret store (`kubeseal`, `sops`) before"
    );
    let _ = writeln!(
        s,
        "   they go near git. The Secrets carry an Argo CD sync-wave of -1 so they sync first."
    );
    let _ = writeln!(s, "2. Install the chart, in one of three ways:");
    let _ = writeln!(
        s,
        "   - Argo CD: commit this tree, and each cluster's Secrets sealed or encrypted into `{sealed}/<cluster>/`"
    );
    let _ = writeln!(
        s,
        "     in the same repository (outside this tree, which `cmesh render` replaces); register every"
    );
    let _ = writeln!(
        s,
        "     cluster under its name (`argocd cluster add <context> --name <cluster>`), patch argocd-cm"
    );
    let _ = writeln!(
        s,
        "     (`kubectl patch configmap argocd-cm -n argocd --patch-file argocd-config/argocd-cm-patch.yaml`),"
    );
    let _ = writeln!(
        s,
        "     then `kubectl apply -n argocd -k argocd/applications`"
    );
    let _ = writeln!(
        s,
        "     (or `-k argocd/applicationset`; or point an app-of-apps at one). Automated sync never prunes:"
    );
    let _ = writeln!(s, "     deleting a CNI's resources cuts every pod off.");
    let _ = writeln!(
        s,
        "   - Flux: commit the tree likewise and apply `flux/<cluster>/sync.yaml` where Flux runs (with"
    );
    let _ = writeln!(
        s,
        "     `gitops.fluxKubeConfig: true` a management cluster reaches each cluster through Secret"
    );
    let _ = writeln!(s, "     `<cluster>-kubeconfig`).");
    let _ = writeln!(s, "   - helm: run `helm/<cluster>.sh`.");
    if phase == Phase::Base {
        let _ = writeln!(
            s,
            "3. When every cluster runs Cilium, render again with `--phase mesh` and repeat."
        );
    } else {
        let _ = writeln!(
            s,
            "3. Restart the cilium agents once the mesh configuration lands (`helm/<cluster>.sh` and"
        );
        let _ = writeln!(
            s,
            "   `cmesh apply` do), then check with `cmesh status` and `cmesh probe`."
        );
    }
    let _ = writeln!(s, "\n## Certificates\n");
    match spec.clustermesh.certificates {
        CertMethod::Cmesh => {
            let _ = writeln!(
                s,
                "All clusters trust one CA kept in pki.dir; its private key never leaves it. cmesh issued every"
            );
            let _ = writeln!(
                s,
                "leaf certificate ahead of time, so rendering the chart twice gives identical manifests and"
            );
            let _ = writeln!(
                s,
                "Argo CD settles. The chart's own certificate generation is off. Certificates go into pre-created"
            );
            let _ = writeln!(
                s,
                "Secrets wherever this chart version allows it, and into values only where it accepts nothing"
            );
            let _ = writeln!(
                s,
                "else (Cluster Mesh certificates before 1.16, Hubble certificates before 1.16.19)."
            );
            let _ = writeln!(
                s,
                "Renew them before they expire with `cmesh pki renew` and render again."
            );
        }
        CertMethod::Helm => {
            let _ = writeln!(
                s,
                "`certificates: helm`: the chart signs new certificates with the shared CA (whose key is in the"
            );
            let _ = writeln!(
                s,
                "values) on every render. Argo CD would never settle without the `ignoreDifferences` on those"
            );
            let _ = writeln!(s, "Secrets; prefer `certificates: cmesh`.");
        }
        CertMethod::CronJob => {
            let _ = writeln!(
                s,
                "`certificates: cronJob`: certgen signs the certificates in each cluster with the shared CA from"
            );
            let _ = writeln!(
                s,
                "the pre-created `cilium-ca` Secret, which therefore carries the CA key."
            );
        }
        CertMethod::CertManager => {
            let _ = writeln!(
                s,
                "`certificates: certManager`: cert-manager issues the certificates with the issuer set in"
            );
            let _ = writeln!(s, "`clustermesh.apiserver.tls.auto.certManagerIssuerRef`.");
        }
    }
    if clusters.iter().any(|c| c.keys_in_values) {
        let _ = writeln!(
            s,
            "\n**Cilium {v} takes some of these certificates only as Helm values**: their private keys are in"
        );
        let _ = writeln!(
            s,
            "`<cluster>/secret-values.yaml` (mode 0600, git-ignored), never in `values.yaml` or the GitOps objects."
        );
        s.push_str(&keys_in_values_routes(spec));
    }
    s
}

/// The runbook's section on delivering private keys that a chart version takes only as values:
/// exact commands for Flux, what Argo CD can and cannot do, and the way out (1.16+).
fn keys_in_values_routes(spec: &MeshSpec) -> String {
    let git = GitSource::of(spec);
    let (tree, sealed) = (&git.path, &git.sealed);
    let c = spec.clusters.first().map_or("k8s01", |c| c.name.as_str());
    let v = &spec.cilium.version;
    let lines = [
        String::new(),
        "## Private keys in values: how they reach the clusters".into(),
        String::new(),
        "The rendered Argo CD Applications and Flux HelmReleases expect those keys, and git must never".into(),
        format!("hold them in plain text. Per cluster (commands from the repository's root, for {c}):"),
        String::new(),
        "- **Flux** decrypts SOPS natively. Encrypt the values Secret into the sealed path, which the".into(),
        "  `cilium-<cluster>-secrets` Kustomization applies (with `decryption.provider: sops`) before".into(),
        "  the HelmRelease reads it through `valuesFrom`:".into(),
        String::new(),
        "  ```sh".into(),
        format!("  mkdir -p {sealed}/{c}"),
        "  sops --encrypt --encrypted-regex '^(data|stringData)$' --kms <your-kms-key-arn> \\".into(),
        format!("    {tree}/{c}/flux-secret-values.yaml > {sealed}/{c}/flux-secret-values.yaml"),
        format!("  git add {sealed}/{c}/flux-secret-values.yaml"),
        "  ```".into(),
        String::new(),
        "  A cloud KMS key (`--kms`, `--gcp-kms`, `--azure-kv`) is decrypted with kustomize-controller's".into(),
        "  own identity. With age or PGP (`--age <recipient>`), kustomize-controller needs the private key".into(),
        "  as a Secret (`kubectl -n flux-system create secret generic sops-age --from-file=age.agekey`) and".into(),
        "  the Kustomization a `decryption.secretRef` to it: add that patch in your own".into(),
        "  `kustomization.yaml` at the top of this tree, which `cmesh render` keeps.".into(),
        "- **helm** (`helm/<cluster>.sh`) reads `secret-values.yaml` where you render; nothing to commit.".into(),
        "- **Argo CD** reads every values file from git as it is, and a multi-source Application (what".into(),
        "  cmesh renders, values from this repository) cannot decrypt one: helm-secrets does not support".into(),
        "  multi-source Applications, so as rendered the Applications fail on the missing".into(),
        "  `secret-values.yaml`. The route that works: set `clustermesh.certificates: cronJob` in".into(),
        "  mesh.yaml and render again. The chart's certgen then issues each cluster's certificates in".into(),
        "  the cluster from the shared CA, which arrives in the `cilium-ca` Secret of `secrets.yaml`".into(),
        "  (seal it into the sealed path like the other Secrets: it syncs first); no values file holds a".into(),
        "  key and the Applications list `values.yaml` alone. The price: the CA's key lives in every".into(),
        "  cluster. The way out of both is Cilium 1.16 or later, which takes every key from pre-created".into(),
        format!("  Secrets (`cmesh check` warns that {v} is out of support and names the release to move to,"),
        "  one minor at a time).".into(),
    ];
    let mut s = lines.join("\n");
    s.push('\n');
    s
}
