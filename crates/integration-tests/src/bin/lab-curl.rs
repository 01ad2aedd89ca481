//! The lab's `curl`: what a client pod's curl would get, for `cmesh test`'s batches exec'd by
//! kwok. Pods here are kwok's (nothing runs in them) and no datapath exists, so this stands in
//! for the packets, and only for them; every decision comes from real state:
//!
//! - **names** resolve as cluster DNS would: `<service>.<namespace>[.svc[.cluster.local]]` in the
//!   client's cluster (the real API server's Service), or not at all;
//! - **a pod IP** is answered by the pod that has it; one of another cluster only when the
//!   client cluster's agents know a node of that cluster whose pod range covers it (read as
//!   the agent reads it, see `lab::agentview`: KVStoreMesh's mirror of the peer's nodes);
//! - **a Service** balances over its ready EndpointSlice endpoints and, when it is global
//!   (`service.cilium.io/global`), over the backends each peer's clustermesh-apiserver exported
//!   (the real `ClusterService` records, shared or not, as the agent reads them), with
//!   `service.cilium.io/affinity` as Cilium's load balancer applies it;
//! - **ingress-nginx** (its controller Service) routes by the Ingress's host to the Service's
//!   local endpoints, answering 503 when there are none and 404 without a rule, unless the
//!   Ingress has `nginx.ingress.kubernetes.io/service-upstream: "true"`: then to the Service;
//! - **an answer** is what the backend pod's nginx configuration (its ConfigMap) returns;
//! - **a firewall** between clusters is the lab's `blocked` file (`FROM TO` per line): packets
//!   of those pairs time out.
//!
//! Timeouts are reported at once rather than waited for. Decisions are cached for two seconds
//! per URL (a batch is one decision, then random picks), as real endpoints change no faster.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use integration_tests::lab::agentview;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::api::{Api, ListParams};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LabCluster {
    name: String,
    dir: PathBuf,
    kubeconfig: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Backend {
    cluster: String,
    ip: String,
    body: String,
}

/// What a URL comes to, before the random pick.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Decision {
    /// curl fails: exit code and message.
    Fail(i32, String),
    /// An HTTP page that is not a backend's (ingress-nginx's 404 and 503).
    Page(u16, String),
    /// Pick one.
    Backends(Vec<Backend>),
}

struct Args {
    url: String,
    host: Option<String>,
    write_out: String,
    timeout_ms: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut url = None;
    let mut host = None;
    let mut write_out = String::new();
    let mut timeout_ms = 10_000;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "-o" | "--connect-timeout" => {
                it.next();
            }
            "--max-time" | "-m" => {
                if let Some(t) = it.next().and_then(|t| t.parse::<f64>().ok()) {
                    timeout_ms = (t * 1000.0) as u64;
                }
            }
            "-H" | "--header" => {
                if let Some(h) = it.next()
                    && let Some(v) = h.strip_prefix("Host:")
                {
                    host = Some(v.trim().to_owned());
                }
            }
            "-w" | "--write-out" => write_out = it.next().unwrap_or_default(),
            s if s.starts_with('-') => {}
            s => url = Some(s.to_owned()),
        }
    }
    Ok(Args {
        url: url.ok_or("curl: no URL specified")?,
        host,
        write_out,
        timeout_ms,
    })
}

fn rng() -> u64 {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut x = t ^ (u64::from(std::process::id()) << 32) ^ 0x9e37_79b9_7f4a_7c15;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

async fn client(c: &LabCluster) -> Result<kube::Client, String> {
    let kc = kube::config::Kubeconfig::read_from(&c.kubeconfig).map_err(|e| e.to_string())?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .map_err(|e| e.to_string())?;
    kube::Client::try_from(cfg).map_err(|e| e.to_string())
}

fn blocked(lab: &Path, from: &str, to: &str) -> bool {
    agentview::read(&lab.join("blocked"))
        .lines()
        .any(|l| l.split_whitespace().collect::<Vec<_>>() == [from, to])
}

/// The answer nginx gives from `pod`: the `return 200 "..."` of the configuration in its
/// ConfigMap volume, with `$hostname` the pod's name.
async fn body_of(c: &kube::Client, pod: &Pod) -> String {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), &ns);
    for v in pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.clone())
        .unwrap_or_default()
    {
        let Some(cv) = v.config_map else { continue };
        let Ok(cm) = cms.get(&cv.name).await else {
            continue;
        };
        for text in cm.data.unwrap_or_default().values() {
            if let Some(i) = text.find("return 200 \"") {
                let rest = &text[i + 12..];
                if let Some(end) = rest.find('"') {
                    return rest[..end].replace("$hostname", &name).replace("\\n", "\n");
                }
            }
        }
    }
    String::new()
}

async fn pod_by_ip(c: &kube::Client, ip: &str) -> Option<Pod> {
    let pods: Api<Pod> = Api::all(c.clone());
    pods.list(&ListParams::default().fields(&format!("status.podIP={ip}")))
        .await
        .ok()?
        .items
        .into_iter()
        .find(|p| p.metadata.deletion_timestamp.is_none())
}

fn contains(net: std::net::Ipv4Addr, len: u32, ip: &str) -> bool {
    let Ok(i) = ip.parse::<std::net::Ipv4Addr>() else {
        return false;
    };
    let mask = if len == 0 {
        0
    } else {
        u32::MAX << (32 - len.min(32))
    };
    u32::from(net) & mask == u32::from(i) & mask
}

struct World {
    lab: PathBuf,
    me: LabCluster,
    clusters: Vec<LabCluster>,
    clients: BTreeMap<String, kube::Client>,
}

impl World {
    async fn client(&mut self, name: &str) -> Result<kube::Client, String> {
        if let Some(c) = self.clients.get(name) {
            return Ok(c.clone());
        }
        let lc = self
            .clusters
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| format!("no cluster {name}"))?
            .clone();
        let c = client(&lc).await?;
        self.clients.insert(name.to_owned(), c.clone());
        Ok(c)
    }

    fn agent_dir(&self) -> PathBuf {
        self.me.dir.join("pods/agent")
    }

    /// A pod IP: its own cluster's, or a peer's the agents can route to.
    async fn pod_ip(&mut self, ip: &str, timeout_ms: u64) -> Result<Decision, String> {
        let me = self.me.name.clone();
        let own = self.client(&me).await?;
        if let Some(p) = pod_by_ip(&own, ip).await {
            let body = body_of(&own, &p).await;
            return Ok(Decision::Backends(vec![Backend {
                cluster: me,
                ip: ip.into(),
                body,
            }]));
        }
        let timeout = Decision::Fail(
            28,
            format!("(28) Connection timed out after {timeout_ms} milliseconds"),
        );
        let names: Vec<String> = self.clusters.iter().map(|c| c.name.clone()).collect();
        for name in names.into_iter().filter(|n| *n != me) {
            let c = self.client(&name).await?;
            let Some(p) = pod_by_ip(&c, ip).await else {
                continue;
            };
            if blocked(&self.lab, &me, &name) {
                return Ok(timeout);
            }
            // Routable when the agents know a node of that cluster covering the address.
            let local_id = agentview::config_value(&self.agent_dir(), "cluster-id");
            let known = agentview::peers(&self.agent_dir())
                .iter()
                .filter(|peer| peer.name == name)
                .map(|peer| agentview::observe(&self.agent_dir(), peer, &local_id))
                .any(|r| {
                    r.nodes.iter().any(|n| {
                        agentview::alloc_cidr(n).is_some_and(|(net, len)| contains(net, len, ip))
                    })
                });
            if !known {
                return Ok(timeout);
            }
            let body = body_of(&c, &p).await;
            return Ok(Decision::Backends(vec![Backend {
                cluster: name,
                ip: ip.into(),
                body,
            }]));
        }
        Ok(timeout)
    }

    /// The ready endpoints of Service `ns/name` in the client's cluster.
    async fn local_backends(&mut self, ns: &str, name: &str) -> Result<Vec<Backend>, String> {
        let me = self.me.name.clone();
        let own = self.client(&me).await?;
        let slices: Api<EndpointSlice> = Api::namespaced(own.clone(), ns);
        let list = slices
            .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={name}")))
            .await
            .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for s in list.items {
            for e in s.endpoints.unwrap_or_default() {
                if e.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                    continue;
                }
                for ip in e.addresses {
                    let body = match pod_by_ip(&own, &ip).await {
                        Some(p) => body_of(&own, &p).await,
                        None => String::new(),
                    };
                    out.push(Backend {
                        cluster: me.clone(),
                        ip,
                        body,
                    });
                }
            }
        }
        Ok(out)
    }

    /// The backends the peers exported for `ns/name`, as the agents read them.
    async fn remote_backends(&mut self, ns: &str, name: &str) -> Result<Vec<Backend>, String> {
        let agent = self.agent_dir();
        let local_id = agentview::config_value(&agent, "cluster-id");
        let mut out = Vec::new();
        let peers = agentview::peers(&agent);
        let remotes = agentview::observe_all(&agent, &peers, &local_id);
        for (peer, r) in peers.iter().zip(remotes) {
            if !r.connected {
                continue;
            }
            let key = format!("{}/services/v1/{}/{ns}/{name}", r.base, peer.name);
            let Ok(text) = agentview::etcdctl(&agent, peer, &["get", "--print-value-only", &key])
            else {
                continue;
            };
            let Ok(svc) = serde_json::from_str::<serde_json::Value>(text.trim()) else {
                continue;
            };
            if svc.get("shared").and_then(serde_json::Value::as_bool) == Some(false) {
                continue;
            }
            let c = self.client(&peer.name).await?;
            for ip in svc
                .get("backends")
                .and_then(|b| b.as_object())
                .map(|m| m.keys().cloned().collect::<Vec<_>>())
                .unwrap_or_default()
            {
                let body = match pod_by_ip(&c, &ip).await {
                    Some(p) => body_of(&c, &p).await,
                    None => String::new(),
                };
                out.push(Backend {
                    cluster: peer.name.clone(),
                    ip,
                    body,
                });
            }
        }
        Ok(out)
    }

    /// A Service as Cilium's load balancer serves it.
    async fn service(&mut self, svc: &Service) -> Result<Decision, String> {
        let ns = svc.metadata.namespace.clone().unwrap_or_default();
        let name = svc.metadata.name.clone().unwrap_or_default();
        let ann = svc.metadata.annotations.clone().unwrap_or_default();
        let local = self.local_backends(&ns, &name).await?;
        let global = ann.get("service.cilium.io/global").map(String::as_str) == Some("true");
        let remote = if global {
            self.remote_backends(&ns, &name).await?
        } else {
            Vec::new()
        };
        let all = match ann.get("service.cilium.io/affinity").map(String::as_str) {
            Some("local") if !local.is_empty() => local,
            Some("remote") if !remote.is_empty() => remote,
            _ => local.into_iter().chain(remote).collect(),
        };
        if all.is_empty() {
            return Ok(Decision::Fail(
                7,
                format!("(7) Failed to connect to {name}.{ns}.svc port 8080: Connection refused"),
            ));
        }
        Ok(Decision::Backends(all))
    }

    /// ingress-nginx: the Ingress of `host` served by this controller's class.
    async fn ingress(&mut self, host: Option<&str>) -> Result<Decision, String> {
        let me = self.me.name.clone();
        let own = self.client(&me).await?;
        let classes: Api<IngressClass> = Api::all(own.clone());
        let ours: Vec<String> = classes
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?
            .items
            .into_iter()
            .filter(|c| {
                c.spec.as_ref().and_then(|s| s.controller.as_deref())
                    == Some("k8s.io/ingress-nginx")
            })
            .filter_map(|c| c.metadata.name)
            .collect();
        let ingresses: Api<Ingress> = Api::all(own.clone());
        let list = ingresses
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        let page = |code: u16, text: &str| {
            Decision::Page(
                code,
                format!(
                    "<html>\n<head><title>{code} {text}</title></head>\n<body>\n<center><h1>{code} {text}</h1></center>\n<hr><center>nginx</center>\n</body>\n</html>\n"
                ),
            )
        };
        for ing in list.items {
            let class = ing.spec.as_ref().and_then(|s| s.ingress_class_name.clone());
            if !class.is_some_and(|c| ours.contains(&c)) {
                continue;
            }
            let ns = ing.metadata.namespace.clone().unwrap_or_default();
            let upstream = ing
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("nginx.ingress.kubernetes.io/service-upstream"))
                .map(String::as_str)
                == Some("true");
            for rule in ing
                .spec
                .as_ref()
                .and_then(|s| s.rules.clone())
                .unwrap_or_default()
            {
                if rule.host.as_deref() != host {
                    continue;
                }
                let Some(backend) = rule
                    .http
                    .and_then(|h| h.paths.into_iter().next())
                    .and_then(|p| p.backend.service)
                else {
                    continue;
                };
                let svcs: Api<Service> = Api::namespaced(own.clone(), &ns);
                let Ok(svc) = svcs.get(&backend.name).await else {
                    return Ok(page(503, "Service Temporarily Unavailable"));
                };
                if upstream {
                    return match self.service(&svc).await? {
                        Decision::Fail(..) => Ok(page(502, "Bad Gateway")),
                        d => Ok(d),
                    };
                }
                let local = self.local_backends(&ns, &backend.name).await?;
                return Ok(if local.is_empty() {
                    page(503, "Service Temporarily Unavailable")
                } else {
                    Decision::Backends(local)
                });
            }
        }
        Ok(page(404, "Not Found"))
    }

    async fn decide(&mut self, args: &Args) -> Result<Decision, String> {
        let rest = args
            .url
            .strip_prefix("http://")
            .ok_or_else(|| format!("(1) Protocol not supported: {}", args.url))?;
        let authority = rest.split('/').next().unwrap_or_default();
        let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
        if host.parse::<std::net::Ipv4Addr>().is_ok() {
            return self.pod_ip(host, args.timeout_ms).await;
        }
        let labels: Vec<&str> = host.trim_end_matches(".cluster.local").split('.').collect();
        let (name, ns) = match labels.as_slice() {
            [name, ns] | [name, ns, "svc"] => (*name, *ns),
            _ => {
                return Ok(Decision::Fail(
                    6,
                    format!("(6) Could not resolve host: {host}"),
                ));
            }
        };
        let me = self.me.name.clone();
        let own = self.client(&me).await?;
        let svcs: Api<Service> = Api::namespaced(own, ns);
        let Ok(svc) = svcs.get(name).await else {
            return Ok(Decision::Fail(
                6,
                format!("(6) Could not resolve host: {host}"),
            ));
        };
        let l = svc.metadata.labels.clone().unwrap_or_default();
        if l.get("app.kubernetes.io/name").map(String::as_str) == Some("ingress-nginx")
            && l.get("app.kubernetes.io/component").map(String::as_str) == Some("controller")
        {
            return self.ingress(args.host.as_deref()).await;
        }
        self.service(&svc).await
    }
}

fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::from(2);
        }
    };
    let cwd = std::env::current_dir().expect("cwd");
    let lab = cwd.parent().expect("lab dir").to_path_buf();
    let clusters: Vec<LabCluster> =
        serde_json::from_str(&agentview::read(&lab.join("lab.json"))).expect("lab.json");
    let me_name = cwd
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_owned();
    let Some(me) = clusters.iter().find(|c| c.name == me_name).cloned() else {
        eprintln!("curl (lab stand-in): run from a cluster directory of the lab");
        return std::process::ExitCode::from(2);
    };
    let key = format!("{:x}", {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (&args.url, &args.host).hash(&mut h);
        h.finish()
    });
    let cache = me.dir.join("curl-cache").join(key);
    let fresh = std::fs::metadata(&cache)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age.as_secs_f64() < 2.0);
    let decision = match fresh
        .then(|| serde_json::from_str::<Decision>(&agentview::read(&cache)).ok())
        .flatten()
    {
        Some(d) => d,
        None => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let mut world = World {
                lab: lab.clone(),
                me,
                clusters,
                clients: BTreeMap::new(),
            };
            let d = match rt.block_on(world.decide(&args)) {
                Ok(d) => d,
                Err(e) => Decision::Fail(7, format!("(7) lab stand-in: {e}")),
            };
            if let Some(dir) = cache.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let _ = std::fs::write(&cache, serde_json::to_string(&d).unwrap_or_default());
            d
        }
    };
    let (code, body, exit) = match decision {
        Decision::Fail(exit, msg) => {
            eprintln!("curl: {msg}");
            (0u16, String::new(), exit)
        }
        Decision::Page(code, html) => (code, html, 0),
        Decision::Backends(b) => {
            let pick = &b[(rng() % b.len() as u64) as usize];
            let me = cwd.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if pick.cluster != me && blocked(&lab, me, &pick.cluster) {
                eprintln!(
                    "curl: (28) Connection timed out after {} milliseconds",
                    args.timeout_ms
                );
                (0, String::new(), 28)
            } else {
                (200, pick.body.clone(), 0)
            }
        }
    };
    print!("{body}");
    let out = args
        .write_out
        .replace("%{http_code}", &format!("{code:03}"))
        .replace("%{time_total}", "0.002")
        .replace("\\n", "\n");
    print!("{out}");
    std::process::ExitCode::from(u8::try_from(exit).unwrap_or(1))
}
