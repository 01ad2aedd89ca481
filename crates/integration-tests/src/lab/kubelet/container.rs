//! How a container runs here. Container images cannot run on this machine (no container
//! runtime), so an image comes to one of:
//!
//! - **its real program**: Cilium's own binaries of the release the image tag names (agent,
//!   operator, clustermesh-apiserver, KVStoreMesh, built from the pinned Go modules), etcd for
//!   Cilium 1.14's etcd image, CoreDNS for the kube-dns pods; the image's binaries are overlaid
//!   on `/usr/bin`;
//! - **a stand-in for the image's server** where the image is not ours to build: `lab-nginx`
//!   answers what the pod's nginx configuration says, `lab-ingress` forwards as ingress-nginx's
//!   controller would (both src/bin; docs/testing.md);
//! - **the node's tools** for the pod's own command (curl images run `sh -c …`; `kubectl exec`
//!   then runs the machine's real `curl` inside the pod);
//! - **a pause process** for anything else, so that the pod is Running as kubelet would show it.
//!
//! Each container gets a root of its own (see [`entry_script`]): the machine's `/usr` and an
//! overlay of its `/etc`, fresh `/run`, `/tmp`, `/var/lib`, a `/proc` of its PID namespace, a
//! `/sys` of its network namespace, and its volumes at their `mountPath`s, with the machine's
//! tree at `/mnt/host` for the binaries that stand in for the image.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod, Volume};

use super::super::Cluster;
use super::super::components;
use super::super::node::NodeHost;
use super::super::proc::ProcSpec;
use super::lab_bin;
use super::volumes::{Lookups, container_env, expand, write_if_changed};

/// Where the machine's tree is inside a container.
pub(super) const HOST: &str = "/mnt/host";

/// What an image comes to (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Image {
    /// A tree of the image's files (its `usr/bin`, `var/lib`), overlaid in the container.
    Files {
        root: PathBuf,
        /// The release's clang and llvm tools, first on PATH (the agent compiles its datapath).
        tools: Option<PathBuf>,
        /// The release's BPF sources, at `/var/lib/cilium/bpf`.
        bpf: Option<PathBuf>,
    },
    /// A program standing in for the image's entrypoint.
    Entry(PathBuf),
    /// The node's tools run the pod's own command.
    Plain,
}

/// `quay.io/cilium/clustermesh-apiserver:v1.20.0@sha256:…` → (`quay.io/cilium/clustermesh-apiserver`, `v1.20.0`).
pub(super) fn repo_tag(image: &str) -> Option<(&str, &str)> {
    image.split('@').next()?.rsplit_once(':')
}

/// The Cilium release an image of Cilium's names (`1.20.0`).
pub(super) fn cilium_release(image: &str) -> Option<String> {
    let (repo, tag) = repo_tag(image)?;
    repo.contains("/cilium/")
        .then(|| tag.trim_start_matches('v').to_owned())
}

/// What `image` comes to here.
pub(super) fn resolve(image: &str) -> Result<Image, String> {
    let repo = repo_tag(image).map_or(image, |(r, _)| r);
    let last = repo.rsplit('/').next().unwrap_or(repo);
    if let Some(version) = cilium_release(image) {
        let release = components::installed_cilium(&version)
            .ok_or_else(|| format!("no Cilium {version} in .tools (image {image})"))?;
        return Ok(match last {
            "clustermesh-apiserver" | "kvstoremesh" => Image::Files {
                root: release.image(),
                tools: None,
                bpf: None,
            },
            // cilium, operator-generic (and the other operator flavours' names).
            _ => {
                let agent = release.agent();
                if !agent.join("usr/bin/cilium-agent").exists() {
                    return Err(format!(
                        "Cilium {version}'s agent is not built in {} (run scripts/install-test-deps)",
                        agent.display()
                    ));
                }
                Image::Files {
                    root: agent.clone(),
                    tools: Some(agent.join("clang")),
                    bpf: Some(agent.join("bpf")),
                }
            }
        });
    }
    Ok(match last {
        "etcd" => Image::Files {
            root: components::tools_dir().join("images/etcd"),
            tools: None,
            bpf: None,
        },
        "coredns" => Image::Entry(components::coredns()?),
        "nginx" => Image::Entry(lab_bin("lab-nginx")),
        "controller" if repo.contains("ingress-nginx") => Image::Entry(lab_bin("lab-ingress")),
        _ => Image::Plain,
    })
}

/// What stands in for a container without a command of an image the lab does not know.
const PAUSE: &str = "trap 'exit 0' TERM INT; while :; do sleep 3600; done";

/// The argv of container `k` of image `img`, with its environment's `$(VAR)`s expanded.
fn argv(k: &Container, img: &Image, env: &[(String, String)]) -> Vec<String> {
    let args = k.args.iter().flatten().map(|a| expand(a, env));
    let command: Vec<String> = k.command.iter().flatten().map(|a| expand(a, env)).collect();
    match img {
        Image::Entry(p) if command.is_empty() => std::iter::once(format!("{HOST}{}", p.display()))
            .chain(args)
            .collect(),
        Image::Entry(p) => {
            // An explicit command naming the image's program (`/coredns`) runs ours.
            let mut v: Vec<String> = command;
            v[0] = format!("{HOST}{}", p.display());
            v.extend(args);
            v
        }
        _ if command.is_empty() => vec!["sh".into(), "-c".into(), PAUSE.into()],
        _ => command.into_iter().chain(args).collect(),
    }
}

/// Everything [`spec`] needs about the pod.
pub(super) struct PodCtx<'a> {
    pub(super) cluster: &'a Cluster,
    pub(super) node: &'a NodeHost,
    pub(super) pod: &'a Pod,
    pub(super) netns: &'a str,
    pub(super) dir: &'a Path,
    pub(super) cgroup: &'a Path,
    pub(super) volumes: &'a [Volume],
    pub(super) lookups: &'a Lookups,
    pub(super) resolv: Option<&'a Path>,
}

/// The process of container `k`: its command (or the image's stand-in) inside a root prepared
/// by its entry script (`<pod dir>/enter-<container>.sh`, which `kubectl exec` uses too), in
/// the pod's network namespace and cgroup, with a PID namespace of its own.
pub(super) fn spec(x: &PodCtx<'_>, k: &Container) -> Result<ProcSpec, String> {
    let image = k.image.as_deref().unwrap_or_default();
    let img = resolve(image)?;
    let mut env = container_env(x.pod, x.cluster, &x.node.ip.to_string(), k, x.lookups);
    if let Image::Files { tools: Some(t), .. } = &img
        && let Some(path) = env.iter_mut().find(|(n, _)| n == "PATH")
    {
        path.1 = format!("{HOST}{}:{}", t.display(), path.1);
    }
    // The chart's `status.podIP` references resolve to the address CNI gave.
    let argv = argv(k, &img, &env);
    let script = x.dir.join(format!("enter-{}.sh", k.name));
    // 0700: the script carries the container's environment, which may hold Secret values.
    write_if_changed(&script, entry_script(x, k, &img, &env).as_bytes(), 0o700)?;
    let mut full = vec![
        "unshare".into(),
        "--mount".into(),
        "--propagation".into(),
        "private".into(),
        "--pid".into(),
        "--fork".into(),
        "--kill-child".into(),
        "--mount-proc".into(),
        "--".into(),
        "/bin/sh".into(),
        script.display().to_string(),
    ];
    full.extend(argv);
    let mut spec = ProcSpec::new(&k.name, x.netns, x.dir, full);
    spec.env = env;
    spec.log = x.dir.join(format!("{}.log", k.name));
    Ok(spec)
}

pub(super) fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The script that builds a container's root in a fresh mount namespace and runs `"$@"` in
/// it (see the module docs). Volumes: Secrets, ConfigMaps, projected and emptyDir volumes from
/// the pod's directory, hostPath volumes from the node's ([`NodeHost::host_path`]).
fn entry_script(x: &PodCtx<'_>, k: &Container, img: &Image, env: &[(String, String)]) -> String {
    let host = |p: &Path| sh_quote(&format!("{HOST}{}", p.display()));
    let mut s = String::from("#!/bin/sh\n# Written by the lab's kubelet stand-in.\nset -e\n");
    // The container's environment, for `kubectl exec` too: a runtime runs exec'd processes
    // with the container's environment (KUBERNETES_SERVICE_HOST, the spec's env, …).
    for (name, value) in env {
        if !name.is_empty()
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && !name.as_bytes()[0].is_ascii_digit()
        {
            s.push_str(&format!("export {name}={}\n", sh_quote(value)));
        }
    }
    s.push_str(&format!(
        "echo 0 > {}\n",
        sh_quote(&x.cgroup.join("cgroup.procs").display().to_string())
    ));
    s.push_str(concat!(
        "mount -t tmpfs -o mode=755 tmpfs /mnt\n",
        "mkdir -p /mnt/host /mnt/r /mnt/up/etc /mnt/wk/etc\n",
        "mount --rbind / /mnt/host\n",
        "R=/mnt/r\n",
        "mount -t tmpfs -o mode=755 tmpfs $R\n",
        "cd $R\n",
        "mkdir -p usr etc opt var/lib var/log var/cache run tmp proc sys dev root home mnt/host host\n",
        "mount --rbind /mnt/host/usr usr\n",
        "for l in bin sbin lib lib32 lib64 libx32; do [ -e /mnt/host/$l ] && ln -s usr/$l $l || true; done\n",
        "ln -s ../run var/run\n",
        "mount -t overlay overlay -o lowerdir=/mnt/host/etc,upperdir=/mnt/up/etc,workdir=/mnt/wk/etc etc\n",
        "mount --rbind /mnt/host/dev dev\n",
        "mount -t proc proc proc\n",
        "mount -t sysfs sysfs sys 2>/dev/null || true\n",
        "chmod 1777 tmp\n",
        "mount --rbind /mnt/host mnt/host\n",
    ));
    if let Image::Files { root, bpf, .. } = img {
        for d in ["usr/bin", "usr/local/bin"] {
            if root.join(d).is_dir() {
                s.push_str(&format!(
                    "mkdir -p /mnt/up/{d}\nmount -t overlay overlay -o lowerdir={}:$R/{d} $R/{d}\n",
                    host(&root.join(d))
                ));
            }
        }
        let lib = root.join("var/lib");
        if lib.is_dir() {
            s.push_str(&format!("cp -a {}/. $R/var/lib/\n", host(&lib)));
        }
        if let Some(b) = bpf {
            // The agent writes its feature probes' headers into the BPF sources
            // (bpf/include/bpf/features*.h): an overlay keeps those writes in the container
            // and the sources (the Go module cache) as they were downloaded.
            let src = std::fs::canonicalize(b).unwrap_or_else(|_| b.clone());
            s.push_str(&format!(
                "mkdir -p $R/var/lib/cilium/bpf /mnt/up/bpf /mnt/wk/bpf\nmount -t overlay overlay -o lowerdir={},upperdir=/mnt/up/bpf,workdir=/mnt/wk/bpf $R/var/lib/cilium/bpf\n",
                host(&src)
            ));
        }
    }
    if let Some(r) = x.resolv {
        s.push_str(&format!("mount --bind {} $R/etc/resolv.conf\n", host(r)));
    }
    s.push_str(&format!(
        "mount --bind {} $R/etc/hosts\n",
        host(&x.dir.join("hosts"))
    ));
    let known: BTreeSet<&str> = x.volumes.iter().map(|v| v.name.as_str()).collect();
    let mut mounts: Vec<_> = k
        .volume_mounts
        .iter()
        .flatten()
        .filter(|m| known.contains(m.name.as_str()))
        .collect();
    mounts.sort_by_key(|m| m.mount_path.len());
    for m in mounts {
        let Some(v) = x.volumes.iter().find(|v| v.name == m.name) else {
            continue;
        };
        let target = m.mount_path.trim_end_matches('/');
        if target.starts_with("/proc") {
            s.push_str(&format!(
                "echo 'kubelet stand-in: mountPath {target} inside /proc not supported' >&2\n"
            ));
            continue;
        }
        let mut src = match &v.host_path {
            Some(hp) => x.node.host_path(&hp.path),
            None => x.dir.join("volumes").join(&m.name),
        };
        if let Some(hp) = &v.host_path {
            // hostPath types: create what the type says may be created.
            let is_file = matches!(hp.type_.as_deref(), Some("FileOrCreate" | "File"))
                || hp.path.ends_with(".lock");
            if is_file {
                if let Some(p) = src.parent() {
                    let _ = std::fs::create_dir_all(p);
                }
                let _ = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&src);
            } else {
                let _ = std::fs::create_dir_all(&src);
            }
        }
        let sub = m.sub_path.clone().unwrap_or_default();
        if !sub.is_empty() {
            src = src.join(&sub);
        }
        let (src, t) = (host(&src), format!("\"$R\"{}", sh_quote(target)));
        // Recursive: a node's /var/run/cilium holds the cgroup2 mount the agent needs.
        s.push_str(&format!(
            "if [ -d {src} ]; then mkdir -p {t}; else mkdir -p \"$(dirname {t})\"; [ -e {t} ] || touch {t}; fi\nmount --rbind {src} {t}\n"
        ));
        if m.read_only == Some(true) {
            s.push_str(&format!("mount -o remount,bind,ro {t}\n"));
        }
    }
    let wd = k.working_dir.clone().unwrap_or_else(|| "/".into());
    // A cgroup namespace rooted at the pod's cgroup (the node's for the agent): whatever a
    // container mounts as cgroup2 or attaches to "the root" stays within the node.
    s.push_str(&format!(
        "cd /\nexec unshare --cgroup chroot $R /bin/sh -c 'cd \"$1\" && shift && exec \"$@\"' sh {} \"$@\"\n",
        sh_quote(&wd)
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_resolve_to_programs_or_stand_ins() {
        assert_eq!(
            repo_tag("quay.io/cilium/clustermesh-apiserver:v1.20.0@sha256:abc"),
            Some(("quay.io/cilium/clustermesh-apiserver", "v1.20.0"))
        );
        assert_eq!(
            cilium_release("quay.io/cilium/operator-generic:v1.16.19@sha256:abc").as_deref(),
            Some("1.16.19")
        );
        assert_eq!(cilium_release("nginx:1.27-alpine"), None);
        assert_eq!(resolve("curlimages/curl:8.11.1").unwrap(), Image::Plain);
        assert_eq!(resolve("busybox").unwrap(), Image::Plain);
    }
}
