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

fn sync_policy(ignore: bool) -> Value {
    let mut p = Value::map();
    // A CNI must never be pruned by accident: deleting its resources cuts every pod off.
    p.set(&["automated", "prune"], false);
    p.set(&["automated", "selfHeal"], true);
    let mut opts = vec!["PruneLast=true", "ApplyOutOfSyncOnly=true"];
    if ignore {
        opts.push("RespectIgnoreDifferences=true");
    }
    p.set(&["syncOptions"], opts);
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

/// One Argo CD Application for `cluster`, values inline.
pub fn argocd_application(spec: &MeshSpec, cluster: &Cluster, values: &Value) -> Value {
    let mut a = Value::map();
    a.set(&["apiVersion"], "argoproj.io/v1alpha1");
    a.set(&["kind"], "Application");
    a.set(&["metadata", "name"], format!("cilium-{}", cluster.name));
    a.set(&["metadata", "namespace"], ARGOCD_NAMESPACE);
    a.set(&["metadata", "labels"], labels(spec, Some(cluster)));
    a.set(&["spec", "project"], "default");
    // The Argo CD cluster registered as `argocd cluster add <context> --name <cluster>`.
    a.set(&["spec", "destination", "name"], cluster.name.as_str());
    a.set(&["spec", "destination", "namespace"], CILIUM_NAMESPACE);
    a.set(&["spec", "source", "repoURL"], spec.cilium.repo.as_str());
    a.set(&["spec", "source", "chart"], "cilium");
    a.set(
        &["spec", "source", "targetRevision"],
        spec.cilium.version.to_string(),
    );
    a.set(&["spec", "source", "helm", "releaseName"], RELEASE);
    a.set(&["spec", "source", "helm", "valuesObject"], values.clone());
    let ignore = helm_method_secrets(spec, cluster);
    a.set(&["spec", "syncPolicy"], sync_policy(!ignore.is_empty()));
    if !ignore.is_empty() {
        a.set(&["spec", "ignoreDifferences"], ignore_differences(&ignore));
    }
    a
}

/// The ApplicationSet alternative: a list generator with one element per cluster carrying its
/// values as text (`values_text`: cluster name and the text, or a marker to splice it in).
pub fn argocd_application_set(spec: &MeshSpec, values_text: &[(String, String)]) -> Value {
    let mut s = Value::map();
    s.set(&["apiVersion"], "argoproj.io/v1alpha1");
    s.set(&["kind"], "ApplicationSet");
    s.set(&["metadata", "name"], format!("cilium-{}", spec.name));
    s.set(&["metadata", "namespace"], ARGOCD_NAMESPACE);
    s.set(&["metadata", "labels"], labels(spec, None));
    s.set(&["spec", "goTemplate"], true);
    s.set(&["spec", "goTemplateOptions"], vec!["missingkey=error"]);
    let elements: Vec<Value> = values_text
        .iter()
        .map(|(cluster, text)| {
            let mut e = Value::map();
            e.set(&["cluster"], cluster.as_str());
            e.set(&["values"], text.as_str());
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
    s.set(&at(&["spec", "project"]), "default");
    s.set(&at(&["spec", "destination", "name"]), "{{ .cluster }}");
    s.set(&at(&["spec", "destination", "namespace"]), CILIUM_NAMESPACE);
    s.set(
        &at(&["spec", "source", "repoURL"]),
        spec.cilium.repo.as_str(),
    );
    s.set(&at(&["spec", "source", "chart"]), "cilium");
    s.set(
        &at(&["spec", "source", "targetRevision"]),
        spec.cilium.version.to_string(),
    );
    s.set(&at(&["spec", "source", "helm", "releaseName"]), RELEASE);
    s.set(&at(&["spec", "source", "helm", "values"]), "{{ .values }}");
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

/// Flux HelmRepository and HelmRelease for `cluster`.
pub fn flux(spec: &MeshSpec, cluster: &Cluster, values: &Value) -> Vec<Value> {
    let mut repo = Value::map();
    repo.set(&["apiVersion"], "source.toolkit.fluxcd.io/v1");
    repo.set(&["kind"], "HelmRepository");
    repo.set(&["metadata", "name"], "cilium");
    repo.set(&["metadata", "namespace"], FLUX_NAMESPACE);
    repo.set(&["metadata", "labels"], labels(spec, None));
    repo.set(&["spec", "interval"], "1h");
    repo.set(&["spec", "url"], spec.cilium.repo.as_str());

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
    rel.set(&["spec", "install", "remediation", "retries"], 3i64);
    rel.set(&["spec", "upgrade", "remediation", "retries"], 3i64);
    // Keep the CNI in place if the HelmRelease is deleted.
    rel.set(&["spec", "uninstall", "keepHistory"], true);
    rel.set(&["spec", "suspend"], false);
    rel.set(&["spec", "values"], values.clone());
    vec![repo, rel]
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
    let _ = writeln!(
        s,
        "helm upgrade --install {RELEASE} cilium --repo {} --version {} --namespace {CILIUM_NAMESPACE}{helm_kube} \\\n  --values \"$tree/{n}/values.yaml\"",
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

/// The .gitignore of the tree.
pub fn gitignore(keys_in_values: bool) -> String {
    let mut s = String::from(
        "# Generated by cmesh.\n\
         # secrets.yaml files hold private keys. Never commit them in plain text: seal them\n\
         # (kubeseal), encrypt them (sops) or deliver them from a vault, and commit that instead.\n\
         */secrets.yaml\n",
    );
    if keys_in_values {
        s.push_str(
            "# With this Cilium version the chart accepts some certificates only as values, so\n\
             # values.yaml and the argocd/ and flux/ files carry private keys too: encrypt them\n\
             # (sops, helm-secrets, argocd-vault-plugin) before committing.\n",
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
    let _ = writeln!(s, "## Files\n");
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
    let _ = writeln!(
        s,
        "| `argocd/<cluster>.yaml` | one Argo CD Application per cluster, values inline |"
    );
    let _ = writeln!(
        s,
        "| `argocd/applicationset.yaml` | the same as one ApplicationSet with a list generator |"
    );
    let _ = writeln!(
        s,
        "| `flux/<cluster>.yaml` | Flux HelmRepository and HelmRelease for that cluster |"
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
        "   - Argo CD: register every cluster under its name (`argocd cluster add <context> --name <cluster>`),"
    );
    let _ = writeln!(
        s,
        "     then apply `argocd/<cluster>.yaml` (or `argocd/applicationset.yaml`). Automated sync never"
    );
    let _ = writeln!(
        s,
        "     prunes: deleting a CNI's resources cuts every pod off. Also exclude `CiliumIdentity` from"
    );
    let _ = writeln!(
        s,
        "     Argo CD's resource tracking (`resource.exclusions` in argocd-cm), as Cilium's docs advise."
    );
    let _ = writeln!(
        s,
        "   - Flux: point each cluster's Flux at `flux/<cluster>.yaml` (Flux running in a management"
    );
    let _ = writeln!(
        s,
        "     cluster instead needs `spec.kubeConfig.secretRef` in the HelmRelease)."
    );
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
            "\n**Cilium {v} takes some of these certificates only as Helm values**, so `values.yaml`, `argocd/`"
        );
        let _ = writeln!(
            s,
            "and `flux/` carry private keys and are written with mode 0600: encrypt them before committing."
        );
    }
    s
}
