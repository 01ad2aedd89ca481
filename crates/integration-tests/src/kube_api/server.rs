//! The HTTPS side of the double: TLS with client-certificate authentication, routing of the
//! Kubernetes REST paths, discovery, watch, exec over WebSocket, and fault injection.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use serde_json::{Value, json};

use super::store::{PatchKind, RESOURCES, Resource, Selector, StoreError, resource};
use super::{ExecRequest, ExecResult, State};

type Body = Full<Bytes>;

/// One injected failure.
#[derive(Debug, Clone)]
pub struct FailRule {
    /// Only this method (any if `None`).
    pub method: Option<Method>,
    /// Only paths containing this.
    pub path_contains: String,
    /// The HTTP status to answer.
    pub status: u16,
    /// How many times (`None`: always).
    pub remaining: Option<u32>,
}

/// Injected faults.
#[derive(Debug, Default)]
pub struct Faults {
    /// Added to every response.
    pub delay: Duration,
    /// Failure rules, first match wins.
    pub fail: Vec<FailRule>,
}

fn json_response(code: StatusCode, v: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            serde_json::to_vec(v).unwrap_or_default(),
        )))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

/// A Kubernetes `Status` error.
pub fn status_error(code: u16, reason: &str, message: &str) -> Response<Body> {
    json_response(
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code}),
    )
}

fn store_error(e: StoreError) -> Response<Body> {
    match e {
        StoreError::NotFound(m) => status_error(404, "NotFound", &m),
        StoreError::Conflict(m) => status_error(409, "Conflict", &m),
        StoreError::AlreadyExists(m) => status_error(409, "AlreadyExists", &m),
        StoreError::Invalid(m) => status_error(422, "Invalid", &m),
        StoreError::Forbidden(m) => status_error(403, "Forbidden", &m),
    }
}

fn query(req: &Request<Incoming>) -> Vec<(String, String)> {
    req.uri()
        .query()
        .map(|q| {
            q.split('&')
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    (decode(k), decode(v))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                    out.push(b);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn discovery_group(group: &str, version: &str) -> Value {
    let resources: Vec<Value> = RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .flat_map(|r| {
            let mut v = vec![json!({
                "name": r.plural, "singularName": r.kind.to_lowercase(), "namespaced": r.namespaced, "kind": r.kind,
                "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
            })];
            if matches!(r.plural, "deployments" | "statefulsets" | "replicasets") {
                v.push(json!({"name": format!("{}/scale", r.plural), "namespaced": true, "kind": "Scale", "group": "autoscaling", "version": "v1", "verbs": ["get", "patch", "update"]}));
            }
            if matches!(r.plural, "deployments" | "daemonsets" | "pods" | "services") {
                v.push(json!({"name": format!("{}/status", r.plural), "namespaced": true, "kind": r.kind, "verbs": ["get", "patch", "update"]}));
            }
            if r.plural == "pods" {
                v.push(json!({"name": "pods/exec", "namespaced": true, "kind": "PodExecOptions", "verbs": ["create", "get"]}));
                v.push(json!({"name": "pods/log", "namespaced": true, "kind": "Pod", "verbs": ["get"]}));
            }
            v
        })
        .collect();
    let gv = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources})
}

fn api_groups() -> Value {
    let mut groups: Vec<(&str, &str)> = RESOURCES
        .iter()
        .filter(|r| !r.group.is_empty())
        .map(|r| (r.group, r.version))
        .collect();
    groups.sort_unstable();
    groups.dedup();
    let list: Vec<Value> = groups
        .iter()
        .map(|(g, v)| {
            let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
            json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": list})
}

/// Where a REST path points.
struct Route {
    res: &'static Resource,
    ns: String,
    name: Option<String>,
    sub: Option<String>,
}

fn route(path: &str) -> Option<Route> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let (ns, plural, name, sub) = match rest {
        ["namespaces", ns, plural, tail @ ..] => (
            (*ns).to_owned(),
            *plural,
            tail.first().copied(),
            tail.get(1).copied(),
        ),
        [plural, tail @ ..] => (
            String::new(),
            *plural,
            tail.first().copied(),
            tail.get(1).copied(),
        ),
        [] => return None,
    };
    Some(Route {
        res: resource(group, version, plural)?,
        ns,
        name: name.map(str::to_owned),
        sub: sub.map(str::to_owned),
    })
}

/// Handles one request.
pub async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let (delay, injected) = {
        let mut f = state.faults.lock().unwrap_or_else(|p| p.into_inner());
        let delay = f.delay;
        let mut injected = None;
        for rule in f.fail.iter_mut() {
            if rule.method.as_ref().is_none_or(|m| *m == method)
                && path.contains(&rule.path_contains)
                && rule.remaining != Some(0)
            {
                if let Some(n) = rule.remaining.as_mut() {
                    *n -= 1;
                }
                injected = Some(rule.status);
                break;
            }
        }
        (delay, injected)
    };
    let ct = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    state
        .requests
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(format!("{method} {} {ct}", req.uri()));
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some(code) = injected {
        return Ok(status_error(code, "InternalError", "injected failure"));
    }
    if path.ends_with("/exec") && req.headers().get("upgrade").is_some() {
        return Ok(exec_upgrade(state, req));
    }
    let q = query(&req);
    let qp = |k: &str| q.iter().find(|(kk, _)| kk == k).map(|(_, v)| v.clone());
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let mut body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    if content_type.contains("protobuf") && !body.is_empty() {
        match super::protobuf::decode(&body) {
            Ok(v) => body = Bytes::from(serde_json::to_vec(&v).unwrap_or_default()),
            Err(e) => return Ok(status_error(415, "UnsupportedMediaType", &e)),
        }
    }
    let resp = match path.as_str() {
        "/version" => json_response(
            StatusCode::OK,
            &json!({"major": "1", "minor": "31", "gitVersion": "v1.31.0", "platform": "linux/amd64"}),
        ),
        "/healthz" | "/livez" | "/readyz" => Response::new(Full::new(Bytes::from_static(b"ok"))),
        "/api" => json_response(
            StatusCode::OK,
            &json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}),
        ),
        "/apis" => json_response(StatusCode::OK, &api_groups()),
        // An empty protobuf OpenAPI v2 document: client-go then has no schema for any kind
        // and skips client-side validation, as it does for kinds a real server does not
        // describe. (v3 is absent, so clients fall back to v2.)
        "/openapi/v2" => Response::builder()
            .header(
                "content-type",
                "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
            )
            .body(Full::new(Bytes::new()))
            .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))),
        p if p.starts_with("/openapi") => status_error(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ),
        _ => {
            let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
            match segs.as_slice() {
                ["api", v] => json_response(StatusCode::OK, &discovery_group("", v)),
                ["apis", g, v] => json_response(StatusCode::OK, &discovery_group(g, v)),
                _ => match route(&path) {
                    Some(r) => rest(&state, &method, r, &content_type, &body, &qp).await,
                    None => status_error(
                        404,
                        "NotFound",
                        "the server could not find the requested resource",
                    ),
                },
            }
        }
    };
    state.after_write(&method);
    Ok(resp)
}

fn parse_body(body: &[u8]) -> Result<Value, Box<Response<Body>>> {
    serde_json::from_slice(body).map_err(|e| {
        Box::new(status_error(
            400,
            "BadRequest",
            &format!("body is not JSON: {e}"),
        ))
    })
}

async fn rest(
    state: &Arc<State>,
    method: &Method,
    r: Route,
    content_type: &str,
    body: &[u8],
    qp: &(dyn Fn(&str) -> Option<String> + Sync),
) -> Response<Body> {
    let Route { res, ns, name, sub } = r;
    if qp("watch").is_some_and(|w| w == "true" || w == "1") {
        return watch(state, res, &ns, qp).await;
    }
    let mut store = state.store.lock().unwrap_or_else(|p| p.into_inner());
    match (method.clone(), name, sub.as_deref()) {
        (Method::GET, None, _) => {
            let sel = Selector::parse(
                qp("labelSelector").as_deref(),
                qp("fieldSelector").as_deref(),
            );
            let items = store.list(res, &ns, &sel);
            let rv = store.revision().to_string();
            json_response(
                StatusCode::OK,
                &json!({"kind": format!("{}List", res.kind), "apiVersion": res.api_version(), "metadata": {"resourceVersion": rv}, "items": items}),
            )
        }
        (Method::GET, Some(n), Some("scale")) => match store.get(res, &ns, &n) {
            Some(o) => json_response(StatusCode::OK, &scale_of(o)),
            None => store_error(StoreError::NotFound(format!(
                "{} \"{n}\" not found",
                res.plural
            ))),
        },
        (Method::GET, Some(n), _) => match store.get(res, &ns, &n) {
            Some(o) => json_response(StatusCode::OK, o),
            None => store_error(StoreError::NotFound(format!(
                "{} \"{n}\" not found",
                res.plural
            ))),
        },
        (Method::POST, None, _) => match parse_body(body) {
            Ok(obj) => match store.create(res, &ns, obj) {
                Ok(o) => json_response(StatusCode::CREATED, &o),
                Err(e) => store_error(e),
            },
            Err(r) => *r,
        },
        (Method::PUT | Method::PATCH, Some(n), Some("scale")) => match parse_body(body) {
            Ok(p) => {
                let replicas = p.pointer("/spec/replicas").cloned().unwrap_or(json!(0));
                match store.patch(
                    res,
                    &ns,
                    &n,
                    PatchKind::Merge,
                    json!({"spec": {"replicas": replicas}}),
                ) {
                    Ok(o) => json_response(StatusCode::OK, &scale_of(&o)),
                    Err(e) => store_error(e),
                }
            }
            Err(r) => *r,
        },
        (Method::PUT, Some(n), sub) => match parse_body(body) {
            Ok(obj) => {
                let result = if sub == Some("status") {
                    let status = obj.get("status").cloned().unwrap_or(Value::Null);
                    store.set_status(res, &ns, &n, status);
                    store
                        .get(res, &ns, &n)
                        .cloned()
                        .ok_or(StoreError::NotFound(n.clone()))
                } else {
                    store.update(res, &ns, &n, obj)
                };
                match result {
                    Ok(o) => json_response(StatusCode::OK, &o),
                    Err(e) => store_error(e),
                }
            }
            Err(r) => *r,
        },
        (Method::PATCH, Some(n), _) => {
            let kind = if content_type.contains("strategic-merge-patch") {
                PatchKind::Strategic
            } else if content_type.contains("json-patch") {
                PatchKind::Json
            } else if content_type.contains("apply-patch") {
                PatchKind::Apply
            } else {
                PatchKind::Merge
            };
            match parse_body(body) {
                Ok(p) => match store.patch(res, &ns, &n, kind, p) {
                    Ok(o) => json_response(StatusCode::OK, &o),
                    Err(e) => store_error(e),
                },
                Err(r) => *r,
            }
        }
        (Method::DELETE, Some(n), _) => match store.delete(res, &ns, &n) {
            Ok(o) => json_response(StatusCode::OK, &o),
            Err(e) => store_error(e),
        },
        _ => status_error(405, "MethodNotAllowed", "method not allowed"),
    }
}

fn scale_of(o: &Value) -> Value {
    json!({
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {"name": o.pointer("/metadata/name"), "namespace": o.pointer("/metadata/namespace"), "resourceVersion": o.pointer("/metadata/resourceVersion")},
        "spec": {"replicas": o.pointer("/spec/replicas").cloned().unwrap_or(json!(1))},
        "status": {"replicas": o.pointer("/status/replicas").cloned().unwrap_or(json!(0))}
    })
}

/// A watch: the current objects as ADDED events, then the stream ends (clients re-list).
async fn watch(
    state: &Arc<State>,
    res: &Resource,
    ns: &str,
    qp: &(dyn Fn(&str) -> Option<String> + Sync),
) -> Response<Body> {
    let sel = Selector::parse(
        qp("labelSelector").as_deref(),
        qp("fieldSelector").as_deref(),
    );
    let items = state
        .store
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .list(res, ns, &sel);
    let mut text = String::new();
    for i in items {
        text.push_str(&json!({"type": "ADDED", "object": i}).to_string());
        text.push('\n');
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(text)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

/// Answers a WebSocket upgrade for exec and runs the scripted command once upgraded.
fn exec_upgrade(state: Arc<State>, mut req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let q = query(&req);
    let command: Vec<String> = q
        .iter()
        .filter(|(k, _)| k == "command")
        .map(|(_, v)| v.clone())
        .collect();
    let container = q
        .iter()
        .find(|(k, _)| k == "container")
        .map(|(_, v)| v.clone());
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (ns, pod) = match segs.as_slice() {
        ["api", "v1", "namespaces", ns, "pods", pod, "exec"] => {
            ((*ns).to_owned(), (*pod).to_owned())
        }
        _ => return status_error(404, "NotFound", "bad exec path"),
    };
    let offered: Vec<String> = req
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.split(',').map(|p| p.trim().to_owned()).collect())
        .unwrap_or_default();
    let protocol = ["v5.channel.k8s.io", "v4.channel.k8s.io"]
        .into_iter()
        .find(|p| offered.iter().any(|o| o == p));
    let Some(protocol) = protocol else {
        return status_error(
            400,
            "BadRequest",
            "no supported exec subprotocol (v5/v4.channel.k8s.io)",
        );
    };
    let Some(key) = req
        .headers()
        .get("sec-websocket-key")
        .map(|k| k.as_bytes().to_vec())
    else {
        return status_error(400, "BadRequest", "missing Sec-WebSocket-Key");
    };
    {
        let store = state.store.lock().unwrap_or_else(|p| p.into_inner());
        let pods = resource("", "v1", "pods").expect("pods");
        if store.get(pods, &ns, &pod).is_none() {
            return status_error(404, "NotFound", &format!("pods \"{pod}\" not found"));
        }
    }
    let request = ExecRequest {
        namespace: ns,
        pod,
        container,
        command,
    };
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        use futures_util::SinkExt;
        use tokio_tungstenite::tungstenite::Message;
        use tokio_tungstenite::tungstenite::protocol::Role;
        let Ok(upgraded) = upgrade.await else { return };
        let io = hyper_util::rt::TokioIo::new(upgraded);
        let mut ws =
            tokio_tungstenite::WebSocketStream::from_raw_socket(io, Role::Server, None).await;
        let result: ExecResult = state.run_exec(&request);
        let frame = |ch: u8, data: &[u8]| {
            let mut v = vec![ch];
            v.extend_from_slice(data);
            Message::Binary(v.into())
        };
        if !result.stdout.is_empty() {
            let _ = ws.send(frame(1, result.stdout.as_bytes())).await;
        }
        if !result.stderr.is_empty() {
            let _ = ws.send(frame(2, result.stderr.as_bytes())).await;
        }
        let status = if result.code == 0 {
            json!({"metadata": {}, "status": "Success"})
        } else {
            json!({"metadata": {}, "status": "Failure", "message": format!("command terminated with non-zero exit code: error executing command {:?}, exit code {}", request.command, result.code), "reason": "NonZeroExitCode", "details": {"causes": [{"reason": "ExitCode", "message": result.code.to_string()}]}})
        };
        let _ = ws.send(frame(3, status.to_string().as_bytes())).await;
        let _ = ws.close(None).await;
    });
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key);
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-accept", accept)
        .header("sec-websocket-protocol", protocol)
        .body(Full::new(Bytes::new()))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

/// Serves `listener` until `shutdown` fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    state: Arc<State>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (tcp, _peer): (tokio::net::TcpStream, SocketAddr) = tokio::select! {
            r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
            _ = shutdown.changed() => return,
        };
        let acceptor = acceptor.clone();
        let state = Arc::clone(&state);
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let io = hyper_util::rt::TokioIo::new(tls);
            let svc = hyper::service::service_fn(move |req| handle(Arc::clone(&state), req));
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, svc)
                .with_upgrades();
            tokio::select! {
                _ = conn => {}
                _ = stop.changed() => {}
            }
        });
    }
}
