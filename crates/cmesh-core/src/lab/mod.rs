//! `cmesh lab`: the clusters of a mesh, created for people who have none, as the reference
//! article does (kubeadm, no CNI, unique pod and service ranges, no kube-proxy when Cilium
//! replaces it) and with kind.
//!
//! This module owns what is decided from mesh.yaml alone: each provider's configuration files
//! ([`kind_config`], [`kubeadm_config`], [`cloud_init`]), the commands that create and remove
//! the clusters ([`plan`]), and the edits that point mesh.yaml at what was created
//! ([`edit::apply`]). The edge runs the commands and reads back addresses.

pub mod edit;

use serde_json::{Value as Json, json};

use crate::spec::{Cluster, MeshSpec};
use crate::yaml::to_yaml;

/// Where the clusters run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// kind: Kubernetes in Docker or Podman containers.
    Kind,
    /// libvirt/KVM virtual machines with kubeadm (the article's lab).
    Libvirt,
}

impl Provider {
    /// `kind` / `libvirt`.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Kind => "kind",
            Provider::Libvirt => "libvirt",
        }
    }
}

/// The label, name prefix and state cmesh gives what `lab up` creates, so `down` removes only
/// that: kind clusters are named after the mesh's clusters; their shared container network and
/// the libvirt domains carry the mesh's name.
pub fn network_name(spec: &MeshSpec) -> String {
    format!("cmesh-{}", spec.name)
}

/// A libvirt domain's name: `cmesh-<mesh>-<cluster>`.
pub fn domain_name(spec: &MeshSpec, cluster: &Cluster) -> String {
    format!("cmesh-{}-{}", spec.name, cluster.name)
}

/// Whether `cluster`'s effective values replace kube-proxy (`kubeProxyReplacement: true`, or
/// the 1.14/1.15 word `strict`): then the cluster is created without it, as the article does.
pub fn replaces_kube_proxy(spec: &MeshSpec, cluster: &Cluster) -> bool {
    let v = cluster
        .values
        .get(&["kubeProxyReplacement"])
        .or_else(|| spec.cilium.values.get(&["kubeProxyReplacement"]));
    match v {
        Some(v) => v.as_bool() == Some(true) || v.as_str() == Some("strict"),
        None => false,
    }
}

fn joined(nets: &[ipnet::IpNet]) -> String {
    nets.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn ip_family(cluster: &Cluster) -> &'static str {
    let v4 = cluster
        .pod_cidrs
        .iter()
        .any(|n| matches!(n, ipnet::IpNet::V4(_)));
    let v6 = cluster
        .pod_cidrs
        .iter()
        .any(|n| matches!(n, ipnet::IpNet::V6(_)));
    match (v4, v6) {
        (true, true) => "dual",
        (false, true) => "ipv6",
        _ => "ipv4",
    }
}

fn yaml(v: &Json) -> String {
    // A JSON value of strings, numbers, booleans, maps and lists always has a YAML form.
    to_yaml(v).expect("JSON is representable as YAML")
}

/// kind's cluster configuration (`kind.x-k8s.io/v1alpha4`) for `cluster`: its pod and service
/// ranges, no default CNI (Cilium is installed by `cmesh apply`), no kube-proxy when Cilium
/// replaces it, one control-plane node and `workers` workers.
pub fn kind_config(spec: &MeshSpec, cluster: &Cluster, workers: u8) -> String {
    let mut networking = json!({
        "ipFamily": ip_family(cluster),
        "podSubnet": joined(&cluster.pod_cidrs),
        "serviceSubnet": joined(&cluster.service_cidrs),
        "disableDefaultCNI": true,
    });
    if replaces_kube_proxy(spec, cluster) {
        networking["kubeProxyMode"] = json!("none");
    }
    let mut nodes = vec![json!({"role": "control-plane"})];
    nodes.extend((0..workers).map(|_| json!({"role": "worker"})));
    let config = json!({
        "kind": "Cluster",
        "apiVersion": "kind.x-k8s.io/v1alpha4",
        "name": cluster.name,
        "networking": networking,
        "nodes": nodes,
    });
    format!(
        "# kind cluster {} of mesh {} (written by cmesh lab up; kind create cluster --config)\n{}",
        cluster.name,
        spec.name,
        yaml(&config)
    )
}

/// What a VM's kubeadm needs beyond mesh.yaml.
#[derive(Debug, Clone)]
pub struct KubeadmOptions {
    /// `v1.36.3`.
    pub kubernetes_version: String,
}

/// The host name the API server certificate and the agents use for `cluster`: mesh.yaml's
/// `apiServer` host, else `<cluster>.<mesh>.lab`.
pub fn api_host(spec: &MeshSpec, cluster: &Cluster) -> String {
    cluster
        .api_server
        .as_ref()
        .map(|a| a.host.to_string())
        .unwrap_or_else(|| format!("{}.{}.lab", cluster.name, spec.name))
}

/// kubeadm's `InitConfiguration` and `ClusterConfiguration` (`kubeadm.k8s.io/v1beta4`) for
/// `cluster`'s VM: mesh.yaml's pod and service ranges, the API server's host name as the
/// control-plane endpoint and a certificate name, and the kube-proxy addon skipped when Cilium
/// replaces it (the article's `--skip-phases=addon/kube-proxy`).
pub fn kubeadm_config(spec: &MeshSpec, cluster: &Cluster, opts: &KubeadmOptions) -> String {
    let host = api_host(spec, cluster);
    let port = cluster.api_server.as_ref().map_or(6443, |a| a.port);
    let mut init = json!({
        "apiVersion": "kubeadm.k8s.io/v1beta4",
        "kind": "InitConfiguration",
        "localAPIEndpoint": {"bindPort": port},
        "nodeRegistration": {
            "name": cluster.name,
            "criSocket": "unix:///run/containerd/containerd.sock",
        },
    });
    if replaces_kube_proxy(spec, cluster) {
        init["skipPhases"] = json!(["addon/kube-proxy"]);
    }
    let cluster_config = json!({
        "apiVersion": "kubeadm.k8s.io/v1beta4",
        "kind": "ClusterConfiguration",
        "clusterName": cluster.name,
        "kubernetesVersion": opts.kubernetes_version,
        "controlPlaneEndpoint": format!("{host}:{port}"),
        "networking": {
            "podSubnet": joined(&cluster.pod_cidrs),
            "serviceSubnet": joined(&cluster.service_cidrs),
            "dnsDomain": "cluster.local",
        },
        "apiServer": {"certSANs": [host]},
    });
    format!("{}---\n{}", yaml(&init), yaml(&cluster_config))
}

/// The Kubernetes package repository's minor line for `v1.36.3`: `v1.36`.
fn minor_line(version: &str) -> String {
    let v = version.trim_start_matches('v');
    let mut it = v.split('.');
    format!("v{}.{}", it.next().unwrap_or("1"), it.next().unwrap_or("0"))
}

/// The user cloud-init creates on every VM for `lab up` to log in with (SSH key only, sudo
/// without a password): how the admin kubeconfig is fetched.
pub const LAB_USER: &str = "cmesh";

/// What a VM's cloud-init needs beyond mesh.yaml.
#[derive(Debug, Clone)]
pub struct CloudInitOptions {
    /// kubeadm's settings.
    pub kubeadm: KubeadmOptions,
    /// Public SSH keys allowed to log in as [`LAB_USER`] (how `lab up` fetches the admin
    /// kubeconfig).
    pub ssh_keys: Vec<String>,
}

/// cloud-init user-data for `cluster`'s VM: kernel modules and sysctls for Kubernetes,
/// containerd with the systemd cgroup driver, kubeadm/kubelet/kubectl from pkgs.k8s.io at the
/// chosen minor, then `kubeadm init` with [`kubeadm_config`]. Runs once, on first boot.
pub fn cloud_init(spec: &MeshSpec, cluster: &Cluster, opts: &CloudInitOptions) -> String {
    let line = minor_line(&opts.kubeadm.kubernetes_version);
    let repo = format!("https://pkgs.k8s.io/core:/stable:/{line}/deb/");
    let keyring = "/etc/apt/keyrings/kubernetes-apt-keyring.gpg";
    let host = api_host(spec, cluster);
    let config = json!({
        "hostname": cluster.name,
        "fqdn": host,
        "manage_etc_hosts": true,
        "users": [
            "default",
            {
                "name": LAB_USER,
                "sudo": "ALL=(ALL) NOPASSWD:ALL",
                "shell": "/bin/bash",
                "lock_passwd": true,
                "ssh_authorized_keys": opts.ssh_keys,
            },
        ],
        "package_update": true,
        "packages": ["containerd", "apt-transport-https", "ca-certificates", "curl", "gpg"],
        "write_files": [
            {"path": "/etc/modules-load.d/kubernetes.conf", "content": "overlay\nbr_netfilter\n"},
            {
                "path": "/etc/sysctl.d/90-kubernetes.conf",
                "content": "net.ipv4.ip_forward = 1\nnet.ipv6.conf.all.forwarding = 1\nnet.bridge.bridge-nf-call-iptables = 1\n",
            },
            {
                "path": "/etc/cmesh/kubeadm.yaml",
                "permissions": "0600",
                "content": kubeadm_config(spec, cluster, &opts.kubeadm),
            },
        ],
        "runcmd": [
            ["modprobe", "overlay"],
            ["modprobe", "br_netfilter"],
            ["sysctl", "--system"],
            ["swapoff", "-a"],
            ["sh", "-c", "mkdir -p /etc/containerd && containerd config default | sed 's/SystemdCgroup = false/SystemdCgroup = true/' > /etc/containerd/config.toml && systemctl restart containerd"],
            ["sh", "-c", format!("mkdir -p /etc/apt/keyrings && curl -fsSL {repo}Release.key | gpg --dearmor -o {keyring}")],
            ["sh", "-c", format!("echo 'deb [signed-by={keyring}] {repo} /' > /etc/apt/sources.list.d/kubernetes.list")],
            ["sh", "-c", "apt-get update && apt-get install -y kubelet kubeadm kubectl && apt-mark hold kubelet kubeadm kubectl"],
            ["kubeadm", "init", "--config", "/etc/cmesh/kubeadm.yaml"],
        ],
    });
    format!("#cloud-config\n{}", yaml(&config))
}

/// The libvirt lab's network: one NAT network per mesh with a fixed address per VM (a DHCP
/// reservation by MAC), so every address is known before a VM boots, and DNS entries for the
/// API server and clustermesh host names, so the VMs reach each other by the names mesh.yaml
/// uses, as the article's lab does through its `/etc/hosts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabNetwork {
    /// The range (`192.168.150.0/24`): the host is `.1`, cluster *i* (in mesh.yaml order) is
    /// `.10 + i`.
    pub cidr: ipnet::Ipv4Net,
}

/// Why a lab cannot be laid out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabError {
    /// The lab network overlaps a cluster's pod or service range.
    #[error("the lab network {network} overlaps {cluster}'s {what} {range}")]
    Overlap {
        /// The lab network.
        network: String,
        /// The cluster.
        cluster: String,
        /// `pod range` / `service range`.
        what: &'static str,
        /// Its range.
        range: String,
    },
    /// The lab network has too few addresses for the mesh.
    #[error("the lab network {network} has room for {room} VMs; the mesh has {clusters} clusters")]
    TooSmall {
        /// The lab network.
        network: String,
        /// VMs it can hold.
        room: usize,
        /// Clusters.
        clusters: usize,
    },
}

impl LabNetwork {
    /// Checks that the network can hold every cluster of `spec` and overlaps none of their
    /// ranges (a VM whose address is inside its own pod range breaks routing).
    ///
    /// # Errors
    /// [`LabError`].
    pub fn check(&self, spec: &MeshSpec) -> Result<(), LabError> {
        let room = self.cidr.hosts().count().saturating_sub(10);
        if spec.clusters.len() > room {
            return Err(LabError::TooSmall {
                network: self.cidr.to_string(),
                room,
                clusters: spec.clusters.len(),
            });
        }
        let mine = ipnet::IpNet::V4(self.cidr);
        for c in &spec.clusters {
            for (what, nets) in [
                ("pod range", &c.pod_cidrs),
                ("service range", &c.service_cidrs),
            ] {
                if let Some(n) = nets.iter().find(|n| n.contains(&mine) || mine.contains(*n)) {
                    return Err(LabError::Overlap {
                        network: self.cidr.to_string(),
                        cluster: c.name.clone(),
                        what,
                        range: n.to_string(),
                    });
                }
            }
        }
        Ok(())
    }

    /// The host's address on the network (`.1`), libvirt's gateway and DNS server.
    pub fn gateway(&self) -> std::net::Ipv4Addr {
        nth(self.cidr, 1)
    }

    /// The VM of the `index`-th cluster: `.10 + index`.
    pub fn vm_address(&self, index: usize) -> std::net::Ipv4Addr {
        nth(
            self.cidr,
            10 + u32::try_from(index).unwrap_or(u32::MAX - 10),
        )
    }
}

fn nth(net: ipnet::Ipv4Net, n: u32) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::from(u32::from(net.network()).saturating_add(n))
}

/// The `index`-th cluster's VM MAC address: libvirt/QEMU's `52:54:00` prefix, a byte from the
/// mesh's name (so two labs' VMs differ) and the index.
pub fn vm_mac(spec: &MeshSpec, index: usize) -> String {
    let h = spec
        .name
        .bytes()
        .fold(0u8, |a, b| a.wrapping_mul(31).wrapping_add(b));
    let i = u16::try_from(index).unwrap_or(u16::MAX);
    format!("52:54:00:{h:02x}:{:02x}:{:02x}", i >> 8, i & 0xff)
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// The host names that must resolve to `cluster`'s VM: its API server host and its
/// clustermesh address, where they are names (not IPs).
pub fn vm_host_names(spec: &MeshSpec, cluster: &Cluster) -> Vec<String> {
    // Once `lab up` has pointed mesh.yaml at the VMs' addresses, the hosts are IPs: no names.
    let mut names: Vec<String> = Some(api_host(spec, cluster))
        .filter(|h| h.parse::<std::net::IpAddr>().is_err())
        .into_iter()
        .collect();
    if let Some(crate::spec::Host::Dns(d)) = &cluster.clustermesh.address
        && !names.contains(d)
    {
        names.push(d.clone());
    }
    names
}

/// libvirt's network XML (`virsh net-define`) for the lab: NAT, DHCP with one reservation per
/// cluster, DNS names per VM.
pub fn network_xml(spec: &MeshSpec, net: &LabNetwork) -> String {
    let name = network_name(spec);
    let mut x = String::new();
    x.push_str(&format!(
        "<!-- cmesh lab network of mesh {} (written by cmesh lab up; virsh net-define) -->\n",
        xml_escape(&spec.name)
    ));
    x.push_str(&format!(
        "<network>\n  <name>{}</name>\n",
        xml_escape(&name)
    ));
    x.push_str("  <forward mode=\"nat\"/>\n");
    x.push_str("  <dns>\n");
    for (i, c) in spec.clusters.iter().enumerate() {
        x.push_str(&format!("    <host ip=\"{}\">\n", net.vm_address(i)));
        for h in vm_host_names(spec, c) {
            x.push_str(&format!("      <hostname>{}</hostname>\n", xml_escape(&h)));
        }
        x.push_str("    </host>\n");
    }
    x.push_str("  </dns>\n");
    x.push_str(&format!(
        "  <ip address=\"{}\" netmask=\"{}\">\n    <dhcp>\n",
        net.gateway(),
        net.cidr.netmask()
    ));
    for (i, c) in spec.clusters.iter().enumerate() {
        x.push_str(&format!(
            "      <host mac=\"{}\" name=\"{}\" ip=\"{}\"/>\n",
            vm_mac(spec, i),
            xml_escape(&c.name),
            net.vm_address(i)
        ));
    }
    x.push_str("    </dhcp>\n  </ip>\n</network>\n");
    x
}

/// One command of a plan, for one cluster (or for the mesh).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The cluster, or `None` for the mesh's shared parts.
    pub cluster: Option<String>,
    /// What the step does, for the progress display (`create cluster`).
    pub phase: &'static str,
    /// The command and its arguments.
    pub argv: Vec<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
}

/// What [`plan`] needs to know about the machine and the options.
#[derive(Debug, Clone)]
pub struct PlanInput<'a> {
    /// The provider.
    pub provider: Provider,
    /// `docker` or `podman` (kind).
    pub engine: &'a str,
    /// Clusters that exist already (kind: `kind get clusters`; libvirt: defined domains).
    pub existing: &'a [String],
    /// Whether the shared network exists.
    pub network_exists: bool,
    /// Where each cluster's files go: `<dir>/<cluster>/` (written by the edge before running).
    pub state_dir: &'a str,
    /// libvirt: the base image.
    pub image: Option<&'a str>,
    /// libvirt: memory (MiB) and vCPUs per VM.
    pub memory_mib: u32,
    /// libvirt: vCPUs.
    pub vcpus: u32,
    /// libvirt: the connection URI (`qemu:///system`).
    pub libvirt_uri: &'a str,
    /// libvirt: the lab network's IPv4 range (see [`LabNetwork`]).
    pub network: Option<&'a LabNetwork>,
}

/// The commands `lab up` runs for `clusters`, in order, leaving out what exists: idempotent by
/// construction, so `up` twice runs nothing the second time.
pub fn plan(spec: &MeshSpec, clusters: &[&Cluster], input: &PlanInput<'_>) -> Vec<Step> {
    let mut steps = Vec::new();
    let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
    let net = network_name(spec);
    match input.provider {
        Provider::Kind => {
            if !input.network_exists {
                steps.push(Step {
                    cluster: None,
                    phase: "create network",
                    argv: s(&[
                        input.engine,
                        "network",
                        "create",
                        "--label",
                        &format!("io.cmesh.mesh={}", spec.name),
                        &net,
                    ]),
                    env: Vec::new(),
                });
            }
            for c in clusters {
                if input.existing.contains(&c.name) {
                    continue;
                }
                let dir = format!("{}/{}", input.state_dir, c.name);
                let mut env = vec![("KIND_EXPERIMENTAL_DOCKER_NETWORK".to_owned(), net.clone())];
                if input.engine == "podman" {
                    env.push(("KIND_EXPERIMENTAL_PROVIDER".to_owned(), "podman".to_owned()));
                }
                steps.push(Step {
                    cluster: Some(c.name.clone()),
                    phase: "create cluster",
                    argv: s(&[
                        "kind",
                        "create",
                        "cluster",
                        "--name",
                        &c.name,
                        "--config",
                        &format!("{dir}/kind.yaml"),
                        "--kubeconfig",
                        &format!("{dir}/kubeconfig"),
                    ]),
                    env,
                });
            }
        }
        Provider::Libvirt => {
            let uri = input.libvirt_uri;
            if !input.network_exists {
                let xml = format!("{}/network.xml", input.state_dir);
                for (phase, args) in [
                    ("define network", vec!["net-define", xml.as_str()]),
                    ("start network", vec!["net-start", net.as_str()]),
                    ("autostart network", vec!["net-autostart", net.as_str()]),
                ] {
                    let mut argv = s(&["virsh", "--connect", uri]);
                    argv.extend(args.iter().map(|a| (*a).to_owned()));
                    steps.push(Step {
                        cluster: None,
                        phase,
                        argv,
                        env: Vec::new(),
                    });
                }
            }
            for c in clusters {
                let domain = domain_name(spec, c);
                if input.existing.contains(&domain) {
                    continue;
                }
                let dir = format!("{}/{}", input.state_dir, c.name);
                let image = input.image.unwrap_or("");
                let index = spec
                    .clusters
                    .iter()
                    .position(|x| x.name == c.name)
                    .unwrap_or(0);
                steps.push(Step {
                    cluster: Some(c.name.clone()),
                    phase: "create disk",
                    argv: s(&[
                        "qemu-img",
                        "create",
                        "-f",
                        "qcow2",
                        "-F",
                        "qcow2",
                        "-b",
                        image,
                        &format!("{dir}/disk.qcow2"),
                        "40G",
                    ]),
                    env: Vec::new(),
                });
                steps.push(Step {
                    cluster: Some(c.name.clone()),
                    phase: "create VM",
                    argv: s(&[
                        "virt-install",
                        "--connect",
                        uri,
                        "--name",
                        &domain,
                        "--metadata",
                        &format!(
                            "description=cmesh lab: mesh {} cluster {}",
                            spec.name, c.name
                        ),
                        "--memory",
                        &input.memory_mib.to_string(),
                        "--vcpus",
                        &input.vcpus.to_string(),
                        "--import",
                        "--disk",
                        &format!("path={dir}/disk.qcow2,format=qcow2,bus=virtio"),
                        "--cloud-init",
                        &format!("user-data={dir}/user-data.yaml"),
                        "--network",
                        &format!("network={net},mac={},model=virtio", vm_mac(spec, index)),
                        "--osinfo",
                        "detect=on,require=off",
                        "--graphics",
                        "none",
                        "--noautoconsole",
                    ]),
                    env: Vec::new(),
                });
            }
        }
    }
    steps
}

/// Whether a failure of `step` is harmless: stopping a VM or network that is not running
/// (`virsh destroy` of a shut-off domain fails), which `down` then deletes all the same.
pub fn may_fail(step: &Step) -> bool {
    matches!(step.phase, "stop VM" | "stop network")
}

/// The commands `lab down` runs: only what `up` creates (kind clusters named after the mesh's
/// clusters that exist, the mesh's labelled network; the mesh's `cmesh-<mesh>-` domains).
pub fn teardown(
    spec: &MeshSpec,
    clusters: &[&Cluster],
    input: &PlanInput<'_>,
    remove_network: bool,
) -> Vec<Step> {
    let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
    let mut steps = Vec::new();
    match input.provider {
        Provider::Kind => {
            for c in clusters.iter().filter(|c| input.existing.contains(&c.name)) {
                let mut env = Vec::new();
                if input.engine == "podman" {
                    env.push(("KIND_EXPERIMENTAL_PROVIDER".to_owned(), "podman".to_owned()));
                }
                steps.push(Step {
                    cluster: Some(c.name.clone()),
                    phase: "delete cluster",
                    argv: s(&["kind", "delete", "cluster", "--name", &c.name]),
                    env,
                });
            }
            if remove_network && input.network_exists {
                steps.push(Step {
                    cluster: None,
                    phase: "delete network",
                    argv: s(&[input.engine, "network", "rm", &network_name(spec)]),
                    env: Vec::new(),
                });
            }
        }
        Provider::Libvirt => {
            for c in clusters {
                let domain = domain_name(spec, c);
                if !input.existing.contains(&domain) {
                    continue;
                }
                steps.push(Step {
                    cluster: Some(c.name.clone()),
                    phase: "delete VM",
                    argv: s(&[
                        "virsh",
                        "--connect",
                        input.libvirt_uri,
                        "undefine",
                        &domain,
                        "--remove-all-storage",
                        "--nvram",
                    ]),
                    env: Vec::new(),
                });
                steps.insert(
                    steps.len() - 1,
                    Step {
                        cluster: Some(c.name.clone()),
                        phase: "stop VM",
                        argv: s(&["virsh", "--connect", input.libvirt_uri, "destroy", &domain]),
                        env: Vec::new(),
                    },
                );
            }
            if remove_network && input.network_exists {
                let net = network_name(spec);
                for (phase, verb) in [
                    ("stop network", "net-destroy"),
                    ("delete network", "net-undefine"),
                ] {
                    steps.push(Step {
                        cluster: None,
                        phase,
                        argv: s(&["virsh", "--connect", input.libvirt_uri, verb, &net]),
                        env: Vec::new(),
                    });
                }
            }
        }
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::example;

    #[test]
    fn kind_config_has_the_clusters_ranges_and_no_cni() {
        let (spec, _) = crate::spec::load("mesh.yaml", &example::builtin()).unwrap();
        let c = &spec.clusters[1];
        let k = kind_config(&spec, c, 2);
        assert!(k.contains("podSubnet: 10.245.0.0/16"), "{k}");
        assert!(k.contains("serviceSubnet: 10.97.0.0/18"), "{k}");
        assert!(k.contains("disableDefaultCNI: true"), "{k}");
        assert!(k.contains("kubeProxyMode: none"), "{k}");
        assert_eq!(k.matches("role: worker").count(), 2, "{k}");
    }

    #[test]
    fn kubeadm_skips_kube_proxy_only_when_replaced() {
        let (spec, _) = crate::spec::load("mesh.yaml", &example::builtin()).unwrap();
        let opts = KubeadmOptions {
            kubernetes_version: "v1.36.3".into(),
        };
        let k = kubeadm_config(&spec, &spec.clusters[0], &opts);
        assert!(k.contains("- addon/kube-proxy"), "{k}");
        assert!(
            k.contains("controlPlaneEndpoint: k8s-lab-01.mylaptop.loc:6443"),
            "{k}"
        );
        let text = example::builtin().replace("    kubeProxyReplacement: true\n", "");
        let (spec, _) = crate::spec::load("mesh.yaml", &text).unwrap();
        let k = kubeadm_config(&spec, &spec.clusters[0], &opts);
        assert!(!k.contains("kube-proxy"), "{k}");
    }

    #[test]
    fn up_skips_what_exists() {
        let (spec, _) = crate::spec::load("mesh.yaml", &example::builtin()).unwrap();
        let all: Vec<&Cluster> = spec.clusters.iter().collect();
        let existing = vec!["k8s01".to_owned()];
        let input = PlanInput {
            provider: Provider::Kind,
            engine: "docker",
            existing: &existing,
            network_exists: true,
            state_dir: ".cmesh-lab",
            image: None,
            memory_mib: 4096,
            vcpus: 2,
            libvirt_uri: "qemu:///system",
            network: None,
        };
        let steps = plan(&spec, &all, &input);
        assert_eq!(steps.len(), 1, "{steps:?}");
        assert_eq!(steps[0].cluster.as_deref(), Some("k8s02"));
        let existing = vec!["k8s01".to_owned(), "k8s02".to_owned()];
        assert!(
            plan(
                &spec,
                &all,
                &PlanInput {
                    existing: &existing,
                    ..input
                }
            )
            .is_empty()
        );
    }

    #[test]
    fn the_lab_network_reserves_an_address_per_cluster_and_names_its_hosts() {
        let (spec, _) = crate::spec::load("mesh.yaml", &example::builtin()).unwrap();
        let net = LabNetwork {
            cidr: "192.168.150.0/24".parse().unwrap(),
        };
        net.check(&spec).unwrap();
        let x = network_xml(&spec, &net);
        assert!(x.contains("<name>cmesh-homelab</name>"), "{x}");
        assert!(
            x.contains(&format!(
                "<host mac=\"{}\" name=\"k8s01\" ip=\"192.168.150.10\"/>",
                vm_mac(&spec, 0)
            )),
            "{x}"
        );
        assert!(
            x.contains("<hostname>k8s-lab-01.mylaptop.loc</hostname>"),
            "{x}"
        );
        assert_ne!(vm_mac(&spec, 0), vm_mac(&spec, 1));
        let bad = LabNetwork {
            cidr: "10.244.0.0/24".parse().unwrap(),
        };
        assert!(
            matches!(bad.check(&spec), Err(LabError::Overlap { ref cluster, .. }) if cluster == "k8s01")
        );
        let tiny = LabNetwork {
            cidr: "192.168.150.0/29".parse().unwrap(),
        };
        assert!(matches!(tiny.check(&spec), Err(LabError::TooSmall { .. })));
    }

    #[test]
    fn libvirt_up_creates_the_network_once_and_a_vm_per_missing_cluster() {
        let (spec, _) = crate::spec::load("mesh.yaml", &example::builtin()).unwrap();
        let all: Vec<&Cluster> = spec.clusters.iter().collect();
        let net = LabNetwork {
            cidr: "192.168.150.0/24".parse().unwrap(),
        };
        let input = PlanInput {
            provider: Provider::Libvirt,
            engine: "",
            existing: &[],
            network_exists: false,
            state_dir: "/lab",
            image: Some("/img/debian.qcow2"),
            memory_mib: 4096,
            vcpus: 2,
            libvirt_uri: "qemu:///system",
            network: Some(&net),
        };
        let phases: Vec<&str> = plan(&spec, &all, &input).iter().map(|s| s.phase).collect();
        assert_eq!(
            phases,
            [
                "define network",
                "start network",
                "autostart network",
                "create disk",
                "create VM",
                "create disk",
                "create VM"
            ]
        );
        let existing = vec![domain_name(&spec, &spec.clusters[0])];
        let steps = plan(
            &spec,
            &all,
            &PlanInput {
                existing: &existing,
                network_exists: true,
                ..input.clone()
            },
        );
        assert_eq!(steps.len(), 2);
        assert!(steps.iter().all(|s| s.cluster.as_deref() == Some("k8s02")));
        let down = teardown(
            &spec,
            &all,
            &PlanInput {
                existing: &existing,
                network_exists: true,
                ..input
            },
            true,
        );
        let phases: Vec<&str> = down.iter().map(|s| s.phase).collect();
        assert_eq!(
            phases,
            ["stop VM", "delete VM", "stop network", "delete network"]
        );
    }
}
