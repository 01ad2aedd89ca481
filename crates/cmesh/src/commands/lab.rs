//! `cmesh lab up|down|status`: creates the mesh's clusters (kind, or libvirt VMs running
//! kubeadm as in the reference article), points mesh.yaml at them, and removes them again.
//!
//! The core lays the lab out (configs, the commands, the mesh.yaml edits); this module writes
//! the configs, runs the commands with a progress line per step, reads back what only the
//! running clusters know (node addresses, kubeconfigs) and records what it created in the
//! state directory, so that `down` removes that and nothing else.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cmesh_core::lab::{self, LabNetwork, PlanInput, Provider, Step, edit::Edit};
use cmesh_core::spec::{Cluster, Host, MeshSpec};

use crate::cli::{
    EngineArg, GlobalArgs, LabAction, LabArgs, LabCommonArgs, LabUpArgs, Output, ProviderArg,
};
use crate::commands::common::{emit, known_clusters, load_spec};
use crate::errors::{ExpectedError, exit};
use crate::fs::atomic::{self as fsx, Mode};
use crate::fs::spec::Loaded;
use crate::host::lab::{self as drive, LabState, Tool};
use crate::ui::lab::{self as ui, Row, StepEvent};

/// Runs `cmesh lab`.
///
/// # Errors
/// Usage errors, missing tools ([`ExpectedError::ToolMissing`]), a failed step
/// ([`ExpectedError::Cluster`]), file errors.
pub(crate) fn run(
    global: &GlobalArgs,
    args: &LabArgs,
    out: &mut dyn Write,
) -> Result<u8, ExpectedError> {
    match &args.action {
        LabAction::Up(a) => up(global, a, out),
        LabAction::Down(a) => down(global, a, out),
        LabAction::Status(a) => status(global, &a.common, a.output, out),
    }
}

/// The kubeconfig `lab up` writes for `cluster`, relative to mesh.yaml's directory.
pub(crate) fn kubeconfig_name(cluster: &str) -> String {
    format!("kubeconfig-{cluster}")
}

/// What every action works on.
struct Lab {
    loaded: Loaded,
    provider: Provider,
    engine: String,
    uri: String,
    mesh_file: PathBuf,
    mesh_dir: PathBuf,
    state_dir: PathBuf,
    selected: Vec<usize>,
}

impl Lab {
    fn open(global: &GlobalArgs, common: &LabCommonArgs) -> Result<Lab, ExpectedError> {
        if global.example || global.file.as_os_str() == "-" {
            return Err(ExpectedError::Usage {
                message: "`cmesh lab` updates mesh.yaml with what it creates, so it needs a file"
                    .into(),
                hint: Some("write one with `cmesh init`, then `cmesh lab up -f mesh.yaml`".into()),
            });
        }
        let loaded = load_spec(global)?;
        known_clusters(&loaded.spec, &common.cluster)?;
        let selected = loaded
            .spec
            .clusters
            .iter()
            .enumerate()
            .filter(|(_, c)| common.cluster.is_empty() || common.cluster.contains(&c.name))
            .map(|(i, _)| i)
            .collect();
        let provider = match common.provider {
            ProviderArg::Kind => Provider::Kind,
            ProviderArg::Libvirt => Provider::Libvirt,
        };
        let engine = match (provider, common.engine) {
            (Provider::Libvirt, _) => String::new(),
            (Provider::Kind, Some(EngineArg::Docker)) => "docker".into(),
            (Provider::Kind, Some(EngineArg::Podman)) => "podman".into(),
            (Provider::Kind, None)
                if drive::which("docker").is_none() && drive::which("podman").is_some() =>
            {
                "podman".into()
            }
            (Provider::Kind, None) => "docker".into(),
        };
        let mesh_dir = loaded.input.base_dir.clone();
        let state_dir = common
            .state_dir
            .clone()
            .unwrap_or_else(|| mesh_dir.join(".cmesh-lab"));
        Ok(Lab {
            provider,
            engine,
            uri: common.connect.clone(),
            mesh_file: global.file.clone(),
            mesh_dir,
            state_dir,
            selected,
            loaded,
        })
    }

    fn spec(&self) -> &MeshSpec {
        &self.loaded.spec
    }

    fn clusters(&self) -> Vec<&Cluster> {
        self.selected
            .iter()
            .map(|i| &self.spec().clusters[*i])
            .collect()
    }

    fn tools(&self, extra: &[Tool]) -> Result<(), ExpectedError> {
        let mut tools = match self.provider {
            Provider::Kind if self.engine == "podman" => vec![drive::KIND, drive::PODMAN],
            Provider::Kind => vec![drive::KIND, drive::DOCKER],
            Provider::Libvirt => vec![drive::VIRSH],
        };
        tools.extend_from_slice(extra);
        drive::require(&tools, self.provider)
    }

    fn kind_env(&self) -> Vec<(String, String)> {
        if self.engine == "podman" {
            vec![("KIND_EXPERIMENTAL_PROVIDER".into(), "podman".into())]
        } else {
            Vec::new()
        }
    }

    /// What exists now: the clusters (kind names or libvirt domains) and the shared network.
    fn discover(&self) -> Result<(Vec<String>, bool), ExpectedError> {
        let net = lab::network_name(self.spec());
        Ok(match self.provider {
            Provider::Kind => (
                drive::kind_clusters(&self.kind_env())?,
                drive::exists(&[&self.engine, "network", "inspect", &net]),
            ),
            Provider::Libvirt => (
                drive::libvirt_domains(&self.uri)?,
                drive::exists(&["virsh", "--connect", &self.uri, "net-info", &net]),
            ),
        })
    }

    /// The name a cluster has in its provider (kind cluster or libvirt domain).
    fn provider_name(&self, c: &Cluster) -> String {
        match self.provider {
            Provider::Kind => c.name.clone(),
            Provider::Libvirt => lab::domain_name(self.spec(), c),
        }
    }

    fn cluster_dir(&self, c: &Cluster) -> PathBuf {
        self.state_dir.join(&c.name)
    }

    fn load_state(&self) -> Result<LabState, ExpectedError> {
        let state = LabState::load(&self.state_dir)?;
        if !state.provider.is_empty() && state.provider != self.provider.as_str() {
            return Err(ExpectedError::Usage {
                message: format!(
                    "the lab in {} was made with --provider {}",
                    self.state_dir.display(),
                    state.provider
                ),
                hint: Some(format!("pass --provider {}", state.provider)),
            });
        }
        Ok(state)
    }
}

fn mkdir(dir: &Path) -> Result<(), ExpectedError> {
    std::fs::create_dir_all(dir).map_err(|source| ExpectedError::Write {
        path: dir.to_path_buf(),
        source,
    })
}

fn abs(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Runs `steps` in order with a progress line each on stderr, calling `done` after each
/// success (to record it before the next step can fail).
fn execute(
    steps: &[Step],
    mut done: impl FnMut(&Step) -> Result<(), ExpectedError>,
) -> Result<(), ExpectedError> {
    for step in steps {
        let started = Instant::now();
        progress(step, &StepEvent::Started);
        match drive::run_step(step) {
            Ok(_) => {
                progress(step, &StepEvent::Done(started.elapsed()));
                done(step)?;
            }
            Err(_) if lab::may_fail(step) => progress(step, &StepEvent::Skipped("not running")),
            Err(e) => {
                progress(step, &StepEvent::Failed(started.elapsed()));
                return Err(e);
            }
        }
    }
    Ok(())
}

/// `step`'s progress line, on stderr (stdout carries the result).
fn progress(step: &Step, event: &StepEvent<'_>) {
    let line = ui::step_line(step.cluster.as_deref(), step.phase, event);
    crate::ui::term::eprint(&line);
}

fn default_ssh_key() -> Option<PathBuf> {
    let home = PathBuf::from(std::env::var_os("HOME")?);
    ["id_ed25519.pub", "id_ecdsa.pub", "id_rsa.pub"]
        .iter()
        .map(|f| home.join(".ssh").join(f))
        .find(|p| p.is_file())
}

/// Where one cluster of the lab is reached, once it runs.
struct Reached {
    kubeconfig: String,
    context: String,
    api_server: String,
    clustermesh_address: String,
}

fn up(global: &GlobalArgs, a: &LabUpArgs, out: &mut dyn Write) -> Result<u8, ExpectedError> {
    let lab = Lab::open(global, &a.common)?;
    let clusters = lab.clusters();
    let net = lab_network(&lab, a)?;
    let mut extra = Vec::new();
    if lab.provider == Provider::Libvirt {
        extra.extend([drive::VIRT_INSTALL, drive::QEMU_IMG, drive::SSH]);
        if a.image_url.is_some() {
            extra.push(drive::CURL);
        }
    }
    lab.tools(&extra)?;
    let boot = VmBoot::prepare(&lab, a)?;
    write_configs(&lab, a, &clusters, net.as_ref(), &boot.ssh_pub)?;
    let mut state = create(&lab, a, &clusters, net.as_ref(), &boot)?;
    let reached = reach_all(&lab, a, &clusters, net.as_ref(), &boot, &mut state)?;
    let (target, changed) = point_mesh_yaml(&lab, a, &reached)?;
    if let Some(net) = &net {
        host_names(&lab, a, net, out)?;
    }
    report_up(out, &state, &reached, &target, changed)
}

/// libvirt's network for `--network` (none with kind), checked against mesh.yaml's ranges.
fn lab_network(lab: &Lab, a: &LabUpArgs) -> Result<Option<LabNetwork>, ExpectedError> {
    let spec = lab.spec();
    Ok(match lab.provider {
        Provider::Kind => None,
        Provider::Libvirt => {
            let cidr = a.network.parse().map_err(|e| ExpectedError::Usage {
                message: format!("--network {}: {e}", a.network),
                hint: Some("an IPv4 range such as 192.168.150.0/24".into()),
            })?;
            let net = LabNetwork { cidr };
            net.check(spec).map_err(|e| ExpectedError::Usage {
                message: e.to_string(),
                hint: Some("choose another --network".into()),
            })?;
            Some(net)
        }
    })
}

/// What libvirt VMs boot from: the base image (with the step downloading it, if needed) and
/// the SSH key pair lab up logs in with. Empty with kind.
#[derive(Default)]
struct VmBoot {
    pre: Vec<Step>,
    image: Option<PathBuf>,
    ssh_pub: Vec<String>,
    ssh_private: Option<PathBuf>,
}

impl VmBoot {
    /// Checked before anything is created.
    fn prepare(lab: &Lab, a: &LabUpArgs) -> Result<VmBoot, ExpectedError> {
        if lab.provider != Provider::Libvirt {
            return Ok(VmBoot::default());
        }
        let mut pre = Vec::new();
        {
            let image = match (&a.image, &a.image_url) {
                (Some(p), _) => {
                    if !p.is_file() {
                        return Err(ExpectedError::Usage {
                            message: format!("--image {}: no such file", p.display()),
                            hint: Some("pass a cloud image in qcow2 format (Debian's genericcloud, Ubuntu's cloud image)".into()),
                        });
                    }
                    abs(p)
                }
                (None, Some(url)) => {
                    let p = abs(&lab.state_dir.join("base-image.qcow2"));
                    if !p.is_file() {
                        pre.push(Step {
                            cluster: None,
                            phase: "download image",
                            argv: vec![
                                "curl".into(),
                                "--fail".into(),
                                "--location".into(),
                                "--silent".into(),
                                "--show-error".into(),
                                "--output".into(),
                                p.display().to_string(),
                                url.clone(),
                            ],
                            env: Vec::new(),
                        });
                    }
                    p
                }
                (None, None) => {
                    return Err(ExpectedError::Usage {
                        message: "--provider libvirt needs the cloud image the VMs boot: --image PATH".into(),
                        hint: Some("or --image-url URL to have cmesh download it (e.g. Debian's genericcloud qcow2)".into()),
                    });
                }
            };
            let key = a.ssh_key.clone().or_else(default_ssh_key).ok_or_else(|| ExpectedError::Usage {
                message: "no SSH public key to authorize on the VMs (lab up fetches the admin kubeconfig over SSH)".into(),
                hint: Some("pass --ssh-key PATH.pub, or create one with `ssh-keygen -t ed25519`".into()),
            })?;
            let text = std::fs::read_to_string(&key).map_err(|source| ExpectedError::Read {
                path: key.clone(),
                source,
            })?;
            let private = abs(&key.with_extension(""));
            if !private.is_file() {
                return Err(ExpectedError::Usage {
                    message: format!(
                        "--ssh-key {}: its private key {} is missing (lab up logs in with it)",
                        key.display(),
                        private.display()
                    ),
                    hint: Some("pass the .pub file of a key pair you have".into()),
                });
            }
            Ok(VmBoot {
                pre,
                image: Some(image),
                ssh_pub: vec![text.trim().to_owned()],
                ssh_private: Some(private),
            })
        }
    }
}

/// The configs of every selected cluster (and libvirt's network), rewritten every time: they
/// are derived from mesh.yaml.
fn write_configs(
    lab: &Lab,
    a: &LabUpArgs,
    clusters: &[&Cluster],
    net: Option<&LabNetwork>,
    ssh_pub: &[String],
) -> Result<(), ExpectedError> {
    let spec = lab.spec();
    mkdir(&lab.state_dir)?;
    for c in clusters {
        let dir = lab.cluster_dir(c);
        mkdir(&dir)?;
        match lab.provider {
            Provider::Kind => {
                let text = lab::kind_config(spec, c, a.workers);
                fsx::write_atomic(&dir.join("kind.yaml"), text.as_bytes(), Mode::Public, true)?;
            }
            Provider::Libvirt => {
                let kubeadm = lab::KubeadmOptions {
                    kubernetes_version: a.kubernetes_version.clone(),
                };
                let text = lab::kubeadm_config(spec, c, &kubeadm);
                fsx::write_atomic(
                    &dir.join("kubeadm.yaml"),
                    text.as_bytes(),
                    Mode::Public,
                    true,
                )?;
                let opts = lab::CloudInitOptions {
                    kubeadm,
                    ssh_keys: ssh_pub.to_vec(),
                };
                let text = lab::cloud_init(spec, c, &opts);
                fsx::write_atomic(
                    &dir.join("user-data.yaml"),
                    text.as_bytes(),
                    Mode::Public,
                    true,
                )?;
            }
        }
    }
    if let Some(net) = net {
        let text = lab::network_xml(spec, net);
        fsx::write_atomic(
            &lab.state_dir.join("network.xml"),
            text.as_bytes(),
            Mode::Public,
            true,
        )?;
    }
    Ok(())
}

/// Plans what is missing (the core decides) and runs it, recording in the state file what was
/// created as it goes, so that `lab down` removes only that.
fn create(
    lab: &Lab,
    a: &LabUpArgs,
    clusters: &[&Cluster],
    net: Option<&LabNetwork>,
    boot: &VmBoot,
) -> Result<LabState, ExpectedError> {
    let spec = lab.spec();
    let (existing, network_exists) = lab.discover()?;
    let mut state = lab.load_state()?;
    state.provider = lab.provider.as_str().to_owned();
    let state_dir = abs(&lab.state_dir).display().to_string();
    let image_s = boot.image.as_ref().map(|p| p.display().to_string());
    let input = PlanInput {
        provider: lab.provider,
        engine: &lab.engine,
        existing: &existing,
        network_exists,
        state_dir: &state_dir,
        image: image_s.as_deref(),
        memory_mib: a.memory,
        vcpus: a.vcpus,
        libvirt_uri: &lab.uri,
        network: net,
    };
    let mut steps = boot.pre.clone();
    steps.extend(lab::plan(spec, clusters, &input));
    if steps.is_empty() {
        let _ = writeln!(
            std::io::stderr(),
            "every cluster exists already ({}); reading their addresses",
            clusters
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let result = execute(&steps, |step| {
        match step.phase {
            "create network" | "define network" => state.network = true,
            "create cluster" | "create disk" => {
                if let Some(c) = &step.cluster {
                    state.clusters.entry(c.clone()).or_default();
                }
            }
            _ => {}
        }
        state.save(&lab.state_dir)
    });
    state.save(&lab.state_dir)?;
    result?;
    Ok(state)
}

/// The addresses and kubeconfig of every selected cluster, once it runs.
fn reach_all(
    lab: &Lab,
    a: &LabUpArgs,
    clusters: &[&Cluster],
    net: Option<&LabNetwork>,
    boot: &VmBoot,
    state: &mut LabState,
) -> Result<Vec<(Cluster, Reached)>, ExpectedError> {
    let mut reached = Vec::new();
    for c in clusters {
        let r = match lab.provider {
            Provider::Kind => reach_kind(lab, c)?,
            Provider::Libvirt => reach_vm(
                lab,
                c,
                net.expect("libvirt has a network"),
                boot.ssh_private.as_deref().expect("libvirt has a key"),
                a,
            )?,
        };
        if let Some(s) = state.clusters.get_mut(&c.name) {
            s.kubeconfig = Some(r.kubeconfig.clone());
        }
        reached.push(((*c).clone(), r));
    }
    state.save(&lab.state_dir)?;
    Ok(reached)
}

/// mesh.yaml, edited in place (or written to `--out`) to point at the lab: the file written
/// and whether it changed.
fn point_mesh_yaml(
    lab: &Lab,
    a: &LabUpArgs,
    reached: &[(Cluster, Reached)],
) -> Result<(PathBuf, bool), ExpectedError> {
    let spec = lab.spec();
    let mut edits = Vec::new();
    let index = |c: &Cluster| {
        spec.clusters
            .iter()
            .position(|x| x.name == c.name)
            .unwrap_or(0)
    };
    for (c, r) in reached {
        let i = index(c);
        let mut set = |key: Vec<&'static str>, value: &str| {
            edits.push(Edit {
                cluster: i,
                key,
                value: value.to_owned(),
            })
        };
        set(vec!["kubeconfig"], &r.kubeconfig);
        set(vec!["context"], &r.context);
        set(vec!["apiServer"], &r.api_server);
        if c.clustermesh.ips.is_empty() {
            set(vec!["clustermesh", "address"], &r.clustermesh_address);
        }
    }
    let file = lab.loaded.input.name.clone();
    let edited = lab::edit::apply(spec, &file, &edits).map_err(|e| ExpectedError::Usage {
        message: e.to_string(),
        hint: Some("or pass --out to write the updated mesh.yaml elsewhere".into()),
    })?;
    let target = a.out.clone().unwrap_or_else(|| lab.mesh_file.clone());
    let changed = edited != lab.loaded.input.text || a.out.is_some();
    if changed {
        fsx::write_atomic(&target, edited.as_bytes(), Mode::Public, true)?;
    }
    Ok((target, changed))
}

/// libvirt: the host names of the VMs, written to /etc/hosts with `--write-hosts`, else shown.
fn host_names(
    lab: &Lab,
    a: &LabUpArgs,
    net: &LabNetwork,
    out: &mut dyn Write,
) -> Result<(), ExpectedError> {
    let spec = lab.spec();
    let entries: Vec<(String, Vec<String>)> = spec
        .clusters
        .iter()
        .enumerate()
        .filter(|(i, _)| lab.selected.contains(i))
        .map(|(i, c)| (net.vm_address(i).to_string(), lab::vm_host_names(spec, c)))
        .collect();
    let block = ui::hosts_block(&spec.name, &entries);
    if a.write_hosts {
        let hosts = hosts_file();
        let text = std::fs::read_to_string(&hosts).unwrap_or_default();
        let new = ui::replace_hosts_block(&text, &spec.name, &block);
        if new != text {
            std::fs::write(&hosts, new).map_err(|source| ExpectedError::Write {
                path: hosts.clone(),
                source,
            })?;
        }
        emit(
            out,
            &format!("wrote the VMs' host names to {}\n", hosts.display()),
        )?;
    } else {
        emit(
            out,
            &format!(
                "host names of the lab (add them to /etc/hosts, or pass --write-hosts):\n{block}"
            ),
        )?;
    }
    Ok(())
}

/// The table of reached clusters and what to do next.
fn report_up(
    out: &mut dyn Write,
    state: &LabState,
    reached: &[(Cluster, Reached)],
    target: &Path,
    changed: bool,
) -> Result<u8, ExpectedError> {
    let rows: Vec<Row> = reached
        .iter()
        .map(|(c, r)| Row {
            cluster: c.name.clone(),
            state: "running".into(),
            made_by_lab_up: Some(state.clusters.contains_key(&c.name)),
            api_server: Some(r.api_server.clone()),
            clustermesh: Some(format!("{}:{}", r.clustermesh_address, c.clustermesh.port)),
            kubeconfig: Some(r.kubeconfig.clone()),
        })
        .collect();
    emit(out, &ui::table(&rows))?;
    let shown = target.display();
    if changed {
        emit(
            out,
            &format!(
                "updated {shown}: kubeconfig, context, apiServer and clustermesh.address of each cluster\n"
            ),
        )?;
    } else {
        emit(out, &format!("{shown} already points at the lab\n"))?;
    }
    emit(
        out,
        &format!(
            "next: cmesh check -f {shown} && cmesh render -f {shown} && cmesh apply -f {shown}\n"
        ),
    )?;
    Ok(exit::OK)
}

fn hosts_file() -> PathBuf {
    std::env::var_os("CMESH_HOSTS_FILE").map_or_else(|| PathBuf::from("/etc/hosts"), PathBuf::from)
}

fn write_kubeconfig(lab: &Lab, c: &Cluster, text: &str) -> Result<String, ExpectedError> {
    let name = kubeconfig_name(&c.name);
    let path = lab.mesh_dir.join(&name);
    let same = std::fs::read_to_string(&path).is_ok_and(|t| t == text);
    if !same {
        fsx::write_atomic(&path, text.as_bytes(), Mode::Private, true)?;
    }
    Ok(name)
}

fn reach_kind(lab: &Lab, c: &Cluster) -> Result<Reached, ExpectedError> {
    let net = lab::network_name(lab.spec());
    let address =
        drive::container_address(&lab.engine, &format!("{}-control-plane", c.name), &net)?;
    let step = Step {
        cluster: Some(c.name.clone()),
        phase: "read kubeconfig",
        argv: ["kind", "get", "kubeconfig", "--name", c.name.as_str()]
            .map(str::to_owned)
            .to_vec(),
        env: lab.kind_env(),
    };
    let kubeconfig = drive::run_step(&step)?.stdout;
    Ok(Reached {
        kubeconfig: write_kubeconfig(lab, c, &kubeconfig)?,
        context: format!("kind-{}", c.name),
        api_server: format!("{address}:6443"),
        clustermesh_address: address,
    })
}

/// Waits for the VM's kubeadm init (its admin kubeconfig appears), fetched over SSH.
fn reach_vm(
    lab: &Lab,
    c: &Cluster,
    net: &LabNetwork,
    key: &Path,
    a: &LabUpArgs,
) -> Result<Reached, ExpectedError> {
    let spec = lab.spec();
    let i = spec
        .clusters
        .iter()
        .position(|x| x.name == c.name)
        .unwrap_or(0);
    let ip = net.vm_address(i).to_string();
    let known_hosts = abs(&lab.state_dir.join("known_hosts"));
    let step = Step {
        cluster: Some(c.name.clone()),
        phase: "wait for kubeadm",
        argv: vec![
            "ssh".into(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            "ConnectTimeout=5".into(),
            "-o".into(),
            "StrictHostKeyChecking=accept-new".into(),
            "-o".into(),
            format!("UserKnownHostsFile={}", known_hosts.display()),
            "-i".into(),
            key.display().to_string(),
            format!("{}@{ip}", lab::LAB_USER),
            "sudo cat /etc/kubernetes/admin.conf".into(),
        ],
        env: Vec::new(),
    };
    let started = Instant::now();
    progress(&step, &StepEvent::Started);
    let admin = loop {
        match drive::run(&step.argv, &step.env) {
            Ok(o) if o.ok && o.stdout.contains("clusters:") => break o.stdout,
            last => {
                if started.elapsed() >= a.timeout.0 {
                    let why = match last {
                        Ok(o) => drive::last_lines(&o),
                        Err(e) => e,
                    };
                    progress(&step, &StepEvent::Failed(started.elapsed()));
                    return Err(ExpectedError::Cluster {
                        message: format!(
                            "{}: no admin kubeconfig after {:?} ({why})",
                            c.name, a.timeout.0
                        ),
                        hint: format!(
                            "see the VM's console (`virsh --connect {} console {}`) and /var/log/cloud-init-output.log; `cmesh lab up` again waits again",
                            lab.uri,
                            lab::domain_name(spec, c)
                        ),
                    });
                }
                std::thread::sleep(
                    Duration::from_secs(5).min(a.timeout.0 / 10 + Duration::from_millis(50)),
                );
            }
        }
    };
    progress(&step, &StepEvent::Done(started.elapsed()));
    let port = c.api_server.as_ref().map_or(6443, |s| s.port);
    let host = if a.write_hosts {
        lab::api_host(spec, c)
    } else {
        ip.clone()
    };
    // kubeadm writes the control-plane endpoint (the API host name) as the server; without
    // --write-hosts that name resolves only inside the lab network.
    let kubeconfig: String = admin
        .lines()
        .map(|l| match l.trim_start().strip_prefix("server: ") {
            Some(_) => {
                let indent = &l[..l.len() - l.trim_start().len()];
                format!("{indent}server: https://{host}:{port}\n")
            }
            None => format!("{l}\n"),
        })
        .collect();
    let clustermesh_address = match (&c.clustermesh.address, a.write_hosts) {
        (Some(Host::Dns(d)), true) => d.clone(),
        _ => ip.clone(),
    };
    Ok(Reached {
        kubeconfig: write_kubeconfig(lab, c, &kubeconfig)?,
        context: format!("kubernetes-admin@{}", c.name),
        api_server: format!("{host}:{port}"),
        clustermesh_address,
    })
}

fn down(global: &GlobalArgs, a: &LabCommonArgs, out: &mut dyn Write) -> Result<u8, ExpectedError> {
    let lab = Lab::open(global, a)?;
    let spec = lab.spec();
    let mut state = lab.load_state()?;
    if state.clusters.is_empty() && !state.network {
        emit(
            out,
            &format!(
                "nothing to remove: {} records nothing made by `cmesh lab up`\n",
                lab.state_dir.display()
            ),
        )?;
        return Ok(exit::OK);
    }
    lab.tools(&[])?;
    let (existing, network_exists) = lab.discover()?;
    let clusters: Vec<&Cluster> = lab
        .clusters()
        .into_iter()
        .filter(|c| state.clusters.contains_key(&c.name))
        .collect();
    // Only what up made: the provider names of the clusters the state records.
    let ours: Vec<String> = clusters
        .iter()
        .map(|c| lab.provider_name(c))
        .filter(|n| existing.contains(n))
        .collect();
    let remaining = state
        .clusters
        .keys()
        .filter(|k| !clusters.iter().any(|c| &c.name == *k))
        .count();
    let input = PlanInput {
        provider: lab.provider,
        engine: &lab.engine,
        existing: &ours,
        network_exists: network_exists && state.network,
        state_dir: "",
        image: None,
        memory_mib: 0,
        vcpus: 0,
        libvirt_uri: &lab.uri,
        network: None,
    };
    let steps = lab::teardown(spec, &clusters, &input, remaining == 0);
    let forget = |state: &mut LabState, name: &str| -> Result<(), ExpectedError> {
        if let Some(k) = state.clusters.remove(name).and_then(|s| s.kubeconfig) {
            let _ = std::fs::remove_file(lab.mesh_dir.join(k));
        }
        let _ = std::fs::remove_dir_all(lab.state_dir.join(name));
        state.save(&lab.state_dir)
    };
    let result = execute(&steps, |step| {
        match (step.phase, &step.cluster) {
            ("delete cluster" | "delete VM", Some(c)) => forget(&mut state, c)?,
            ("delete network", _) => {
                state.network = false;
                state.save(&lab.state_dir)?;
            }
            _ => {}
        }
        Ok(())
    });
    result?;
    // Recorded clusters that are gone already (removed by hand): forget them too.
    for c in &clusters {
        if state.clusters.contains_key(&c.name) && !existing.contains(&lab.provider_name(c)) {
            forget(&mut state, &c.name)?;
        }
    }
    if remaining == 0 && state.network && !network_exists {
        state.network = false;
    }
    state.save(&lab.state_dir)?;
    if state.clusters.is_empty() && !state.network {
        for f in ["network.xml", "known_hosts", "base-image.qcow2"] {
            let _ = std::fs::remove_file(lab.state_dir.join(f));
        }
        let _ = std::fs::remove_dir(&lab.state_dir);
    }
    let names: Vec<&str> = clusters.iter().map(|c| c.name.as_str()).collect();
    emit(
        out,
        &format!(
            "removed {} (mesh.yaml still names them: `cmesh lab up` creates them again)\n",
            if names.is_empty() {
                "nothing".to_owned()
            } else {
                names.join(", ")
            }
        ),
    )?;
    Ok(exit::OK)
}

fn status(
    global: &GlobalArgs,
    a: &LabCommonArgs,
    output: Output,
    out: &mut dyn Write,
) -> Result<u8, ExpectedError> {
    let lab = Lab::open(global, a)?;
    lab.tools(&[])?;
    let spec = lab.spec();
    let state = lab.load_state()?;
    let (existing, _) = lab.discover()?;
    let mut absent = false;
    let rows: Vec<Row> = lab
        .clusters()
        .iter()
        .map(|c| {
            let name = lab.provider_name(c);
            let made = state.clusters.contains_key(&c.name);
            let exists = existing.contains(&name);
            let state = if !exists {
                absent = true;
                "absent".to_owned()
            } else if lab.provider == Provider::Libvirt {
                drive::run(
                    &["virsh", "--connect", &lab.uri, "domstate", &name].map(str::to_owned),
                    &[],
                )
                .ok()
                .filter(|o| o.ok)
                .map_or_else(|| "unknown".to_owned(), |o| o.stdout.trim().to_owned())
            } else {
                "exists".to_owned()
            };
            Row {
                cluster: c.name.clone(),
                state,
                made_by_lab_up: exists.then_some(made),
                api_server: c
                    .api_server
                    .as_ref()
                    .map(|s| format!("{}:{}", s.host, s.port)),
                clustermesh: c
                    .clustermesh
                    .address
                    .as_ref()
                    .map(|h| format!("{h}:{}", c.clustermesh.port)),
                kubeconfig: c.kubeconfig.clone(),
            }
        })
        .collect();
    let _ = spec;
    emit(
        out,
        &match output {
            Output::Table => ui::table(&rows),
            Output::Json => ui::json(&rows),
        },
    )?;
    Ok(if absent {
        exit::CHECKS_FAILED
    } else {
        exit::OK
    })
}
