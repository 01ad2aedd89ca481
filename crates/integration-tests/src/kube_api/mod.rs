//! An in-process Kubernetes API server for tests, reached like a real one: HTTPS with
//! client-certificate authentication on 127.0.0.1, through a generated kubeconfig. It is good
//! enough for the real helm binary to install and upgrade charts, and for kube-rs (typed
//! clients, server-side apply, patches, exec over WebSocket).
//!
//! What it is not: no admission, no validation against schemas, no garbage collection beyond
//! pods of rolled-out workloads, watches that end after the initial list, server-side apply
//! without field ownership. docs/testing.md lists the limits.

pub mod controllers;
pub mod mesh;
pub mod protobuf;
pub mod scenario;
pub mod server;
pub mod store;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use cmesh_core::pki::{Ca, LeafRequest};
use cmesh_core::spec::KeyAlgorithm;
use serde_json::Value;

pub use server::{FailRule, Faults};
pub use store::Store;

/// One exec call.
#[derive(Debug, Clone)]
pub struct ExecRequest {
    /// Namespace.
    pub namespace: String,
    /// Pod.
    pub pod: String,
    /// Container, if given.
    pub container: Option<String>,
    /// The command.
    pub command: Vec<String>,
}

/// What an exec returns.
#[derive(Debug, Clone, Default)]
pub struct ExecResult {
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// Exit code.
    pub code: i32,
}

/// An exec handler. It must lock at most one cluster's store at a time (handlers of several
/// clusters run concurrently and read each other).
pub type ExecHandler = Arc<dyn Fn(&ExecRequest) -> ExecResult + Send + Sync>;

/// How the simulated controllers behave.
#[derive(Debug, Clone)]
pub struct Sim {
    /// Node names.
    pub nodes: Vec<String>,
    /// Third octet of node and pod addresses, distinct per cluster.
    pub node_subnet: u8,
    /// Do agent pods become ready?
    pub agents_ready: bool,
    /// Workloads (by name) whose pods never become ready.
    pub not_ready: BTreeSet<String>,
    /// Time between a spec change and the rollout completing.
    pub rollout_delay: Duration,
    /// Agents report every remote cluster as not ready (the "0/1 ready" fault).
    pub report_not_ready: bool,
    /// Annotations a policy engine removes from every Ingress (as Kyverno or a mutating
    /// webhook might).
    pub strip_ingress_annotations: BTreeSet<String>,
    /// Services (by name, outside kube-system) that something keeps deleting, as a GitOps
    /// prune of objects it does not know would.
    pub delete_services: BTreeSet<String>,
}

/// Everything one fake cluster holds.
pub struct State {
    /// Cluster name.
    pub name: String,
    /// Objects.
    pub store: Mutex<Store>,
    /// Injected faults.
    pub faults: Mutex<Faults>,
    /// Every request, `METHOD path?query`.
    pub requests: Mutex<Vec<String>>,
    /// Controller behaviour.
    pub sim: Mutex<Sim>,
    /// False while the cluster is down.
    pub up: std::sync::atomic::AtomicBool,
    pending: Mutex<HashMap<String, Instant>>,
    exec: Mutex<Option<ExecHandler>>,
}

impl State {
    fn after_write(&self, method: &http::Method) {
        if method != http::Method::GET {
            controllers::reconcile(self);
        }
    }

    fn run_exec(&self, req: &ExecRequest) -> ExecResult {
        let handler = self.exec.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match handler {
            Some(h) => h(req),
            None => ExecResult {
                stderr: format!(
                    "exec: \"{}\": executable file not found in $PATH",
                    req.command.first().cloned().unwrap_or_default()
                ),
                code: 126,
                ..ExecResult::default()
            },
        }
    }

    /// Installs the exec handler.
    pub fn set_exec(&self, h: ExecHandler) {
        *self.exec.lock().unwrap_or_else(|p| p.into_inner()) = Some(h);
    }

    /// Merge-patches an object as a test's outside actor would (a user, another controller).
    ///
    /// # Panics
    /// If the resource or the object does not exist.
    pub fn merge_patch(&self, group: &str, plural: &str, ns: &str, name: &str, patch: Value) {
        let r = store::resource(group, "v1", plural).expect("resource");
        self.store
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .patch(r, ns, name, store::PatchKind::Merge, patch)
            .unwrap_or_else(|e| panic!("patch {plural} {ns}/{name}: {e:?}"));
        controllers::reconcile(self);
    }

    /// Reads an object as JSON.
    pub fn get(
        &self,
        group: &str,
        version: &str,
        plural: &str,
        ns: &str,
        name: &str,
    ) -> Option<Value> {
        let r = store::resource(group, version, plural)?;
        self.store
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(r, ns, name)
            .cloned()
    }
}

/// A running fake cluster.
pub struct FakeCluster {
    /// Its state, shared with the server.
    pub state: Arc<State>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its kubeconfig file (context and cluster named after it).
    pub kubeconfig: PathBuf,
    /// The kubeconfig text.
    pub kubeconfig_text: String,
    dir: tempfile::TempDir,
    runtime: tokio::runtime::Runtime,
    tls: Arc<rustls::ServerConfig>,
    shutdown: Option<tokio::sync::watch::Sender<bool>>,
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
}

impl FakeCluster {
    /// Starts a cluster named `name` with `nodes` nodes.
    pub fn start(name: &str, nodes: usize, node_subnet: u8) -> FakeCluster {
        let now = time::OffsetDateTime::now_utc();
        let ca = Ca::generate(
            &format!("{name} kubernetes CA"),
            KeyAlgorithm::EcdsaP256,
            30,
            now,
        )
        .expect("CA");
        let server = ca
            .issue(
                &LeafRequest {
                    common_name: "kube-apiserver".into(),
                    dns_names: vec!["localhost".into()],
                    ip_addresses: vec!["127.0.0.1".parse().expect("ip")],
                },
                KeyAlgorithm::EcdsaP256,
                30,
                now,
            )
            .expect("server cert");
        let client = ca
            .issue(
                &LeafRequest {
                    common_name: "admin".into(),
                    dns_names: vec![],
                    ip_addresses: vec![],
                },
                KeyAlgorithm::EcdsaP256,
                30,
                now,
            )
            .expect("client cert");
        let tls = Arc::new(server_config(&ca, &server.cert_pem, server.key.pem()));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(State {
            name: name.to_owned(),
            store: Mutex::new(Store::new()),
            faults: Mutex::new(Faults::default()),
            requests: Mutex::new(Vec::new()),
            sim: Mutex::new(Sim {
                nodes: (1..=nodes).map(|i| format!("{name}-node-{i}")).collect(),
                node_subnet,
                agents_ready: true,
                not_ready: BTreeSet::new(),
                rollout_delay: Duration::from_millis(150),
                report_not_ready: false,
                strip_ingress_annotations: BTreeSet::new(),
                delete_services: BTreeSet::new(),
            }),
            up: std::sync::atomic::AtomicBool::new(true),
            pending: Mutex::new(HashMap::new()),
            exec: Mutex::new(None),
        });
        controllers::reconcile(&state);
        let (tx, rx) = tokio::sync::watch::channel(false);
        runtime.spawn(server::serve(
            listener,
            Arc::clone(&tls),
            Arc::clone(&state),
            rx.clone(),
        ));
        let ticker_state = Arc::clone(&state);
        let mut tick_stop = rx;
        runtime.spawn(async move {
            let mut iv = tokio::time::interval(Duration::from_millis(50));
            loop {
                tokio::select! {
                    _ = iv.tick() => controllers::reconcile(&ticker_state),
                    _ = tick_stop.changed() => return,
                }
            }
        });
        let dir = tempfile::Builder::new()
            .prefix("cmesh-kube-")
            .tempdir()
            .expect("dir");
        let kubeconfig_text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: {name}\n  cluster:\n    server: https://{addr}\n    certificate-authority-data: {}\nusers:\n- name: {name}-admin\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: {name}\n  context:\n    cluster: {name}\n    user: {name}-admin\n    namespace: default\ncurrent-context: {name}\n",
            b64(ca.cert_pem()),
            b64(&client.cert_pem),
            b64(client.key.pem())
        );
        let kubeconfig = dir.path().join(format!("kubeconfig-{name}"));
        std::fs::write(&kubeconfig, &kubeconfig_text).expect("kubeconfig");
        FakeCluster {
            state,
            addr,
            kubeconfig,
            kubeconfig_text,
            dir,
            runtime,
            tls,
            shutdown: Some(tx),
        }
    }

    /// Stops serving: connections are refused until [`FakeCluster::up`].
    pub fn down(&mut self) {
        self.state
            .up
            .store(false, std::sync::atomic::Ordering::SeqCst);
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(true);
        }
        // Let the listener close.
        std::thread::sleep(Duration::from_millis(50));
    }

    /// Serves again on the same address.
    pub fn up(&mut self) {
        if self.shutdown.is_some() {
            return;
        }
        let listener = self
            .runtime
            .block_on(tokio::net::TcpListener::bind(self.addr))
            .expect("rebind");
        let (tx, rx) = tokio::sync::watch::channel(false);
        self.runtime.spawn(server::serve(
            listener,
            Arc::clone(&self.tls),
            Arc::clone(&self.state),
            rx,
        ));
        self.shutdown = Some(tx);
    }

    /// The directory holding the kubeconfig.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Requests seen so far.
    pub fn requests(&self) -> Vec<String> {
        self.state
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Changes the simulation.
    pub fn sim(&self, f: impl FnOnce(&mut Sim)) {
        f(&mut self.state.sim.lock().unwrap_or_else(|p| p.into_inner()));
        controllers::reconcile(&self.state);
    }

    /// Changes the faults.
    pub fn faults(&self, f: impl FnOnce(&mut Faults)) {
        f(&mut self.state.faults.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

impl Drop for FakeCluster {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(true);
        }
    }
}

fn server_config(ca: &Ca, cert_pem: &str, key_pem: &str) -> rustls::ServerConfig {
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let der = |pem: &str| cmesh_core::pki::pem_to_der(pem).expect("der");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(der(ca.cert_pem())))
        .expect("root");
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::clone(&provider),
    )
    .build()
    .expect("client verifier");
    let key_der: Vec<u8> = {
        let body: String = key_pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .expect("key")
    };
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from(der(cert_pem))],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_der)),
        )
        .expect("server cert");
    // HTTP/1.1 only: WebSocket upgrades for exec need it, and Go clients fall back to it.
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    cfg
}
