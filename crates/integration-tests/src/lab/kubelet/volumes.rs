//! A pod's inputs as kubelet resolves them: Secrets and ConfigMaps of its namespace, the
//! downward API, the container environment (with `$(VAR)` expansion), and its volumes written
//! as files (Secrets, ConfigMaps, projected sources with a real service-account token from the
//! TokenRequest API, emptyDirs), refreshed when the objects change.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret, ServiceAccount, Volume};
use kube::api::{Api, ListParams, PostParams};

use super::super::Cluster;

/// The namespace's Secrets and ConfigMaps, listed once per pass: what env and volume
/// references resolve against.
pub(super) struct Lookups {
    pub(super) config_maps: BTreeMap<String, BTreeMap<String, String>>,
    pub(super) secrets: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    pub(super) config_map_bytes: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
}

impl Lookups {
    pub(super) async fn list(client: &kube::Client, ns: &str) -> Result<Lookups, String> {
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
        let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
        let mut out = Lookups {
            config_maps: BTreeMap::new(),
            secrets: BTreeMap::new(),
            config_map_bytes: BTreeMap::new(),
        };
        for cm in cms
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?
        {
            let name = cm.metadata.name.clone().unwrap_or_default();
            out.config_maps.insert(
                name.clone(),
                cm.data.clone().unwrap_or_default().into_iter().collect(),
            );
            out.config_map_bytes.insert(name, cm_bytes(cm));
        }
        for sec in secrets
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?
        {
            out.secrets.insert(
                sec.metadata.name.clone().unwrap_or_default(),
                sec.data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect(),
            );
        }
        Ok(out)
    }
}

/// The downward API fields the charts use.
pub(super) fn field(p: &Pod, host_ip: &str, path: &str) -> String {
    let m = &p.metadata;
    match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "spec.nodeName" => p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default(),
        "spec.serviceAccountName" => p
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" => p
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" => host_ip.to_owned(),
        other => {
            if let Some(k) = other
                .strip_prefix("metadata.labels['")
                .and_then(|r| r.strip_suffix("']"))
            {
                return m
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(k).cloned())
                    .unwrap_or_default();
            }
            if let Some(k) = other
                .strip_prefix("metadata.annotations['")
                .and_then(|r| r.strip_suffix("']"))
            {
                return m
                    .annotations
                    .as_ref()
                    .and_then(|l| l.get(k).cloned())
                    .unwrap_or_default();
            }
            String::new()
        }
    }
}

/// Kubernetes' `$(VAR)` expansion: a defined variable is replaced, `$$` is a literal `$`, and
/// anything else is left as written.
pub(super) fn expand(s: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(r) = after.strip_prefix('(')
            && let Some(end) = r.find(')')
            && let Some((_, v)) = env.iter().rev().find(|(k, _)| *k == r[..end])
        {
            out.push_str(v);
            rest = &r[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The environment kubelet gives a container: the image's PATH, HOSTNAME, the `kubernetes`
/// Service's variables (its ClusterIP, which Cilium's load balancer carries to the API server),
/// then the container's own `envFrom` and `env`.
pub(super) fn container_env(
    p: &Pod,
    c: &Cluster,
    host_ip: &str,
    k: &Container,
    l: &Lookups,
) -> Vec<(String, String)> {
    let api = c.kubernetes_service_ip();
    let mut env: Vec<(String, String)> = vec![
        (
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        ),
        (
            "HOSTNAME".into(),
            p.metadata.name.clone().unwrap_or_default(),
        ),
        ("HOME".into(), "/root".into()),
        ("KUBERNETES_SERVICE_HOST".into(), api.clone()),
        ("KUBERNETES_SERVICE_PORT".into(), "443".into()),
        ("KUBERNETES_SERVICE_PORT_HTTPS".into(), "443".into()),
        ("KUBERNETES_PORT".into(), format!("tcp://{api}:443")),
    ];
    for e in k.env_from.iter().flatten() {
        let prefix = e.prefix.clone().unwrap_or_default();
        if let Some(r) = &e.config_map_ref
            && let Some(m) = l.config_maps.get(&r.name)
        {
            env.extend(m.iter().map(|(k, v)| (format!("{prefix}{k}"), v.clone())));
        }
        if let Some(r) = &e.secret_ref
            && let Some(m) = l.secrets.get(&r.name)
        {
            env.extend(m.iter().map(|(k, v)| {
                (
                    format!("{prefix}{k}"),
                    String::from_utf8_lossy(v).into_owned(),
                )
            }));
        }
    }
    for e in k.env.iter().flatten() {
        let value = if let Some(v) = &e.value {
            Some(expand(v, &env))
        } else if let Some(vf) = &e.value_from {
            if let Some(r) = &vf.config_map_key_ref {
                l.config_maps
                    .get(&r.name)
                    .and_then(|m| m.get(&r.key))
                    .cloned()
            } else if let Some(r) = &vf.secret_key_ref {
                l.secrets
                    .get(&r.name)
                    .and_then(|m| m.get(&r.key))
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            } else if let Some(r) = &vf.field_ref {
                Some(field(p, host_ip, &r.field_path))
            } else {
                vf.resource_field_ref
                    .as_ref()
                    .map(|r| resource_field(k, &r.resource, r.divisor.as_ref().map(|d| &*d.0)))
            }
        } else {
            Some(String::new())
        };
        // An optional reference that does not resolve leaves the variable unset.
        if let Some(v) = value {
            env.retain(|(k, _)| *k != e.name);
            env.push((e.name.clone(), v));
        }
    }
    env
}

/// A `resourceFieldRef` as kubelet resolves it: the container's request or limit of the
/// resource, in units of `divisor` rounded up; a limit the container does not set is the
/// node's allocatable, which for a lab node is this machine's CPUs and memory (what a kubelet
/// here would report). Nothing enforces the limits; the value matters to what reads it:
/// Cilium's chart sets the agent's `GOMEMLIMIT` to `limits.memory`, and a value of 0 there
/// has the Go runtime collecting garbage without pause (a third of a core per idle agent).
fn resource_field(k: &Container, resource: &str, divisor: Option<&str>) -> String {
    let Some((kind, name)) = resource.split_once('.') else {
        return "0".into();
    };
    let set = k.resources.as_ref().and_then(|r| match kind {
        "limits" => r.limits.as_ref(),
        _ => r.requests.as_ref(),
    });
    let quantity = set
        .and_then(|m| m.get(name))
        .and_then(|q| parse_quantity(&q.0));
    let value = match (quantity, kind) {
        (Some(v), _) => v,
        (None, "limits") => node_allocatable(name),
        (None, _) => 0.0,
    };
    let divisor = divisor
        .and_then(parse_quantity)
        .filter(|d| *d > 0.0)
        .unwrap_or(1.0);
    // Whole units rounded up, as kubelet's ConvertResourceCPUToString and friends do; the ratio
    // is first rounded to a millionth so that float noise (0.001 is not exact) does not turn
    // 1500m / 1m into 1501.
    let units = ((value / divisor) * 1e6).round() / 1e6;
    format!("{}", units.ceil().max(0.0) as u64)
}

/// This machine's CPUs or memory in bytes, the allocatable of a node without reservations.
fn node_allocatable(name: &str) -> f64 {
    match name {
        "cpu" => std::thread::available_parallelism().map_or(1, |n| n.get()) as f64,
        "memory" => std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            })
            .map_or(0.0, |kib| kib * 1024.0),
        _ => 0.0,
    }
}

/// A Kubernetes quantity (`500m`, `128Mi`, `1G`, `2`, `1e3`) as a number of base units.
fn parse_quantity(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        e => 10f64.powi(e.strip_prefix(['e', 'E'])?.parse().ok()?),
    };
    Some(number * factor)
}

pub(super) fn write_if_changed(path: &Path, data: &[u8], mode: u32) -> Result<bool, String> {
    use std::os::unix::fs::PermissionsExt as _;
    if std::fs::read(path).ok().as_deref() == Some(data) {
        return Ok(false);
    }
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let tmp = path.with_extension("lab-tmp");
    std::fs::write(&tmp, data).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
        .map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(true)
}

type Files = BTreeMap<PathBuf, (Vec<u8>, u32)>;

/// Writes the pod's volumes under `root/<volume>/`: Secrets, ConfigMaps, projected sources,
/// emptyDirs (created once), a real service-account token. Files that are no longer part of
/// a volume are removed. Returns whether anything changed.
pub(super) async fn materialize(
    c: &Cluster,
    p: &Pod,
    host_ip: &str,
    volumes: &[Volume],
    root: &Path,
    l: &Lookups,
) -> Result<bool, String> {
    let mut changed = false;
    for v in volumes {
        let dir = root.join(&v.name);
        if v.host_path.is_some() {
            // The node's own directory, bound by the entry script.
            continue;
        }
        if v.empty_dir.is_some() {
            if !dir.exists() {
                std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
                changed = true;
            }
            continue;
        }
        let mut files: Files = BTreeMap::new();
        if let Some(sv) = &v.secret {
            let name = sv.secret_name.clone().unwrap_or_default();
            let mode = sv.default_mode.unwrap_or(0o644) as u32;
            add_keys(&mut files, l.secrets.get(&name), sv.items.as_deref(), mode);
        } else if let Some(cv) = &v.config_map {
            let mode = cv.default_mode.unwrap_or(0o644) as u32;
            add_keys(
                &mut files,
                l.config_map_bytes.get(&cv.name),
                cv.items.as_deref(),
                mode,
            );
        } else if let Some(pv) = &v.projected {
            let mode = pv.default_mode.unwrap_or(0o644) as u32;
            for src in pv.sources.iter().flatten() {
                if let Some(ss) = &src.secret {
                    add_keys(
                        &mut files,
                        l.secrets.get(&ss.name),
                        ss.items.as_deref(),
                        mode,
                    );
                }
                if let Some(cs) = &src.config_map {
                    add_keys(
                        &mut files,
                        l.config_map_bytes.get(&cs.name),
                        cs.items.as_deref(),
                        mode,
                    );
                }
                if let Some(t) = &src.service_account_token {
                    let target = root.join(&v.name).join(&t.path);
                    // One token per pod, as kubelet requests it (refreshing is not needed for
                    // the lifetime of a test).
                    let token = match std::fs::read(&target) {
                        Ok(b) if !b.is_empty() => b,
                        _ => request_token(c, p, t.audience.clone(), t.expiration_seconds)
                            .await?
                            .into_bytes(),
                    };
                    files.insert(PathBuf::from(&t.path), (token, mode));
                }
                if let Some(d) = &src.downward_api {
                    for item in d.items.iter().flatten() {
                        if let Some(f) = &item.field_ref {
                            files.insert(
                                PathBuf::from(&item.path),
                                (field(p, host_ip, &f.field_path).into_bytes(), mode),
                            );
                        }
                    }
                }
            }
        } else {
            continue;
        }
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        for (rel, (data, mode)) in &files {
            changed |= write_if_changed(&dir.join(rel), data, *mode)?;
        }
        // Keys removed from a Secret disappear from the volume.
        for entry in walk(&dir) {
            let rel = entry.strip_prefix(&dir).unwrap_or(&entry).to_path_buf();
            if !files.contains_key(&rel) {
                let _ = std::fs::remove_file(&entry);
                changed = true;
            }
        }
    }
    Ok(changed)
}

fn cm_bytes(cm: ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let mut m: BTreeMap<String, Vec<u8>> = cm
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.into_bytes()))
        .collect();
    m.extend(
        cm.binary_data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0)),
    );
    m
}

fn add_keys(
    files: &mut Files,
    data: Option<&BTreeMap<String, Vec<u8>>>,
    items: Option<&[k8s_openapi::api::core::v1::KeyToPath]>,
    mode: u32,
) {
    let Some(data) = data else {
        return;
    };
    match items {
        Some(items) => {
            for it in items {
                if let Some(v) = data.get(&it.key) {
                    let m = it.mode.map_or(mode, |m| m as u32);
                    files.insert(PathBuf::from(&it.path), (v.clone(), m));
                }
            }
        }
        None => {
            for (k, v) in data {
                files.insert(PathBuf::from(k), (v.clone(), mode));
            }
        }
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

async fn request_token(
    c: &Cluster,
    p: &Pod,
    audience: Option<String>,
    expiration: Option<i64>,
) -> Result<String, String> {
    let ns = p.metadata.namespace.clone().unwrap_or_default();
    let sa = p
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let api: Api<ServiceAccount> = Api::namespaced(c.system.clone(), &ns);
    let req: TokenRequest = serde_json::from_value(serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {
            "audiences": audience.map(|a| vec![a]).unwrap_or_default(),
            "expirationSeconds": expiration.unwrap_or(3607),
            "boundObjectRef": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": p.metadata.name,
                "uid": p.metadata.uid,
            },
        },
    }))
    .map_err(|e| e.to_string())?;
    let r = api
        .create_token_request(&sa, &PostParams::default(), &req)
        .await
        .map_err(|e| format!("token for {ns}/{sa}: {e}"))?;
    r.status
        .and_then(|s| s.token)
        .ok_or_else(|| format!("token for {ns}/{sa}: empty status"))
}

#[cfg(test)]
mod tests {
    use super::{expand, parse_quantity, resource_field};
    use k8s_openapi::api::core::v1::Container;

    #[test]
    fn quantities_parse_as_kubernetes_writes_them() {
        assert_eq!(parse_quantity("500m"), Some(0.5));
        assert_eq!(parse_quantity("128Mi"), Some(128.0 * 1024.0 * 1024.0));
        assert_eq!(parse_quantity("1G"), Some(1e9));
        assert_eq!(parse_quantity("1e3"), Some(1000.0));
        assert_eq!(parse_quantity("2"), Some(2.0));
        assert_eq!(parse_quantity("1.5Gi"), Some(1.5 * 1024f64.powi(3)));
        assert_eq!(parse_quantity("12Qi"), None);
        assert_eq!(parse_quantity(""), None);
    }

    #[test]
    fn resource_fields_are_the_container_s_or_the_node_s() {
        let k: Container = serde_json::from_value(serde_json::json!({
            "name": "c",
            "resources": {"limits": {"memory": "512Mi", "cpu": "1500m"}, "requests": {"cpu": "250m"}},
        }))
        .unwrap();
        assert_eq!(resource_field(&k, "limits.memory", None), "536870912");
        assert_eq!(resource_field(&k, "limits.memory", Some("1Mi")), "512");
        // Rounded up to whole units of the divisor, as kubelet does.
        assert_eq!(resource_field(&k, "limits.cpu", None), "2");
        assert_eq!(resource_field(&k, "limits.cpu", Some("1m")), "1500");
        assert_eq!(resource_field(&k, "requests.cpu", Some("1m")), "250");
        assert_eq!(resource_field(&k, "requests.memory", None), "0");
        // No limit: the node's allocatable, here this machine's memory and CPUs. Never 0,
        // which as Cilium's GOMEMLIMIT has the agent collect garbage without pause.
        let bare = Container {
            name: "c".into(),
            ..Container::default()
        };
        let memory: u64 = resource_field(&bare, "limits.memory", Some("1"))
            .parse()
            .unwrap();
        assert!(memory > 256 * 1024 * 1024, "{memory}");
        let cpus: usize = resource_field(&bare, "limits.cpu", None).parse().unwrap();
        assert_eq!(cpus, std::thread::available_parallelism().unwrap().get());
    }

    #[test]
    fn expansion_follows_kubernetes() {
        let env = vec![
            ("A".to_owned(), "1".to_owned()),
            ("B".to_owned(), "x".to_owned()),
        ];
        assert_eq!(expand("--id=$(A)-$(B)", &env), "--id=1-x");
        assert_eq!(expand("$$(A) $(C) $", &env), "$(A) $(C) $");
    }
}
