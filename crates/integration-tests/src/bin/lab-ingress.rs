//! The lab's stand-in for ingress-nginx's controller image (container images cannot run
//! here), routing as ingress-nginx does, over real packets: it runs in the controller pod's
//! network namespace (behind Cilium), reads the cluster through its service account as the
//! controller does, and for each request finds the Ingress rule of its class (IngressClass
//! with controller `k8s.io/ingress-nginx`) by host and path prefix, then sends the request
//!
//! - without `nginx.ingress.kubernetes.io/service-upstream: "true"`: to one of the ready
//!   endpoints of the backend Service's local EndpointSlices, answering ingress-nginx's 503
//!   page when there are none (the reference article's lesson);
//! - with it: to the Service's ClusterIP, where Cilium's load balancer (global Services
//!   included) picks the backend.
//!
//! No rule: ingress-nginx's 404 page. One request per connection (`Connection: close`).

use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::api::{Api, ListParams};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const SERVICE_UPSTREAM: &str = "nginx.ingress.kubernetes.io/service-upstream";

fn page(code: u16, title: &str) -> String {
    let body = format!(
        "<html>\r\n<head><title>{code} {title}</title></head>\r\n<body>\r\n<center><h1>{code} {title}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    );
    format!(
        "HTTP/1.1 {code} {title}\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Where a request for `host` and `path` goes.
enum Route {
    To(String),
    NoEndpoints,
    NoRule,
}

async fn route(client: &kube::Client, host: &str, path: &str) -> Result<Route, kube::Error> {
    let classes: Vec<String> = Api::<IngressClass>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|c| {
            c.spec.as_ref().and_then(|s| s.controller.as_deref()) == Some("k8s.io/ingress-nginx")
        })
        .filter_map(|c| c.metadata.name)
        .collect();
    let ingresses = Api::<Ingress>::all(client.clone())
        .list(&ListParams::default())
        .await?;
    for ing in ingresses.items {
        let Some(spec) = &ing.spec else { continue };
        if !spec
            .ingress_class_name
            .as_ref()
            .is_some_and(|c| classes.contains(c))
        {
            continue;
        }
        let ns = ing.metadata.namespace.clone().unwrap_or_default();
        let upstream = ing
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(SERVICE_UPSTREAM))
            .is_some_and(|v| v == "true");
        for rule in spec.rules.iter().flatten() {
            if rule.host.as_deref().is_some_and(|h| h != host) {
                continue;
            }
            for p in rule.http.iter().flat_map(|h| h.paths.iter()) {
                if !path.starts_with(p.path.as_deref().unwrap_or("/")) {
                    continue;
                }
                let Some(svc) = &p.backend.service else {
                    continue;
                };
                let port_number = svc.port.as_ref().and_then(|x| x.number);
                let port_name = svc.port.as_ref().and_then(|x| x.name.clone());
                let service = Api::<Service>::namespaced(client.clone(), &ns)
                    .get_opt(&svc.name)
                    .await?;
                let Some(service) = service else {
                    return Ok(Route::NoEndpoints);
                };
                let sspec = service.spec.unwrap_or_default();
                let sport = sspec
                    .ports
                    .iter()
                    .flatten()
                    .find(|sp| Some(sp.port) == port_number || sp.name == port_name)
                    .cloned();
                let Some(sport) = sport else {
                    return Ok(Route::NoEndpoints);
                };
                if upstream {
                    let ip = sspec.cluster_ip.unwrap_or_default();
                    return Ok(Route::To(format!("{ip}:{}", sport.port)));
                }
                let slices = Api::<EndpointSlice>::namespaced(client.clone(), &ns)
                    .list(
                        &ListParams::default()
                            .labels(&format!("kubernetes.io/service-name={}", svc.name)),
                    )
                    .await?;
                let mut targets = Vec::new();
                for sl in slices.items {
                    let port = sl
                        .ports
                        .iter()
                        .flatten()
                        .find(|p| p.name == sport.name)
                        .and_then(|p| p.port);
                    let Some(port) = port else { continue };
                    for e in sl.endpoints.into_iter().flatten() {
                        if e.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                            continue;
                        }
                        for a in e.addresses {
                            targets.push(format!("{a}:{port}"));
                        }
                    }
                }
                if targets.is_empty() {
                    return Ok(Route::NoEndpoints);
                }
                let pick = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.subsec_nanos() as usize)
                    .unwrap_or(0)
                    % targets.len();
                return Ok(Route::To(targets.swap_remove(pick)));
            }
        }
    }
    Ok(Route::NoRule)
}

async fn handle(client: kube::Client, mut s: TcpStream) {
    let (r, mut w) = s.split();
    let mut reader = BufReader::new(r);
    let mut head = Vec::new();
    let mut host = String::new();
    let mut first = String::new();
    loop {
        let mut line = String::new();
        match tokio::time::timeout(Duration::from_secs(10), reader.read_line(&mut line)).await {
            Ok(Ok(0)) | Err(_) | Ok(Err(_)) => return,
            Ok(Ok(_)) => {}
        }
        if first.is_empty() {
            first = line.clone();
        }
        if line == "\r\n" || line == "\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(h) = lower.strip_prefix("host:") {
            host = h.trim().split(':').next().unwrap_or_default().to_owned();
        }
        if lower.starts_with("connection:") {
            continue;
        }
        head.push(line);
    }
    let path = first.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let answer = match route(&client, &host, &path).await {
        Ok(Route::To(target)) => {
            match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(&target)).await {
                Ok(Ok(mut up)) => {
                    let mut req = head.concat();
                    req.push_str("Connection: close\r\n\r\n");
                    if up.write_all(req.as_bytes()).await.is_err() {
                        page(502, "Bad Gateway")
                    } else {
                        let mut resp = Vec::new();
                        let _ = tokio::time::timeout(
                            Duration::from_secs(10),
                            up.read_to_end(&mut resp),
                        )
                        .await;
                        let _ = w.write_all(&resp).await;
                        return;
                    }
                }
                _ => page(504, "Gateway Time-out"),
            }
        }
        Ok(Route::NoEndpoints) => page(503, "Service Temporarily Unavailable"),
        Ok(Route::NoRule) => page(404, "Not Found"),
        Err(e) => {
            eprintln!("lab-ingress: {e}");
            page(500, "Internal Server Error")
        }
    };
    let _ = w.write_all(answer.as_bytes()).await;
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let config = kube::Config::incluster().expect("in-cluster configuration (service account)");
    let client = kube::Client::try_from(config).expect("client");
    let l = TcpListener::bind("0.0.0.0:80").await.expect("listen :80");
    eprintln!("lab-ingress: listening on :80");
    loop {
        if let Ok((s, _)) = l.accept().await {
            tokio::spawn(handle(client.clone(), s));
        }
    }
}
