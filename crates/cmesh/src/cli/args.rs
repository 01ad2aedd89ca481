//! The command line, as clap derive structs. Parsing only: no I/O happens here.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::fs::spec::SpecSourceArg;
use crate::ui::ColorChoice;

const EXIT_CODES: &str = "\
Exit codes:
  0    success
  1    what the command checked failed (probe, status, test)
  2    invalid command line
  3    mesh.yaml is invalid
  4    a file could not be read or written
  5    PKI problem (missing, invalid or mismatched CA)
  6    render --check: the tree on disk is out of date
  7    a cluster could not be reached, or a cluster operation, helm or a lab tool
       failed (or the tool is missing)
  8    another cmesh run holds the lock on pki.dir or the output directory
  130  interrupted (Ctrl-C)
  143  terminated (SIGTERM)";

/// Turn one mesh.yaml into a working Cilium Cluster Mesh across N Kubernetes clusters.
#[derive(Debug, Parser)]
#[command(name = "cmesh", bin_name = "cmesh", version, about, after_help = EXIT_CODES, max_term_width = 100, args_override_self = true)]
pub(crate) struct Cli {
    /// Options every command takes.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Options shared by all commands.
#[derive(Debug, Args)]
pub(crate) struct GlobalArgs {
    /// The mesh spec (`-` reads stdin).
    #[arg(
        short = 'f',
        long = "file",
        global = true,
        value_name = "PATH",
        default_value = "mesh.yaml"
    )]
    pub file: PathBuf,
    /// Use the built-in example (the reference article's two-cluster lab) instead of a file.
    #[arg(long, global = true, conflicts_with = "file")]
    pub example: bool,
    /// When to use colours.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
    /// How long to wait for another cmesh run that holds pki.dir or the output directory
    /// (`0s`: fail at once, exit 8).
    #[arg(long, global = true, value_name = "DURATION", default_value = "1m", value_parser = parse_wait)]
    pub lock_timeout: TimeoutArg,
    /// Trace what cmesh does on stderr: -v for its own steps (requests, helm, execs, files,
    /// locks), -vv with the Kubernetes client's too. Never keys or Secret data.
    #[arg(short = 'v', long = "verbose", global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

impl GlobalArgs {
    /// Where to read the spec from.
    pub(crate) fn spec_source(&self) -> SpecSourceArg {
        if self.example {
            SpecSourceArg::Example
        } else {
            SpecSourceArg::File(self.file.clone())
        }
    }
}

/// The commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Write a commented mesh.yaml (by default the reference article's two-cluster lab).
    Init(InitArgs),
    /// Validate mesh.yaml and the PKI: every problem, with where and how to fix it.
    Check(CheckArgs),
    /// Write per-cluster Helm values, Secrets and Argo CD / Flux / helm files (creating the
    /// shared CA and certificates on first use).
    Render(RenderArgs),
    /// Manage the mesh CA and the certificates issued from it.
    Pki(PkiArgs),
    /// Dial every clustermesh endpoint as a peer's agent would (DNS, TCP, mutual TLS, etcd) and
    /// explain every failure.
    Probe(ProbeArgs),
    /// Show what apply would change on every cluster, in its order: release version, values
    /// (secrets redacted), Secrets, restarts, peers gained and lost. Changes nothing.
    Plan(PlanArgs),
    /// Install or upgrade Cilium on every cluster: Secrets, helm, rollouts, agent restarts.
    /// Shows the plan first and asks (or needs --yes).
    Apply(ApplyArgs),
    /// Remove a cluster's mesh configuration (peer list, clustermesh-apiserver, the mesh's
    /// Secrets) without uninstalling Cilium: for a cluster no longer in mesh.yaml.
    Disconnect(DisconnectArgs),
    /// Move the mesh to a newer Cilium one minor release at a time: each step sets
    /// cilium.version in mesh.yaml and applies the clusters one at a time behind status gates.
    /// --plan shows the steps, Cilium's changes and the values each changes.
    Upgrade(UpgradeArgs),
    /// Check the live mesh on every cluster: workloads, CA, peers, what the agents report, drift.
    Status(StatusArgs),
    /// Exercise the live mesh: pod to pod, a global Service, failover and ingress-nginx, across
    /// every pair of clusters; then clean up.
    Test(TestArgs),
    /// Find objects that break Cluster Mesh expectations (nginx Ingresses without
    /// service-upstream, global Services that differ between clusters, bad annotations), live
    /// or offline in manifests (cmesh lint PATH…, - for stdin).
    Lint(LintArgs),
    /// Create the mesh's clusters for a lab (kind, or libvirt VMs with kubeadm as the reference
    /// article does) and point mesh.yaml at them.
    Lab(LabArgs),
    /// Print the shell completion script for bash, zsh, fish, elvish or PowerShell (e.g.
    /// `cmesh completions bash > /etc/bash_completion.d/cmesh`).
    Completions(CompletionsArgs),
    /// Print cmesh's man page (roff), e.g. `cmesh man | man -l -`.
    Man,
    /// Print cmesh's version and the Cilium releases it supports.
    Version(VersionArgs),
}

/// `cmesh completions`.
#[derive(Debug, Args)]
pub(crate) struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `cmesh version`.
#[derive(Debug, Args)]
pub(crate) struct VersionArgs {
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// `cmesh lab`.
#[derive(Debug, Args)]
pub(crate) struct LabArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: LabAction,
}

/// `cmesh lab up|down|status`.
#[derive(Debug, Subcommand)]
pub(crate) enum LabAction {
    /// Create the clusters that do not exist yet (no CNI, mesh.yaml's pod and service ranges,
    /// no kube-proxy when Cilium replaces it), write their kubeconfigs next to mesh.yaml and
    /// update mesh.yaml's kubeconfig, context, apiServer and clustermesh.address.
    Up(LabUpArgs),
    /// Remove what `lab up` created (and only that).
    Down(LabCommonArgs),
    /// Show each lab cluster: whether it exists, its addresses, its kubeconfig.
    Status(LabStatusArgs),
}

/// `cmesh lab status`.
#[derive(Debug, Args)]
pub(crate) struct LabStatusArgs {
    /// What every lab command takes.
    #[command(flatten)]
    pub common: LabCommonArgs,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// `--provider`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub(crate) enum ProviderArg {
    /// kind clusters in Docker or Podman.
    #[default]
    Kind,
    /// libvirt/KVM virtual machines with kubeadm (the reference article's lab).
    Libvirt,
}

/// `--engine`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum EngineArg {
    /// Docker.
    Docker,
    /// Podman.
    Podman,
}

/// Options of every `lab` action.
#[derive(Debug, Args)]
pub(crate) struct LabCommonArgs {
    /// Where the clusters run.
    #[arg(long, value_enum, default_value_t = ProviderArg::Kind)]
    pub provider: ProviderArg,
    /// Only these clusters (repeatable).
    #[arg(long)]
    pub cluster: Vec<String>,
    /// kind: the container engine (default: docker if installed, else podman).
    #[arg(long, value_enum)]
    pub engine: Option<EngineArg>,
    /// libvirt: the connection URI.
    #[arg(long, default_value = "qemu:///system", value_name = "URI")]
    pub connect: String,
    /// Where lab state and generated configs go (default: .cmesh-lab next to mesh.yaml).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

/// `cmesh lab up`.
#[derive(Debug, Args)]
pub(crate) struct LabUpArgs {
    /// Options of every `lab` action.
    #[command(flatten)]
    pub common: LabCommonArgs,
    /// kind: worker nodes per cluster (besides the control-plane node).
    #[arg(long, default_value_t = 1)]
    pub workers: u8,
    /// libvirt: the cloud image (qcow2) each VM's disk is based on.
    #[arg(long, value_name = "PATH")]
    pub image: Option<PathBuf>,
    /// libvirt: download the cloud image from this URL into the state directory first.
    #[arg(long, value_name = "URL", conflicts_with = "image")]
    pub image_url: Option<String>,
    /// libvirt: memory per VM, MiB.
    #[arg(long, default_value_t = 4096)]
    pub memory: u32,
    /// libvirt: vCPUs per VM.
    #[arg(long, default_value_t = 2)]
    pub vcpus: u32,
    /// libvirt: the lab network (NAT; the host is .1, cluster i is .10+i).
    #[arg(long, default_value = "192.168.150.0/24", value_name = "CIDR")]
    pub network: String,
    /// libvirt: the public SSH key cloud-init authorizes for `lab up` to fetch the admin
    /// kubeconfig (default: ~/.ssh/id_ed25519.pub, then ~/.ssh/id_rsa.pub).
    #[arg(long, value_name = "PATH")]
    pub ssh_key: Option<PathBuf>,
    /// libvirt: the Kubernetes version kubeadm installs.
    #[arg(long, default_value = "v1.36.3")]
    pub kubernetes_version: String,
    /// libvirt: how long to wait for each VM's kubeadm init.
    #[arg(long, default_value = "15m", value_parser = parse_timeout)]
    pub timeout: TimeoutArg,
    /// libvirt: add the VMs' host names to /etc/hosts (otherwise they are printed, and
    /// mesh.yaml uses the VMs' addresses).
    #[arg(long)]
    pub write_hosts: bool,
    /// Write the updated mesh.yaml here instead of in place.
    #[arg(long, value_name = "PATH")]
    pub out: Option<PathBuf>,
}

/// `--only`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    /// Pod IP to pod IP, every ordered pair of clusters.
    Pod,
    /// The global Service from every cluster, with affinity local and remote.
    Service,
    /// Each cluster's replicas at 0: answered by the others; then local again.
    Failover,
    /// ingress-nginx to the global Service without and with service-upstream.
    Ingress,
}

impl From<KindArg> for cmesh_core::meshtest::Kind {
    fn from(k: KindArg) -> Self {
        match k {
            KindArg::Pod => cmesh_core::meshtest::Kind::Pod,
            KindArg::Service => cmesh_core::meshtest::Kind::Service,
            KindArg::Failover => cmesh_core::meshtest::Kind::Failover,
            KindArg::Ingress => cmesh_core::meshtest::Kind::Ingress,
        }
    }
}

/// Output of `test`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub(crate) enum TestOutput {
    /// Result matrices, failures with fixes, cleanup.
    #[default]
    Table,
    /// One JSON document.
    Json,
    /// JUnit XML, for CI.
    Junit,
    /// One self-contained HTML page: the matrix as a heat map, every cell's detail.
    Html,
}

/// A `test --report` file: where, and in which format (from its extension).
#[derive(Debug, Clone)]
pub(crate) struct ReportFile {
    pub path: PathBuf,
    pub format: TestOutput,
}

fn parse_report_path(s: &str) -> Result<ReportFile, String> {
    let path = PathBuf::from(s);
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let format = match ext.as_deref() {
        Some("json") => TestOutput::Json,
        Some("xml") => TestOutput::Junit,
        Some("html" | "htm") => TestOutput::Html,
        _ => {
            return Err(format!(
                "`{s}`: the format is taken from the extension: .json, .xml (JUnit) or .html"
            ));
        }
    };
    Ok(ReportFile { path, format })
}

/// `cmesh test`.
#[derive(Debug, Args)]
pub(crate) struct TestArgs {
    /// Only these clusters (repeatable; at least two).
    #[arg(long)]
    pub cluster: Vec<String>,
    /// Only these parts (repeatable or comma-separated; default all).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<KindArg>,
    /// Leave the test namespaces in place (remove them later with --cleanup).
    #[arg(long, conflicts_with = "cleanup")]
    pub keep: bool,
    /// Delete what earlier runs left behind (namespaces labelled by cmesh test), then exit.
    #[arg(long)]
    pub cleanup: bool,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = TestOutput::Table)]
    pub output: TestOutput,
    /// Also write the report to PATH, in the format its extension names: `.json`, `.xml`
    /// (JUnit) or `.html` (repeatable; written when the run ends, whatever its outcome, so a CI
    /// job keeps the table in its log and the files as artifacts).
    #[arg(long, value_name = "PATH", value_parser = parse_report_path, conflicts_with = "cleanup")]
    pub report: Vec<ReportFile>,
    /// Server image: nginx or compatible (reads /etc/nginx/conf.d), for air-gapped clusters.
    #[arg(long, default_value = cmesh_core::meshtest::DEFAULT_SERVER_IMAGE, value_name = "IMAGE")]
    pub server_image: String,
    /// Client image: needs sh and curl.
    #[arg(long, default_value = cmesh_core::meshtest::DEFAULT_CLIENT_IMAGE, value_name = "IMAGE")]
    pub client_image: String,
    /// Ingress class for the ingress part (default: the IngressClass of ingress-nginx).
    #[arg(long, value_name = "CLASS")]
    pub ingress_class: Option<String>,
    /// Requests per batch to a Service (more batches follow until every cluster answered).
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub requests: u32,
    /// Bound on each HTTP request.
    #[arg(long, default_value = "5s", value_parser = parse_timeout)]
    pub http_timeout: TimeoutArg,
    /// Bound on each wait: pods ready, replicas scaled, namespaces deleted.
    #[arg(long, default_value = "3m", value_parser = parse_timeout)]
    pub timeout: TimeoutArg,
    /// How long a check that has not passed yet is retried (new endpoints take a moment to
    /// reach every cluster).
    #[arg(long, default_value = "30s", value_parser = parse_timeout)]
    pub retry_for: TimeoutArg,
    /// Bound on each Kubernetes API request.
    #[arg(long, default_value = "15s", value_parser = parse_timeout)]
    pub request_timeout: TimeoutArg,
    /// Pause between polls and retries.
    #[arg(long, default_value = "1s", value_parser = parse_timeout, hide = true)]
    pub poll: TimeoutArg,
}

/// `cmesh lint`.
#[derive(Debug, Args)]
pub(crate) struct LintArgs {
    /// Manifests to lint offline: files, directories (every .yaml, .yml and .json below,
    /// scoped to a cluster when a directory of the path is named after it) or `-` for a
    /// multi-document stream on stdin (`helm template … | cmesh lint -`). Without any, the
    /// clusters of the mesh.yaml given with -f are linted live.
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Only these clusters (live; repeatable).
    #[arg(long)]
    pub cluster: Vec<String>,
    /// mesh.yaml for offline linting (cluster names, Cilium version, settings); default the
    /// -f file when it exists (or, for `-f DIR`, DIR/mesh.yaml).
    #[arg(long, value_name = "FILE")]
    pub mesh: Option<PathBuf>,
    /// The Cilium version, for offline linting without a mesh.yaml.
    #[arg(long, value_name = "VERSION")]
    pub cilium_version: Option<String>,
    /// Exit 1 on warnings too.
    #[arg(long)]
    pub strict: bool,
    /// Bound on each Kubernetes API request.
    #[arg(long, default_value = "15s", value_parser = parse_timeout)]
    pub request_timeout: TimeoutArg,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// `cmesh apply`.
#[derive(Debug, Args)]
pub(crate) struct ApplyArgs {
    /// Only this phase (default: base on every cluster, then mesh on every cluster).
    #[arg(long, value_enum)]
    pub phase: Option<PhaseArg>,
    /// Only these clusters (repeatable).
    #[arg(long)]
    pub cluster: Vec<String>,
    /// Print the plan (as `cmesh plan` does) and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Apply the plan without asking. Needed when stdin or stderr is not a terminal and the
    /// plan changes something.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Also disconnect the clusters that left mesh.yaml (pki.dir/membership.yaml records
    /// them), after their peers have dropped them: release upgraded without the mesh, the
    /// mesh's Secrets deleted, agents restarted. Cilium stays installed.
    #[arg(long)]
    pub prune: bool,
    /// The helm binary (default: $CMESH_HELM, then helm on PATH).
    #[arg(long, value_name = "PATH")]
    pub helm: Option<PathBuf>,
    /// Install this local chart (directory or .tgz) instead of `cilium` from cilium.repo.
    #[arg(long, value_name = "PATH")]
    pub chart: Option<PathBuf>,
    /// Bound on each helm run and each wait for rollouts.
    #[arg(long, default_value = "5m", value_parser = parse_timeout)]
    pub timeout: TimeoutArg,
    /// Bound on each Kubernetes API request.
    #[arg(long, default_value = "15s", value_parser = parse_timeout)]
    pub request_timeout: TimeoutArg,
    /// How often to poll rollouts.
    #[arg(long, default_value = "1s", value_parser = parse_timeout, hide = true)]
    pub poll: TimeoutArg,
    /// Output format: the summary (or the `--dry-run` plan) as a table, or one JSON document.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Change one cluster at a time, in mesh.yaml's order, and wait after each until `status`
    /// passes on every cluster (drift aside) before the next; stop at the first that does not
    /// within --timeout. Always on while a CA rotation is in progress.
    #[arg(long)]
    pub one_at_a_time: bool,
    /// Why clusters go one at a time, for the gates' report (set by `upgrade`).
    #[arg(skip)]
    pub why: Option<String>,
}

/// `cmesh plan`.
#[derive(Debug, Args)]
pub(crate) struct PlanArgs {
    /// Only this phase (default: base then mesh, as apply).
    #[arg(long, value_enum)]
    pub phase: Option<PhaseArg>,
    /// Only these clusters (repeatable).
    #[arg(long)]
    pub cluster: Vec<String>,
    /// Plan the disconnection of clusters that left mesh.yaml, as `apply --prune` would.
    #[arg(long)]
    pub prune: bool,
    /// The helm binary (default: $CMESH_HELM, then helm on PATH).
    #[arg(long, value_name = "PATH")]
    pub helm: Option<PathBuf>,
    /// Plan for this local chart (directory or .tgz) instead of `cilium` from cilium.repo.
    #[arg(long, value_name = "PATH")]
    pub chart: Option<PathBuf>,
    /// Bound on each Kubernetes API request.
    #[arg(long, default_value = "15s", value_parser = parse_timeout)]
    pub request_timeout: TimeoutArg,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// `cmesh upgrade`.
#[derive(Debug, Args)]
pub(crate) struct UpgradeArgs {
    /// The Cilium version to reach (e.g. 1.20.0).
    #[arg(long, value_name = "VERSION")]
    pub to: String,
    /// Show the steps (mesh.yaml settings, Cilium's changes, values per cluster) and change
    /// nothing. Needs pki.dir, not the clusters.
    #[arg(long)]
    pub plan: bool,
    /// The patch release to pass through for a minor on the way (repeatable; default: the
    /// newest patch of each minor cmesh was checked against).
    #[arg(long, value_name = "VERSION")]
    pub via: Vec<String>,
    /// Install a local chart (directory or .tgz) for one version, as VERSION=PATH (repeatable);
    /// versions not named use `cilium` from cilium.repo.
    #[arg(long, value_name = "VERSION=PATH")]
    pub chart: Vec<String>,
    /// Upgrade without asking. Needed when stdin or stderr is not a terminal.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// The helm binary (default: $CMESH_HELM, then helm on PATH).
    #[arg(long, value_name = "PATH")]
    pub helm: Option<PathBuf>,
    /// Bound on each helm run, each wait for rollouts and each status gate.
    #[arg(long, default_value = "5m", value_parser = parse_timeout)]
    pub timeout: TimeoutArg,
    /// Bound on each Kubernetes API request.
    #[arg(long, default_value = "15s", value_parser = parse_timeout)]
    pub request_timeout: TimeoutArg,
    /// How often to poll rollouts and gates.
    #[arg(long, default_value = "1s", value_parser = parse_timeout, hide = true)]
    pub poll: TimeoutArg,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// `cmesh disconnect`.
#[derive(Debug, Args)]
pub(crate) struct DisconnectArgs {
    /// The cluster's name (`cluster.name` in its release).
    pub name: String,
    /// Its kubeconfig (default: the one pki.dir/membership.yaml recorded for it).
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// Its context.
    #[arg(long)]
    pub context: Option<String>,
    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Disconnect without asking.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Disconnect even though the record says its peers still list it (an `apply` since it
    /// left mesh.yaml drops it from them first).
    #[arg(long)]
    pub force: bool,
    /// The helm binary (default: $CMESH_HELM, then helm on PATH).
    #[arg(long, value_name = "PATH")]
    pub helm: Option<PathBuf>,
    /// The chart to upgrade its release with (default: `cilium` at the version it runs, from
    /// cilium.repo).
    #[arg(long, value_name = "PATH")]
    pub chart: Option<PathBuf>,
    /// Bound on helm and on each wait for rollouts.
    #[arg(long, default_value = "5m", value_parser = parse_timeout)]
    pub timeout: TimeoutArg,
    /// Bound on each Kubernetes API request.
    #[arg(long, default_value = "15s", value_parser = parse_timeout)]
    pub request_timeout: TimeoutArg,
    /// How often to poll rollouts.
    #[arg(long, default_value = "1s", value_parser = parse_timeout, hide = true)]
    pub poll: TimeoutArg,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// `cmesh status`.
#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// Only these clusters (repeatable).
    #[arg(long)]
    pub cluster: Vec<String>,
    /// Poll until every check passes or --timeout expires.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits.
    #[arg(long, default_value = "5m", value_parser = parse_timeout)]
    pub timeout: TimeoutArg,
    /// Bound on each Kubernetes API request.
    #[arg(long, default_value = "15s", value_parser = parse_timeout)]
    pub request_timeout: TimeoutArg,
    /// Poll interval of --wait.
    #[arg(long, default_value = "2s", value_parser = parse_timeout, hide = true)]
    pub interval: TimeoutArg,
    /// The helm binary for the drift check (default: $CMESH_HELM, then PATH).
    #[arg(long, value_name = "PATH")]
    pub helm: Option<PathBuf>,
    /// Output format: the checks as a table or JSON, or the mesh as a picture (Mermaid, or
    /// Graphviz DOT for `dot -Tsvg`) with each peering coloured by its state.
    #[arg(long, short = 'o', value_enum, default_value_t = StatusOutput::Table)]
    pub output: StatusOutput,
}

/// `status -o`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub(crate) enum StatusOutput {
    /// Human-readable.
    #[default]
    Table,
    /// One JSON document on stdout.
    Json,
    /// A Mermaid flowchart (GitHub, GitLab and many wikis draw it).
    Mermaid,
    /// A Graphviz digraph.
    Dot,
}

/// A timeout such as `5s` or `500ms`.
#[derive(Debug, Clone)]
pub(crate) struct TimeoutArg(pub std::time::Duration);

/// A wait that may be zero.
fn parse_wait(s: &str) -> Result<TimeoutArg, String> {
    human(s).map(TimeoutArg)
}

fn parse_timeout(s: &str) -> Result<TimeoutArg, String> {
    let d = human(s)?;
    if d.is_zero() {
        return Err("a timeout must be positive".into());
    }
    Ok(TimeoutArg(d))
}

/// `cmesh probe`.
#[derive(Debug, Args)]
pub(crate) struct ProbeArgs {
    /// Probe only these clusters' endpoints (repeatable; default all).
    #[arg(long)]
    pub cluster: Vec<String>,
    /// Dial as these peers (repeatable; default every other cluster).
    #[arg(long)]
    pub from: Vec<String>,
    /// Bound on each stage (resolve, connect, handshake, each etcd call).
    #[arg(long, default_value = "5s", value_parser = parse_timeout)]
    pub timeout: TimeoutArg,
    /// Probes running at once.
    #[arg(long, default_value_t = 32, hide = true)]
    pub parallel: usize,
    /// Use each peer's client certificate and CA from its cluster (Secret
    /// clustermesh-apiserver-remote-cert) instead of pki.dir.
    #[arg(long)]
    pub certs_from_cluster: bool,
    /// Bound on each Kubernetes API request (with --certs-from-cluster).
    #[arg(long, default_value = "15s", value_parser = parse_timeout)]
    pub request_timeout: TimeoutArg,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// `--phase`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum PhaseArg {
    /// Cilium with the shared CA, without Cluster Mesh (the article's step 03).
    Base,
    /// Everything, Cluster Mesh included (step 05).
    #[default]
    Mesh,
}

impl From<PhaseArg> for cmesh_core::render::Phase {
    fn from(p: PhaseArg) -> Self {
        match p {
            PhaseArg::Base => cmesh_core::render::Phase::Base,
            PhaseArg::Mesh => cmesh_core::render::Phase::Mesh,
        }
    }
}

/// `cmesh render`.
#[derive(Debug, Args)]
pub(crate) struct RenderArgs {
    /// Output directory (replaced as a whole, atomically).
    #[arg(long, default_value = "cmesh-out", value_name = "DIR")]
    pub out: PathBuf,
    /// Write `<cluster>/secrets.yaml` files here instead of into the output directory.
    #[arg(long, value_name = "DIR")]
    pub secrets_out: Option<PathBuf>,
    /// Which values to render.
    #[arg(long, value_enum, default_value_t = PhaseArg::Mesh)]
    pub phase: PhaseArg,
    /// Write nothing; exit 6 if the tree on disk (or the PKI) differs from what would be rendered.
    #[arg(long)]
    pub check: bool,
    /// Replace the output directory even if it holds files cmesh did not write.
    #[arg(long)]
    pub force: bool,
    /// The git repository Argo CD and Flux read the tree from (default: mesh.yaml `gitops.repoURL`).
    #[arg(long, value_name = "URL")]
    pub git_repo: Option<String>,
    /// The branch, tag or commit they follow (default: `gitops.revision`, else `HEAD`).
    #[arg(long, value_name = "REV")]
    pub git_revision: Option<String>,
    /// The tree's directory in that repository (default: `gitops.path`, else `cmesh-out`).
    #[arg(long, value_name = "PATH")]
    pub git_path: Option<String>,
    /// Also write the --git-repo, --git-revision and --git-path given into mesh.yaml's
    /// `gitops:` block (in place, comments kept), so that later runs need no flags.
    #[arg(long, conflicts_with = "check")]
    pub save: bool,
    /// Output format: what was written (or, with --check, what differs) as text or one JSON
    /// document.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// `cmesh pki`.
#[derive(Debug, Args)]
pub(crate) struct PkiArgs {
    /// The operation.
    #[command(subcommand)]
    pub command: PkiCommand,
}

/// A duration such as `30d`, `720h` or `2w`, with its text for messages.
#[derive(Debug, Clone)]
pub(crate) struct DurationArg(pub time::Duration, pub String);

fn parse_duration(s: &str) -> Result<DurationArg, String> {
    let d = human(s)?;
    let d = time::Duration::try_from(d).map_err(|_| format!("`{s}` is too long"))?;
    Ok(DurationArg(d, s.trim().to_owned()))
}

/// Every duration flag reads one grammar, humantime's: `500ms`, `30s`, `1m30s`, `1h`, `90d`,
/// `2w`. A bare number is refused (it meant seconds in some flags and days in another).
fn human(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "`{t}` has no unit: write {t}s, {t}m, {t}h or {t}d (a duration such as 1m30s or 90d)"
        ));
    }
    humantime::parse_duration(t)
        .map_err(|e| format!("`{t}` is not a duration such as 500ms, 1m30s, 1h or 90d: {e}"))
}

/// `cmesh pki` operations.
#[derive(Debug, Subcommand)]
pub(crate) enum PkiCommand {
    /// Create the mesh CA in pki.dir (render does this on first use).
    Init {
        /// Replace an existing CA (every cluster must then be re-rendered and re-applied).
        #[arg(long)]
        force: bool,
    },
    /// Adopt an existing CA, such as the one in a cluster's `cilium-ca` Secret.
    Import {
        /// CA certificate (PEM).
        #[arg(long, value_name = "FILE")]
        cert: PathBuf,
        /// CA private key (PEM: PKCS#8, PKCS#1 RSA or SEC1 EC).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// Replace a different CA already in pki.dir.
        #[arg(long)]
        force: bool,
    },
    /// Show the CA (subject, fingerprints, validity) and what uses it. Never prints keys.
    Show {
        /// Output format.
        #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
        output: Output,
        /// Rendered tree to search for files that carry the CA.
        #[arg(long = "out", default_value = "cmesh-out", value_name = "DIR")]
        out_dir: PathBuf,
    },
    /// Rotate the mesh CA in stages, without a moment of broken trust (docs/rotation.md):
    /// begin, render + apply, reissue, render + apply, finish, render + apply.
    #[command(subcommand)]
    Rotate(RotateCommand),
    /// Re-issue certificates that expire soon (or all with --force).
    Renew {
        /// Re-issue what expires within this window.
        #[arg(long, default_value = "30d", value_parser = parse_duration, value_name = "DURATION")]
        renew_before: DurationArg,
        /// Only these clusters (repeatable).
        #[arg(long)]
        cluster: Vec<String>,
        /// Re-issue every selected certificate.
        #[arg(long)]
        force: bool,
    },
}

/// `cmesh pki rotate` stages.
#[derive(Debug, Subcommand)]
pub(crate) enum RotateCommand {
    /// Create the new CA (or import one) beside the current one: from the next render every
    /// cluster trusts both, and the current CA still issues every certificate.
    Begin {
        /// The new CA's certificate (PEM), instead of one cmesh creates.
        #[arg(long, value_name = "FILE", requires = "key")]
        cert: Option<PathBuf>,
        /// The new CA's private key (PEM: PKCS#8, PKCS#1 RSA or SEC1 EC).
        #[arg(long, value_name = "FILE", requires = "cert")]
        key: Option<PathBuf>,
    },
    /// From the next render the new CA issues every certificate; both CAs stay trusted.
    Reissue,
    /// The new CA becomes the mesh CA and leaves the old one out of the trust; the old CA's
    /// key moves to pki.dir's retired/ (never deleted).
    Finish,
    /// Go back to the current CA alone: at once after `begin`; after `reissue` in two steps
    /// (certificates back to the current CA first, then the new CA out of the trust).
    Abort,
    /// The stage, both CAs' fingerprints and expiry, and what to run next.
    Status {
        /// Output format.
        #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
        output: Output,
    },
}

/// `cmesh init`.
#[derive(Debug, Args)]
pub(crate) struct InitArgs {
    /// Number of clusters to generate (distinct IDs, NodePorts and CIDRs).
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub clusters: usize,
    /// Cilium chart version: the newest cmesh has tested (a release Cilium still maintains);
    /// `--cilium-version 1.14.2` is the reference article's (what `--example` renders).
    #[arg(long, default_value = cmesh_core::version::NEWEST_TESTED, value_name = "VERSION")]
    pub cilium_version: String,
    /// Mesh name.
    #[arg(long, default_value = "homelab")]
    pub name: String,
    /// Replace an existing file.
    #[arg(long)]
    pub force: bool,
}

/// Output format of reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub(crate) enum Output {
    /// Human-readable.
    #[default]
    Table,
    /// One JSON document on stdout.
    Json,
}

/// `cmesh check`.
#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_one_grammar() {
        let secs = |s: &str| parse_timeout(s).map(|t| t.0.as_secs_f64());
        assert_eq!(secs("500ms"), Ok(0.5));
        assert_eq!(secs("1m30s"), Ok(90.0));
        assert_eq!(secs("1h"), Ok(3600.0));
        assert_eq!(secs("2h 30m"), Ok(9000.0));
        assert!(secs("0s").unwrap_err().contains("positive"));
        assert!(secs("30").unwrap_err().contains("has no unit: write 30s"));
        assert!(secs("5 parsecs").unwrap_err().contains("not a duration"));
        assert_eq!(parse_wait("0s").map(|t| t.0), Ok(std::time::Duration::ZERO));
        let days = |s: &str| parse_duration(s).map(|d| d.0.whole_days());
        assert_eq!(days("90d"), Ok(90));
        assert_eq!(days("2w"), Ok(14));
        assert_eq!(days("720h"), Ok(30));
        assert!(days("30").unwrap_err().contains("30d"));
    }
}
