//! Where the lab's real components are: what `scripts/install-test-deps` builds from the Go
//! modules under tests/components into `.tools/` (Kubernetes, kwok, etcd, Cilium's
//! clustermesh-apiserver, agent, CNI plugin, cilium-dbg and operator per release, CoreDNS) and
//! links from the Go module cache (the Cilium charts, CRDs and BPF sources, kwok's stages and
//! CRDs).

use std::path::{Path, PathBuf};

use crate::tools;

/// The workspace's `.tools` directory.
pub fn tools_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.tools")
}

/// The Kubernetes side: control plane, kwok, etcd.
#[derive(Debug, Clone)]
pub struct Kube {
    /// The directory holding them.
    pub dir: PathBuf,
}

impl Kube {
    /// A binary in the directory.
    pub fn bin(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// kwok's stage files for nodes (Ready, kept alive by their leases). Pods are the kubelet
    /// stand-in's: kwok gets no pod stage.
    pub fn stages(&self) -> Vec<PathBuf> {
        let s = self.dir.join("kwok-stages");
        vec![
            s.join("node/fast/node-initialize.yaml"),
            s.join("node/heartbeat-with-lease/node-heartbeat-with-lease.yaml"),
        ]
    }

    /// kwok's `Exec` CRD (how `kubectl exec` reaches the pods the lab runs).
    pub fn exec_crd(&self) -> PathBuf {
        self.dir.join("kwok-crds/kwok.x-k8s.io_execs.yaml")
    }
}

/// Everything the lab needs.
///
/// # Panics
/// When something is missing, or the machine cannot make the lab's network.
pub fn kube() -> Kube {
    let dir = tools_dir().join("k8s");
    let missing: Vec<&str> = [
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kwok",
        "etcd",
        "kwok-stages",
        "kwok-crds",
    ]
    .into_iter()
    .filter(|b| !dir.join(b).exists())
    .collect();
    let net = super::net::available();
    let problem = if !missing.is_empty() {
        Some(format!(
            "{} missing in {} (run scripts/install-test-deps)",
            missing.join(", "),
            dir.display()
        ))
    } else {
        net.err()
    };
    match problem {
        None => Kube { dir },
        Some(p) => panic!("the lab cannot run: {p}"),
    }
}

/// One Cilium release: its chart, CRDs and clustermesh-apiserver image files.
#[derive(Debug, Clone)]
pub struct Cilium {
    /// `1.20.0`.
    pub version: String,
    /// `.tools/cilium/v<version>`.
    pub dir: PathBuf,
}

impl Cilium {
    /// The chart directory.
    pub fn chart(&self) -> PathBuf {
        self.dir.join("chart")
    }

    /// The CRD directory (`v2/`, `v2alpha1/`).
    pub fn crds(&self) -> PathBuf {
        self.dir.join("crds")
    }

    /// The clustermesh-apiserver image's files (usr/bin/clustermesh-apiserver, usr/bin/etcd,
    /// var/lib/cilium/etcd-config.yaml).
    pub fn image(&self) -> PathBuf {
        self.dir.join("image")
    }

    /// The agent image's files: `usr/bin/{cilium-agent, cilium-cni, cilium-dbg,
    /// cilium-operator-generic}`, `clang/` (the release's compiler) and `bpf` (its sources).
    pub fn agent(&self) -> PathBuf {
        self.dir.join("agent")
    }
}

/// CoreDNS (tests/components/coredns).
///
/// # Errors
/// When it is not built.
pub fn coredns() -> Result<PathBuf, String> {
    let p = tools_dir().join("coredns/coredns");
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!(
            "CoreDNS is not built at {} (run scripts/install-test-deps)",
            p.display()
        ))
    }
}

/// The Cilium release `version` (`1.20.0`).
///
/// # Panics
/// When it is not installed.
pub fn cilium(version: &str) -> Cilium {
    installed_cilium(version).unwrap_or_else(|| {
        tools::missing(&format!(
            "Cilium {version} in {}",
            tools_dir().join("cilium").display()
        ))
    })
}

/// The Cilium release `version` if it is installed (the kubelet asks this of every image it
/// is given: only Cilium's images have a release behind them).
pub fn installed_cilium(version: &str) -> Option<Cilium> {
    let dir = tools_dir().join("cilium").join(format!("v{version}"));
    let ok = dir.join("chart/Chart.yaml").is_file()
        && dir.join("image/usr/bin/clustermesh-apiserver").is_file()
        && dir.join("agent/usr/bin/cilium-agent").is_file()
        && dir.join("agent/usr/bin/cilium-health-responder").is_file();
    ok.then(|| Cilium {
        version: version.into(),
        dir,
    })
}

/// The Cilium chart of `version` alone (`.tools/cilium-charts/v<version>`, a link into the Go
/// module cache): the releases the offline chart tests read but the lab does not run.
///
/// # Panics
/// When it is not installed.
pub fn cilium_chart(version: &str) -> PathBuf {
    let dir = tools_dir()
        .join("cilium-charts")
        .join(format!("v{version}"));
    if dir.join("Chart.yaml").is_file() {
        dir
    } else {
        tools::missing(&format!("the Cilium {version} chart at {}", dir.display()))
    }
}

/// The GitOps tests' components: the Argo CD and Flux CRDs (links into the Go module cache) and
/// `appset-expand` (tests/components/main/cmd/appset-expand).
#[derive(Debug, Clone)]
pub struct GitOps {
    /// `.tools/crds`: one file per CRD.
    pub crds: PathBuf,
    /// The ApplicationSet expander.
    pub expand: PathBuf,
}

/// The CRD files install-test-deps links into `.tools/crds`.
pub const GITOPS_CRDS: [&str; 7] = [
    "application-crd.yaml",
    "applicationset-crd.yaml",
    "appproject-crd.yaml",
    "helm.toolkit.fluxcd.io_helmreleases.yaml",
    "source.toolkit.fluxcd.io_gitrepositories.yaml",
    "source.toolkit.fluxcd.io_helmrepositories.yaml",
    "kustomize.toolkit.fluxcd.io_kustomizations.yaml",
];

/// The GitOps components.
///
/// # Panics
/// When one is missing.
pub fn gitops() -> GitOps {
    let g = GitOps {
        crds: tools_dir().join("crds"),
        expand: tools_dir().join("k8s/appset-expand"),
    };
    let mut missing: Vec<PathBuf> = GITOPS_CRDS.iter().map(|f| g.crds.join(f)).collect();
    missing.push(g.expand.clone());
    missing.retain(|p| !p.is_file());
    if !missing.is_empty() {
        tools::missing(
            &missing
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        );
    }
    g
}

/// Flux's controllers (tests/components/flux) and their CRDs.
#[derive(Debug, Clone)]
pub struct Flux {
    /// `.tools/flux`: `bin/{source,kustomize,helm}-controller`, `crds-<controller>/`.
    pub dir: PathBuf,
}

/// The Flux controllers the lab runs, in the order they start.
pub const FLUX_CONTROLLERS: [&str; 3] = [
    "source-controller",
    "kustomize-controller",
    "helm-controller",
];

impl Flux {
    /// A controller's binary.
    pub fn bin(&self, controller: &str) -> PathBuf {
        self.dir.join("bin").join(controller)
    }

    /// Every CRD file of the three controllers.
    pub fn crd_files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for c in FLUX_CONTROLLERS {
            if let Ok(rd) = std::fs::read_dir(self.dir.join(format!("crds-{c}"))) {
                out.extend(rd.flatten().map(|e| e.path()));
            }
        }
        out.sort();
        out
    }
}

/// The Flux controllers.
///
/// # Panics
/// When one of them or their CRDs is missing.
pub fn flux() -> Flux {
    let f = Flux {
        dir: tools_dir().join("flux"),
    };
    let mut missing: Vec<String> = FLUX_CONTROLLERS
        .iter()
        .map(|c| f.bin(c))
        .filter(|p| !p.is_file())
        .map(|p| p.display().to_string())
        .collect();
    if f.crd_files().len() < 8 {
        missing.push(format!("{}/crds-*", f.dir.display()));
    }
    if !missing.is_empty() {
        tools::missing(&missing.join(", "));
    }
    f
}

/// Argo CD (tests/components/argocd): its one binary and its install manifests.
#[derive(Debug, Clone)]
pub struct ArgoCd {
    /// `.tools/argocd`: `bin/cmd`, `manifests/` (the module's).
    pub dir: PathBuf,
}

impl ArgoCd {
    /// The binary (its role follows `ARGOCD_BINARY_NAME`).
    pub fn bin(&self) -> PathBuf {
        self.dir.join("bin/cmd")
    }

    /// The CRD files (Application, ApplicationSet, AppProject).
    pub fn crd_files(&self) -> Vec<PathBuf> {
        [
            "application-crd.yaml",
            "applicationset-crd.yaml",
            "appproject-crd.yaml",
        ]
        .iter()
        .map(|f| self.dir.join("manifests/crds").join(f))
        .collect()
    }

    /// The image's `/usr/local/bin` scripts (`git-verify-wrapper.sh`, `gpg-wrapper.sh`).
    pub fn scripts(&self) -> PathBuf {
        self.dir.join("usr/local/bin")
    }

    /// The default argocd-cm of its install manifests.
    pub fn argocd_cm(&self) -> PathBuf {
        self.dir.join("manifests/base/config/argocd-cm.yaml")
    }
}

/// Argo CD and redis-server.
///
/// # Panics
/// When one is missing.
pub fn argocd() -> ArgoCd {
    let a = ArgoCd {
        dir: tools_dir().join("argocd"),
    };
    let mut missing: Vec<String> = a
        .crd_files()
        .into_iter()
        .chain([
            a.bin(),
            a.argocd_cm(),
            a.scripts().join("git-verify-wrapper.sh"),
        ])
        .filter(|p| !p.is_file())
        .map(|p| p.display().to_string())
        .collect();
    if !Path::new("/usr/bin/redis-server").is_file() {
        missing.push("redis-server".into());
    }
    if !missing.is_empty() {
        tools::missing(&missing.join(", "));
    }
    a
}
