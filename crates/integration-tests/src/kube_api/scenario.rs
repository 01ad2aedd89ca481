//! What Cilium and ingress-nginx do for `cmesh test`, modelled over the fake clusters: curl in
//! a pod reaches pod IPs of other clusters when the mesh connects them; a global Service's
//! backends are merged across the clusters that share it (with `shared`, `affinity`, and
//! Cilium 1.20's global namespaces); ingress-nginx sends to a Service's local endpoints unless
//! the Ingress has `service-upstream`, and then to the Service. Faults: blocked cluster pairs
//! (dropped traffic) and whatever the objects themselves get wrong.
//!
//! The curl command is read like a shell would read it, independently of how cmesh builds it,
//! so a change in cmesh's command that real curl would not understand fails here too.

use std::collections::BTreeSet;
use std::sync::Mutex;

use serde_json::{Value, json};

use super::mesh::MeshSim;
use super::store::resource;
use super::{ExecRequest, ExecResult, State};

/// Faults and randomness of the data path.
#[derive(Debug)]
pub struct Scenario {
    /// Ordered pairs (from, to) whose pod-to-pod traffic is dropped (a firewall).
    pub blocked: BTreeSet<(String, String)>,
    rng: u64,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            blocked: BTreeSet::new(),
            rng: 0x9e37_79b9_7f4a_7c15,
        }
    }
}

impl Scenario {
    fn pick(&mut self, n: usize) -> usize {
        // xorshift64: load balancing is random in Cilium too; fixed seed, reproducible runs.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng % n as u64) as usize
    }
}

/// The scenario of a mesh simulation.
pub type Shared = Mutex<Scenario>;

fn s<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or_default()
}

fn list(state: &State, group: &str, plural: &str, ns: &str) -> Vec<Value> {
    let r = resource(group, "v1", plural).expect("resource");
    state
        .store
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .list(r, ns, &Default::default())
}

fn truthy(v: &str) -> bool {
    v.eq_ignore_ascii_case("true")
}

/// One simulated curl.
enum Outcome {
    Answer { cluster: String, pod: String },
    Page { code: u16, title: String },
    Error { exit: i32, message: String },
}

/// A curl invocation as written in the script.
struct Curl {
    count: u32,
    url: String,
    host: Option<String>,
    max_time: u32,
}

fn between<'a>(text: &'a str, start: &str, end: char) -> Option<&'a str> {
    let i = text.find(start)? + start.len();
    let rest = &text[i..];
    Some(&rest[..rest.find(end)?])
}

fn parse_script(script: &str) -> Option<Curl> {
    if !script.contains("curl ") {
        return None;
    }
    Some(Curl {
        count: between(script, "[ $i -lt ", ' ')?.parse().ok()?,
        url: between(script, "'http://", '\'').map(|u| format!("http://{u}"))?,
        host: between(script, "-H 'Host: ", '\'').map(str::to_owned),
        max_time: between(script, "--max-time ", ' ')?.parse().ok()?,
    })
}

fn ready(pod: &Value) -> bool {
    s(pod, "/status/phase") == "Running"
        && pod
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|c| s(c, "/type") == "Ready" && s(c, "/status") == "True")
}

fn selects(selector: &Value, pod: &Value) -> bool {
    let Some(sel) = selector.as_object() else {
        return false;
    };
    !sel.is_empty()
        && sel.iter().all(|(k, v)| {
            pod.pointer(&format!("/metadata/labels/{}", k.replace('/', "~1"))) == Some(v)
        })
}

impl MeshSim {
    /// Blocks pod traffic from `from` to `to` (one direction).
    pub fn block(&self, from: &str, to: &str) {
        self.scenario
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .blocked
            .insert((from.to_owned(), to.to_owned()));
    }

    /// Runs a workload command (the test client's `sh -c` curl loop).
    pub(super) fn exec_workload(&self, me: &str, req: &ExecRequest) -> ExecResult {
        let script = match req.command.as_slice() {
            [sh, c, script] if sh == "sh" && c == "-c" => script,
            _ => {
                return ExecResult {
                    stderr: format!("unexpected command {:?}", req.command),
                    code: 127,
                    ..ExecResult::default()
                };
            }
        };
        let Some(curl) = parse_script(script) else {
            return ExecResult {
                stderr: format!("sh: cannot simulate {script}"),
                code: 2,
                ..ExecResult::default()
            };
        };
        let mut out = String::new();
        for _ in 0..curl.count {
            match self.request(me, &curl) {
                Outcome::Answer { cluster, pod } => {
                    out.push_str(&format!(
                        "cluster={cluster} pod={pod}\n\n@@cmesh 200 0.00{}\n@@cmesh-exit 0\n",
                        1 + pod.len() % 8
                    ));
                }
                Outcome::Page { code, title } => {
                    out.push_str(&format!(
                        "<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n\n@@cmesh {code} 0.001\n@@cmesh-exit 0\n"
                    ));
                }
                Outcome::Error { exit, message } => {
                    let t = if exit == 28 {
                        format!("{}.001", curl.max_time)
                    } else {
                        "0.000".into()
                    };
                    out.push_str(&format!(
                        "curl: ({exit}) {message}\n\n@@cmesh 000 {t}\n@@cmesh-exit {exit}\n"
                    ));
                }
            }
        }
        ExecResult {
            stdout: out,
            ..ExecResult::default()
        }
    }

    fn timeout(&self, curl: &Curl) -> Outcome {
        Outcome::Error {
            exit: 28,
            message: format!(
                "Connection timed out after {} milliseconds",
                curl.max_time * 1000 + 1
            ),
        }
    }

    /// Whether pod traffic flows from `me` to `to`.
    fn reaches(&self, me: &str, to: &str) -> bool {
        if me == to {
            return true;
        }
        let blocked = self
            .scenario
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .blocked
            .contains(&(me.to_owned(), to.to_owned()));
        !blocked && self.sees(me, to)
    }

    fn request(&self, me: &str, curl: &Curl) -> Outcome {
        let hostport = curl
            .url
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or_default();
        let (host, port) = hostport.rsplit_once(':').unwrap_or((hostport, "80"));
        if host.parse::<std::net::Ipv4Addr>().is_ok() {
            return self.to_pod_ip(me, host, port, curl);
        }
        let parts: Vec<&str> = host.split('.').collect();
        let (name, ns) = match parts.as_slice() {
            [name, ns, "svc", ..] => (*name, *ns),
            _ => {
                return Outcome::Error {
                    exit: 6,
                    message: format!("Could not resolve host: {host}"),
                };
            }
        };
        let Some(my) = self.cluster_state(me) else {
            return self.timeout(curl);
        };
        let Some(svc) = my.get("", "v1", "services", ns, name) else {
            return Outcome::Error {
                exit: 6,
                message: format!("Could not resolve host: {host}"),
            };
        };
        if s(&svc, "/metadata/labels/app.kubernetes.io~1name") == "ingress-nginx" {
            return self.through_ingress(me, curl);
        }
        self.through_service(me, &svc, host, port, curl)
    }

    fn to_pod_ip(&self, me: &str, ip: &str, port: &str, curl: &Curl) -> Outcome {
        for (cluster, state) in &self.clusters {
            let pods = list(state, "", "pods", "");
            let Some(pod) = pods.iter().find(|p| s(p, "/status/podIP") == ip) else {
                continue;
            };
            if !self.reaches(me, cluster) {
                return self.timeout(curl);
            }
            let is_server = s(pod, "/metadata/labels/app.kubernetes.io~1name") == "cmesh-echo";
            if !is_server || !ready(pod) || port != "8080" {
                return Outcome::Error {
                    exit: 7,
                    message: format!(
                        "Failed to connect to {ip} port {port} after 0 ms: Couldn't connect to server"
                    ),
                };
            }
            return Outcome::Answer {
                cluster: cluster.clone(),
                pod: s(pod, "/metadata/name").to_owned(),
            };
        }
        // No such pod anywhere: nothing answers, the packets go nowhere.
        self.timeout(curl)
    }

    /// Ready pods of `cluster` selected by its Service `ns/name`.
    fn endpoints(&self, cluster: &str, svc: &Value) -> Vec<(String, String)> {
        let Some(state) = self.cluster_state(cluster) else {
            return Vec::new();
        };
        let selector = svc
            .pointer("/spec/selector")
            .cloned()
            .unwrap_or(Value::Null);
        list(state, "", "pods", s(svc, "/metadata/namespace"))
            .iter()
            .filter(|p| selects(&selector, p) && ready(p))
            .map(|p| (cluster.to_owned(), s(p, "/metadata/name").to_owned()))
            .collect()
    }

    fn global(&self, svc: &Value) -> bool {
        truthy(s(svc, "/metadata/annotations/service.cilium.io~1global"))
            || truthy(s(svc, "/metadata/annotations/io.cilium~1global-service"))
    }

    /// Cilium 1.20: only Services in global namespaces are shared.
    fn namespace_global(&self, cluster: &str, ns: &str) -> bool {
        if !self.global_namespaces {
            return true;
        }
        let Some(state) = self.cluster_state(cluster) else {
            return false;
        };
        match state.get("", "v1", "namespaces", "", ns) {
            Some(n) => !s(&n, "/metadata/annotations/clustermesh.cilium.io~1global")
                .eq_ignore_ascii_case("false"),
            None => false,
        }
    }

    /// The backends Cilium load-balances `svc` (in `me`) to.
    fn backends(&self, me: &str, svc: &Value) -> Vec<(String, String)> {
        let local = self.endpoints(me, svc);
        let ns = s(svc, "/metadata/namespace");
        let name = s(svc, "/metadata/name");
        if !self.global(svc) || !self.namespace_global(me, ns) {
            return local;
        }
        let mut remote = Vec::new();
        for (cluster, state) in &self.clusters {
            if cluster == me || !self.sees(me, cluster) {
                continue;
            }
            let Some(theirs) = state.get("", "v1", "services", ns, name) else {
                continue;
            };
            let shared = !s(&theirs, "/metadata/annotations/service.cilium.io~1shared")
                .eq_ignore_ascii_case("false");
            if self.global(&theirs) && shared && self.namespace_global(cluster, ns) {
                remote.extend(self.endpoints(cluster, &theirs));
            }
        }
        match s(svc, "/metadata/annotations/service.cilium.io~1affinity")
            .to_ascii_lowercase()
            .as_str()
        {
            "local" if !local.is_empty() => local,
            "remote" if !remote.is_empty() => remote,
            _ => local.into_iter().chain(remote).collect(),
        }
    }

    fn pick_and_send(&self, me: &str, backends: &[(String, String)], curl: &Curl) -> Outcome {
        let i = self
            .scenario
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pick(backends.len());
        let (cluster, pod) = backends[i].clone();
        if !self.reaches(me, &cluster) {
            return self.timeout(curl);
        }
        Outcome::Answer { cluster, pod }
    }

    fn through_service(
        &self,
        me: &str,
        svc: &Value,
        host: &str,
        port: &str,
        curl: &Curl,
    ) -> Outcome {
        let backends = self.backends(me, svc);
        if backends.is_empty() {
            return Outcome::Error {
                exit: 7,
                message: format!(
                    "Failed to connect to {host} port {port} after 0 ms: Couldn't connect to server"
                ),
            };
        }
        self.pick_and_send(me, &backends, curl)
    }

    fn through_ingress(&self, me: &str, curl: &Curl) -> Outcome {
        let Some(state) = self.cluster_state(me) else {
            return self.timeout(curl);
        };
        let classes: Vec<String> = list(state, "networking.k8s.io", "ingressclasses", "")
            .iter()
            .filter(|c| s(c, "/spec/controller") == "k8s.io/ingress-nginx")
            .map(|c| s(c, "/metadata/name").to_owned())
            .collect();
        let host = curl.host.clone().unwrap_or_default();
        let ingresses = list(state, "networking.k8s.io", "ingresses", "");
        let found = ingresses.iter().find_map(|i| {
            if !classes.iter().any(|c| c == s(i, "/spec/ingressClassName")) {
                return None;
            }
            let rules = i.pointer("/spec/rules").and_then(Value::as_array)?;
            let rule = rules.iter().find(|r| s(r, "/host") == host)?;
            let backend = s(rule, "/http/paths/0/backend/service/name");
            Some((i.clone(), backend.to_owned()))
        });
        let not_found = Outcome::Page {
            code: 404,
            title: "404 Not Found".into(),
        };
        let Some((ingress, backend)) = found else {
            return not_found;
        };
        let ns = s(&ingress, "/metadata/namespace");
        let Some(svc) = state.get("", "v1", "services", ns, &backend) else {
            return Outcome::Page {
                code: 503,
                title: "503 Service Temporarily Unavailable".into(),
            };
        };
        let upstream = matches!(
            s(
                &ingress,
                "/metadata/annotations/nginx.ingress.kubernetes.io~1service-upstream"
            ),
            "true" | "True" | "TRUE" | "1" | "t" | "T"
        );
        let backends = if upstream {
            // The ClusterIP: Cilium balances it like any client's request.
            self.backends(me, &svc)
        } else {
            // The endpoints the controller sees: local ones, plus remote ones when Cilium
            // synchronises EndpointSlices for this Service.
            let mut eps = self.endpoints(me, &svc);
            let sync_on = state
                .get("", "v1", "configmaps", "kube-system", "cilium-config")
                .is_some_and(|c| truthy(s(&c, "/data/clustermesh-enable-endpoint-sync")));
            let annotated = truthy(s(
                &svc,
                "/metadata/annotations/service.cilium.io~1global-sync-endpoint-slices",
            ));
            if sync_on && annotated && self.global(&svc) {
                eps = self
                    .backends(me, &svc)
                    .into_iter()
                    .filter(|b| b.0 != me)
                    .chain(eps)
                    .collect();
            }
            eps
        };
        if backends.is_empty() {
            return Outcome::Page {
                code: 503,
                title: "503 Service Temporarily Unavailable".into(),
            };
        }
        self.pick_and_send(me, &backends, curl)
    }
}

/// Installs an ingress-nginx controller as the official manifests label it: namespace,
/// controller Service and Deployment, and the IngressClass `class`.
pub fn install_ingress_nginx(state: &State, class: &str) {
    let labels = json!({"app.kubernetes.io/name": "ingress-nginx", "app.kubernetes.io/instance": "ingress-nginx", "app.kubernetes.io/component": "controller"});
    let mut store = state.store.lock().unwrap_or_else(|p| p.into_inner());
    let r = |g: &str, p: &str| resource(g, "v1", p).expect("resource");
    let _ = store.create(
        r("", "namespaces"),
        "",
        json!({"metadata": {"name": "ingress-nginx"}}),
    );
    let _ = store.create(
        r("", "services"),
        "ingress-nginx",
        json!({"metadata": {"name": "ingress-nginx-controller", "labels": labels},
               "spec": {"type": "LoadBalancer", "selector": labels,
                        "ports": [{"name": "http", "port": 80, "targetPort": "http"}, {"name": "https", "port": 443, "targetPort": "https"}]}}),
    );
    let _ = store.create(
        r("networking.k8s.io", "ingressclasses"),
        "",
        json!({"metadata": {"name": class, "labels": labels}, "spec": {"controller": "k8s.io/ingress-nginx"}}),
    );
}
