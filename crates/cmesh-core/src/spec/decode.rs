//! Structural decoding: a YAML tree into the raw spec, collecting every problem.
//!
//! Each field is checked for type and format on its own, so one bad field never hides
//! another. Invalid optional fields fall back to their defaults (after an error); invalid
//! required fields become `None`, and the semantic rules skip what is missing.

use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

use super::codes;
use super::model::{
    AuthMode, CertMethod, DEFAULT_REPO, GitopsSettings, Host, HostPort, KeyAlgorithm, MeshSettings,
    PkiSettings, ServiceType,
};
use super::source::{SpecSource, child, item};
use crate::diag::{Diagnostic, Rule};
use crate::value::{Map, Value};
use crate::version::CiliumVersion;
use crate::yaml::{Node, NodeValue, Resolved, ScalarStyle, yaml11_reading};

/// A CIDR with the path it came from.
#[derive(Debug, Clone)]
pub(crate) struct Cidr {
    pub net: IpNet,
    pub path: String,
}

/// A cluster as decoded; `None` marks a missing or invalid required field.
#[derive(Debug, Clone, Default)]
pub(crate) struct RawCluster {
    pub name: Option<String>,
    pub id: Option<u16>,
    pub kubeconfig: Option<String>,
    pub context: Option<String>,
    pub api_server: Option<HostPort>,
    pub pod_cidrs: Vec<Cidr>,
    pub pod_cidr_mask_size: Option<u8>,
    pub service_cidrs: Vec<Cidr>,
    pub node_cidrs: Vec<Cidr>,
    pub address: Option<Host>,
    pub ips: Vec<IpAddr>,
    pub port: Option<u16>,
    pub endpoint_given: bool,
    pub values: Value,
}

/// A spec as decoded.
#[derive(Debug, Clone)]
pub(crate) struct RawSpec {
    pub name: Option<String>,
    pub version: Option<CiliumVersion>,
    pub repo: String,
    pub values: Value,
    pub mesh: MeshSettings,
    pub pki: PkiSettings,
    pub gitops: GitopsSettings,
    pub clusters: Vec<RawCluster>,
}

const TOP: &[&str] = &["name", "cilium", "clustermesh", "pki", "gitops", "clusters"];
pub(crate) const GITOPS: &[&str] = &[
    "repoURL",
    "revision",
    "path",
    "sealedPath",
    "fluxKubeConfig",
];
const CILIUM: &[&str] = &["version", "repo", "values"];
pub(crate) const MESH: &[&str] = &[
    "domain",
    "serviceType",
    "authMode",
    "kvstoremesh",
    "maxConnectedClusters",
    "endpointSliceSync",
    "cacheTTL",
    "policyDefaultLocalCluster",
    "certificates",
];
const PKI: &[&str] = &["dir", "keyAlgorithm", "caValidityDays", "certValidityDays"];
const CLUSTER: &[&str] = &[
    "name",
    "id",
    "kubeconfig",
    "context",
    "apiServer",
    "podCIDR",
    "podCIDRMaskSize",
    "serviceCIDR",
    "nodeCIDR",
    "clustermesh",
    "values",
];
const ENDPOINT: &[&str] = &["address", "ips", "port"];

/// Default mesh domain, the chart's default.
pub const DEFAULT_DOMAIN: &str = "mesh.cilium.io";

pub(crate) struct Decoder<'s> {
    pub src: &'s SpecSource,
    pub diags: Vec<Diagnostic>,
}

/// The entries of a mapping after unknown keys were reported.
struct Fields<'n> {
    entries: Vec<(&'n str, &'n Node)>,
}

impl<'n> Fields<'n> {
    fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, n)| *n)
            // An explicit null is the same as leaving the field out.
            .filter(|n| !is_null(n))
    }
}

fn is_null(n: &Node) -> bool {
    n.resolve() == Some(Resolved::Null) && matches!(n.value, NodeValue::Scalar { .. })
}

impl<'s> Decoder<'s> {
    pub fn new(src: &'s SpecSource) -> Self {
        Self {
            src,
            diags: Vec::new(),
        }
    }

    fn push(&mut self, d: Diagnostic) {
        self.diags.push(d.with_source(self.src.text()));
    }

    fn problem(
        &mut self,
        rule: &Rule,
        path: &str,
        node: &Node,
        message: String,
        help: Option<String>,
    ) {
        let mut d = Diagnostic::new(rule, message).at(display_path(path), Some(node.span));
        if let Some(h) = help {
            d = d.help(h);
        }
        self.push(d);
    }

    fn wrong_type(&mut self, path: &str, node: &Node, expected: &str, help: Option<String>) {
        let msg = format!(
            "`{}` must be {expected}, found {}",
            display_path(path),
            node.kind_name()
        );
        self.problem(&codes::WRONG_TYPE, path, node, msg, help);
    }

    fn missing(&mut self, parent_path: &str, parent: Option<&Node>, key: &str, help: &str) {
        let path = child(parent_path, key);
        let mut d = Diagnostic::new(
            &codes::MISSING_FIELD,
            format!("required field `{}` is missing", display_path(&path)),
        )
        .help(help.to_owned());
        d.field = Some(display_path(&path));
        d.span = parent.map(|p| {
            // Point at the first line of the enclosing mapping rather than all of it.
            let text = self.src.text().text();
            let start = p.span.offset.min(text.len());
            let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
            crate::yaml::Span {
                len: line_end.saturating_sub(start).min(p.span.len.max(1)),
                ..p.span
            }
        });
        self.push(d);
    }

    fn fields<'n>(&mut self, node: &'n Node, path: &str, known: &[&str]) -> Option<Fields<'n>> {
        let NodeValue::Map(entries) = &node.value else {
            let what = if path.is_empty() {
                "the document"
            } else {
                path
            };
            let msg = format!(
                "`{}` must be a mapping, found {}",
                display_path(what),
                node.kind_name()
            );
            self.problem(
                &codes::WRONG_TYPE,
                path,
                node,
                msg,
                Some("write `key: value` pairs here".into()),
            );
            return None;
        };
        let mut out = Vec::new();
        for e in entries {
            let key = e.key.as_str().unwrap_or_default();
            if known.contains(&key) {
                out.push((key, &e.value));
                continue;
            }
            let keypath = child(path, key);
            let help = match suggest(key, known) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!("known keys here: {}", known.join(", ")),
            };
            let where_ = if path.is_empty() {
                "at the top level".to_owned()
            } else {
                format!("in `{}`", display_path(path))
            };
            let d = Diagnostic::new(&codes::UNKNOWN_KEY, format!("unknown key `{key}` {where_}"))
                .at(display_path(&keypath), Some(e.key.span))
                .help(help);
            self.push(d);
        }
        Some(Fields { entries: out })
    }

    fn string(&mut self, node: &Node, path: &str) -> Option<String> {
        match (&node.value, node.resolve()) {
            (NodeValue::Scalar { text, .. }, Some(Resolved::Str)) => Some(text.clone()),
            (NodeValue::Scalar { text, .. }, Some(_)) => {
                let help = format!("quote it to make it a string: \"{text}\"");
                self.wrong_type(path, node, "a string", Some(help));
                None
            }
            _ => {
                self.wrong_type(
                    path,
                    node,
                    "a string",
                    Some("write a single text value".into()),
                );
                None
            }
        }
    }

    fn boolean(&mut self, node: &Node, path: &str) -> Option<bool> {
        match node.resolve() {
            Some(Resolved::Bool(b)) => Some(b),
            _ => {
                let help = node
                    .as_str()
                    .filter(|_| node.is_plain())
                    .and_then(yaml11_reading)
                    .map(|r| {
                        format!(
                            "YAML 1.2 reads `{}` as a string (YAML 1.1 as {r}); write true or false",
                            node.as_str().unwrap_or_default()
                        )
                    })
                    .or_else(|| Some("write true or false".to_owned()));
                self.wrong_type(path, node, "true or false", help);
                None
            }
        }
    }

    fn integer(&mut self, node: &Node, path: &str, min: i128, max: i128) -> Option<i128> {
        match node.resolve() {
            Some(Resolved::Int(i)) => {
                if let (Some(text), true) = (node.as_str(), node.is_plain()) {
                    let digits = text.trim_start_matches(['-', '+']);
                    if digits.len() > 1
                        && digits.starts_with('0')
                        && digits.bytes().all(|b| b.is_ascii_digit())
                    {
                        let d = Diagnostic::new(
                            &codes::LEADING_ZERO,
                            format!("`{}` is written `{text}`; cmesh reads it as {i}", display_path(path)),
                        )
                        .at(display_path(path), Some(node.span))
                        .help(format!(
                            "write {i}: YAML 1.1 tools (Helm, Ansible) read a leading zero as octal{}",
                            yaml11_reading(text).map(|r| format!(" ({r})")).unwrap_or_default()
                        ));
                        self.push(d);
                    }
                }
                if i < min || i > max {
                    let msg = format!("`{}` is {i}, outside {min}..{max}", display_path(path));
                    self.problem(
                        &codes::INVALID_VALUE,
                        path,
                        node,
                        msg,
                        Some(format!("use a value from {min} to {max}")),
                    );
                    return None;
                }
                Some(i)
            }
            Some(Resolved::Str)
                if node
                    .as_str()
                    .is_some_and(|t| t.trim().parse::<i128>().is_ok()) =>
            {
                let help = format!(
                    "remove the quotes: {}",
                    node.as_str().unwrap_or_default().trim()
                );
                self.wrong_type(path, node, "an integer", Some(help));
                None
            }
            _ => {
                self.wrong_type(
                    path,
                    node,
                    "an integer",
                    Some(format!("write a whole number from {min} to {max}")),
                );
                None
            }
        }
    }

    fn choice(
        &mut self,
        node: &Node,
        path: &str,
        options: &[&'static str],
    ) -> Option<&'static str> {
        let text = self.string(node, path)?;
        if let Some(o) = options.iter().find(|o| **o == text) {
            return Some(o);
        }
        let help = match suggest(&text, options) {
            Some(s) => format!("did you mean `{s}`? allowed: {}", options.join(", ")),
            None => format!("allowed: {}", options.join(", ")),
        };
        let msg = format!("`{}` is `{text}`, which is not allowed", display_path(path));
        self.problem(&codes::INVALID_VALUE, path, node, msg, Some(help));
        None
    }

    fn cidrs(&mut self, node: &Node, path: &str) -> Option<Vec<Cidr>> {
        let items: Vec<(String, &Node)> = match &node.value {
            NodeValue::Seq(list) => list
                .iter()
                .enumerate()
                .map(|(i, n)| (item(path, i), n))
                .collect(),
            _ => vec![(path.to_owned(), node)],
        };
        if items.is_empty() {
            let msg = format!("`{}` is an empty list", display_path(path));
            self.problem(
                &codes::MISSING_FIELD,
                path,
                node,
                msg,
                Some("give at least one CIDR".into()),
            );
            return None;
        }
        let mut out = Vec::new();
        let mut ok = true;
        for (p, n) in items {
            let Some(text) = self.string(n, &p) else {
                ok = false;
                continue;
            };
            match IpNet::from_str(text.trim()) {
                Ok(net) => out.push(Cidr { net, path: p }),
                Err(_) => {
                    ok = false;
                    let help = if text.parse::<IpAddr>().is_ok() {
                        format!("add a prefix length, for example {text}/16")
                    } else {
                        "write ADDRESS/PREFIX, for example 10.244.0.0/16 or fd00:10:244::/56".into()
                    };
                    let msg = format!("`{}` is `{text}`, which is not a CIDR", display_path(&p));
                    self.problem(&codes::CIDR_SYNTAX, &p, n, msg, Some(help));
                }
            }
        }
        ok.then_some(out)
    }

    /// Helm values: any YAML, converted with YAML 1.2 resolution, refusing plain scalars that
    /// Helm's YAML 1.1 would read differently.
    pub fn values(&mut self, node: &Node, path: &str) -> Value {
        match &node.value {
            NodeValue::Map(_) => self.value(node, path),
            _ if is_null(node) => Value::map(),
            _ => {
                self.wrong_type(
                    path,
                    node,
                    "a mapping of Helm values",
                    Some("use {} for none".into()),
                );
                Value::map()
            }
        }
    }

    fn value(&mut self, node: &Node, path: &str) -> Value {
        match &node.value {
            NodeValue::Map(entries) => {
                let mut m = Map::new();
                for e in entries {
                    let k = e.key.as_str().unwrap_or_default().to_owned();
                    let p = child(path, &k);
                    if e.key.is_plain()
                        && let Some(reading) = yaml11_reading(&k)
                    {
                        self.ambiguous(&p, &e.key, &k, &reading);
                    }
                    let v = self.value(&e.value, &p);
                    m.insert(k, v);
                }
                Value::Map(m)
            }
            NodeValue::Seq(items) => Value::Seq(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, n)| self.value(n, &item(path, i)))
                    .collect(),
            ),
            NodeValue::Scalar { text, style, tag } => {
                if *style == ScalarStyle::Plain
                    && tag.is_none()
                    && let Some(reading) = yaml11_reading(text)
                {
                    self.ambiguous(path, node, text, &reading);
                }
                match node.resolve() {
                    Some(Resolved::Null) => Value::Null,
                    Some(Resolved::Bool(b)) => Value::Bool(b),
                    Some(Resolved::Int(i)) => match i64::try_from(i) {
                        Ok(i) => Value::Int(i),
                        Err(_) => {
                            let msg =
                                format!("`{}` is {i}, too large for Helm", display_path(path));
                            self.problem(
                                &codes::INVALID_VALUE,
                                path,
                                node,
                                msg,
                                Some("quote it to pass a string".into()),
                            );
                            Value::Str(text.clone())
                        }
                    },
                    Some(Resolved::Float(f)) if f.is_finite() => Value::Float(f),
                    Some(Resolved::Float(_)) => {
                        let msg = format!(
                            "`{}` is `{text}`; Helm values cannot hold infinities or NaN",
                            display_path(path)
                        );
                        self.problem(
                            &codes::INVALID_VALUE,
                            path,
                            node,
                            msg,
                            Some("quote it to pass a string".into()),
                        );
                        Value::Str(text.clone())
                    }
                    _ => Value::Str(text.clone()),
                }
            }
        }
    }

    fn ambiguous(&mut self, path: &str, node: &Node, text: &str, reading: &str) {
        let fix = match text {
            "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => {
                format!("write true for the boolean, or \"{text}\" for the string")
            }
            "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => {
                format!("write false for the boolean, or \"{text}\" for the string")
            }
            _ => format!(
                "write the number without a leading zero or underscores, or \"{text}\" for the string"
            ),
        };
        let msg = format!(
            "`{}` is `{text}`: YAML 1.2 (cmesh) and YAML 1.1 (Helm) disagree on it; Helm would read {reading}",
            display_path(path)
        );
        self.problem(&codes::YAML11_AMBIGUOUS, path, node, msg, Some(fix));
    }

    pub fn spec(&mut self, root: &Node) -> Option<RawSpec> {
        let top = self.fields(root, "", TOP)?;
        let name = match top.get("name") {
            Some(n) => self.string(n, "name"),
            None => {
                self.missing(
                    "",
                    Some(root),
                    "name",
                    "add `name: <mesh name>` (a DNS label such as `homelab`)",
                );
                None
            }
        };

        let mut version = None;
        let mut repo = DEFAULT_REPO.to_owned();
        let mut values = Value::map();
        match top.get("cilium") {
            Some(c) => {
                if let Some(f) = self.fields(c, "cilium", CILIUM) {
                    match f.get("version") {
                        Some(v) => version = self.version(v),
                        None => self.missing(
                            "cilium",
                            Some(c),
                            "version",
                            "add `version: \"1.14.2\"` (quoted)",
                        ),
                    }
                    if let Some(r) = f.get("repo")
                        && let Some(r) = self.string(r, "cilium.repo")
                    {
                        repo = r;
                    }
                    if let Some(v) = f.get("values") {
                        values = self.values(v, "cilium.values");
                    }
                }
            }
            None => self.missing(
                "",
                Some(root),
                "cilium",
                "add a `cilium:` section with `version: \"1.14.2\"`",
            ),
        }

        let mesh = self.mesh(top.get("clustermesh"));
        let pki = self.pki(top.get("pki"));
        let gitops = self.gitops(top.get("gitops"));

        let mut clusters = Vec::new();
        match top.get("clusters") {
            Some(node) => match &node.value {
                NodeValue::Seq(items) => {
                    for (i, n) in items.iter().enumerate() {
                        clusters.push(self.cluster(n, &item("clusters", i)));
                    }
                }
                _ => self.wrong_type(
                    "clusters",
                    node,
                    "a list of clusters",
                    Some("start each cluster with `- name: ...`".into()),
                ),
            },
            None => self.missing(
                "",
                Some(root),
                "clusters",
                "add a `clusters:` list with one entry per cluster",
            ),
        }

        Some(RawSpec {
            name,
            version,
            repo,
            values,
            mesh,
            pki,
            gitops,
            clusters,
        })
    }

    fn version(&mut self, node: &Node) -> Option<CiliumVersion> {
        let path = "cilium.version";
        let text = match (&node.value, node.resolve()) {
            (NodeValue::Scalar { text, .. }, Some(Resolved::Str)) => text.clone(),
            (NodeValue::Scalar { text, .. }, Some(Resolved::Float(_) | Resolved::Int(_))) => {
                let help = format!(
                    "YAML reads `{text}` as a number (1.20 would become 1.2); write the full version as a quoted string, for example \"{text}.0\""
                );
                self.wrong_type(path, node, "a quoted version string", Some(help));
                return None;
            }
            _ => {
                self.wrong_type(
                    path,
                    node,
                    "a version string",
                    Some("write a quoted version such as \"1.14.2\"".into()),
                );
                return None;
            }
        };
        match text.parse::<CiliumVersion>() {
            Ok(v) => Some(v),
            Err(e) => {
                self.problem(
                    &codes::VERSION_SYNTAX,
                    path,
                    node,
                    e.to_string(),
                    Some("write a chart version such as \"1.14.2\" or \"1.20.0\"".into()),
                );
                None
            }
        }
    }

    fn mesh(&mut self, node: Option<&Node>) -> MeshSettings {
        let mut m = MeshSettings {
            domain: DEFAULT_DOMAIN.to_owned(),
            service_type: ServiceType::NodePort,
            auth_mode: AuthMode::Cluster,
            kvstoremesh: None,
            max_connected_clusters: 255,
            endpoint_slice_sync: false,
            cache_ttl: None,
            policy_default_local_cluster: None,
            certificates: CertMethod::Cmesh,
        };
        let Some(node) = node else { return m };
        let Some(f) = self.fields(node, "clustermesh", MESH) else {
            return m;
        };
        if let Some(n) = f.get("domain")
            && let Some(d) = self.string(n, "clustermesh.domain")
        {
            if is_dns_name(&d) {
                m.domain = d;
            } else {
                let msg = format!("`clustermesh.domain` is `{d}`, which is not a DNS name");
                self.problem(
                    &codes::DOMAIN_FORMAT,
                    "clustermesh.domain",
                    n,
                    msg,
                    Some("use lowercase labels separated by dots, such as mesh.cilium.io".into()),
                );
            }
        }
        if let Some(n) = f.get("serviceType") {
            match self.choice(n, "clustermesh.serviceType", &["NodePort", "LoadBalancer"]) {
                Some("LoadBalancer") => m.service_type = ServiceType::LoadBalancer,
                Some(_) => m.service_type = ServiceType::NodePort,
                None => {}
            }
        }
        if let Some(n) = f.get("authMode") {
            match self.choice(
                n,
                "clustermesh.authMode",
                &["cluster", "migration", "legacy"],
            ) {
                Some("migration") => m.auth_mode = AuthMode::Migration,
                Some("legacy") => m.auth_mode = AuthMode::Legacy,
                _ => {}
            }
        }
        if let Some(n) = f.get("kvstoremesh") {
            m.kvstoremesh = self.boolean(n, "clustermesh.kvstoremesh");
        }
        if let Some(n) = f.get("maxConnectedClusters")
            && let Some(v) = self.integer(
                n,
                "clustermesh.maxConnectedClusters",
                0,
                i128::from(u16::MAX),
            )
        {
            // Range (255 | 511) is a semantic rule with its own code.
            m.max_connected_clusters = u16::try_from(v).unwrap_or(255);
        }
        if let Some(n) = f.get("endpointSliceSync") {
            m.endpoint_slice_sync = self
                .boolean(n, "clustermesh.endpointSliceSync")
                .unwrap_or(false);
        }
        if let Some(n) = f.get("policyDefaultLocalCluster") {
            m.policy_default_local_cluster =
                self.boolean(n, "clustermesh.policyDefaultLocalCluster");
        }
        if let Some(n) = f.get("cacheTTL")
            && let Some(t) = self.string(n, "clustermesh.cacheTTL")
        {
            if go_duration(&t) {
                m.cache_ttl = Some(t);
            } else {
                self.problem(
                    &codes::INVALID_VALUE,
                    "clustermesh.cacheTTL",
                    n,
                    format!("`clustermesh.cacheTTL` `{t}` is not a duration"),
                    Some(
                        "write a Go duration such as 10m, 1h or 1h30m (0s: never revoke a lost peer's state)"
                            .into(),
                    ),
                );
            }
        }
        if let Some(n) = f.get("certificates") {
            m.certificates = match self.choice(
                n,
                "clustermesh.certificates",
                &["cmesh", "helm", "cronJob", "certManager"],
            ) {
                Some("helm") => CertMethod::Helm,
                Some("cronJob") => CertMethod::CronJob,
                Some("certManager") => CertMethod::CertManager,
                _ => CertMethod::Cmesh,
            };
        }
        m
    }

    fn pki(&mut self, node: Option<&Node>) -> PkiSettings {
        let mut p = PkiSettings {
            dir: "pki".to_owned(),
            key_algorithm: KeyAlgorithm::EcdsaP256,
            ca_validity_days: 3650,
            cert_validity_days: 365,
        };
        let Some(node) = node else { return p };
        let Some(f) = self.fields(node, "pki", PKI) else {
            return p;
        };
        if let Some(n) = f.get("dir")
            && let Some(d) = self.string(n, "pki.dir")
        {
            if d.trim().is_empty() {
                self.problem(
                    &codes::INVALID_VALUE,
                    "pki.dir",
                    n,
                    "`pki.dir` is empty".into(),
                    Some("leave it out for the default `pki`".into()),
                );
            } else {
                p.dir = d;
            }
        }
        if let Some(n) = f.get("keyAlgorithm") {
            p.key_algorithm = match self.choice(
                n,
                "pki.keyAlgorithm",
                &["ecdsa-p256", "rsa-2048", "rsa-4096"],
            ) {
                Some("rsa-2048") => KeyAlgorithm::Rsa2048,
                Some("rsa-4096") => KeyAlgorithm::Rsa4096,
                _ => KeyAlgorithm::EcdsaP256,
            };
        }
        if let Some(n) = f.get("caValidityDays")
            && let Some(v) = self.integer(n, "pki.caValidityDays", 1, 36500)
        {
            p.ca_validity_days = v as u32;
        }
        if let Some(n) = f.get("certValidityDays")
            && let Some(v) = self.integer(n, "pki.certValidityDays", 1, 36500)
        {
            p.cert_validity_days = v as u32;
        }
        p
    }

    fn gitops(&mut self, node: Option<&Node>) -> GitopsSettings {
        let mut g = GitopsSettings::default();
        let Some(node) = node else { return g };
        let Some(f) = self.fields(node, "gitops", GITOPS) else {
            return g;
        };
        if let Some(n) = f.get("repoURL")
            && let Some(u) = self.string(n, "gitops.repoURL")
        {
            match check_git_url(&u) {
                    Ok(()) => g.repo_url = Some(u),
                    Err(why) => self.problem(
                        &codes::INVALID_VALUE,
                        "gitops.repoURL",
                        n,
                        format!("`gitops.repoURL` {why}"),
                        Some("give the URL Argo CD and Flux clone, e.g. `https://github.com/acme/platform.git` or `ssh://git@github.com/acme/platform.git`".into()),
                    ),
                }
        }
        if let Some(n) = f.get("revision")
            && let Some(r) = self.string(n, "gitops.revision")
        {
            if r.trim().is_empty() || r.contains(char::is_whitespace) {
                self.problem(
                    &codes::INVALID_VALUE,
                    "gitops.revision",
                    n,
                    "`gitops.revision` must be a branch, tag or commit without spaces".into(),
                    Some("e.g. `main`, or leave it out for `HEAD`".into()),
                );
            } else {
                g.revision = r;
            }
        }
        if let Some(n) = f.get("path")
            && let Some(p) = self.string(n, "gitops.path")
        {
            match normalize_git_path(&p) {
                    Ok(p) => g.path = p,
                    Err(why) => self.problem(
                        &codes::INVALID_VALUE,
                        "gitops.path",
                        n,
                        format!("`gitops.path` {why}"),
                        Some("the tree's directory relative to the repository root, e.g. `clusters/mesh`".into()),
                    ),
                }
        }
        if let Some(n) = f.get("sealedPath")
            && let Some(p) = self.string(n, "gitops.sealedPath")
        {
            match normalize_git_path(&p) {
                    Ok(p) => g.sealed_path = Some(p),
                    Err(why) => self.problem(
                        &codes::INVALID_VALUE,
                        "gitops.sealedPath",
                        n,
                        format!("`gitops.sealedPath` {why}"),
                        Some("a directory relative to the repository root, outside `gitops.path`, e.g. `clusters/mesh-sealed`".into()),
                    ),
                }
        }
        if let Some(n) = f.get("fluxKubeConfig")
            && let Some(b) = self.boolean(n, "gitops.fluxKubeConfig")
        {
            g.flux_kubeconfig = b;
        }
        g
    }

    fn cluster(&mut self, node: &Node, path: &str) -> RawCluster {
        let mut c = RawCluster {
            values: Value::map(),
            ..RawCluster::default()
        };
        let Some(f) = self.fields(node, path, CLUSTER) else {
            return c;
        };
        match f.get("name") {
            Some(n) => c.name = self.string(n, &child(path, "name")),
            None => self.missing(
                path,
                Some(node),
                "name",
                "add `name: <cluster name>`, a DNS label of at most 32 characters",
            ),
        }
        match f.get("id") {
            Some(n) => {
                c.id = self
                    .integer(n, &child(path, "id"), i128::MIN, i128::MAX)
                    .map(|i| u16::try_from(i).unwrap_or(u16::MAX));
                // Out-of-u16 values are still out of range: keep them visible to the range rule.
                if let (Some(Resolved::Int(i)), Some(_)) = (n.resolve(), c.id)
                    && i < 0
                {
                    c.id = Some(u16::MAX);
                }
            }
            None => self.missing(
                path,
                Some(node),
                "id",
                "add `id: <1..255>`, unique across the mesh",
            ),
        }
        if let Some(n) = f.get("kubeconfig") {
            c.kubeconfig = self.string(n, &child(path, "kubeconfig"));
        }
        if let Some(n) = f.get("context") {
            c.context = self.string(n, &child(path, "context"));
        }
        if let Some(n) = f.get("apiServer") {
            let p = child(path, "apiServer");
            if let Some(text) = self.string(n, &p) {
                match parse_host_port(&text, 6443) {
                    Some(hp) => c.api_server = Some(hp),
                    None => {
                        let msg = format!(
                            "`{}` is `{text}`, which is not HOST[:PORT]",
                            display_path(&p)
                        );
                        self.problem(&codes::API_SERVER_FORMAT, &p, n, msg, Some("write the API server as host:port, for example k8s-lab-01.mylaptop.loc:6443 or 192.168.124.6:6443".into()));
                    }
                }
            }
        }
        match f.get("podCIDR") {
            Some(n) => c.pod_cidrs = self.cidrs(n, &child(path, "podCIDR")).unwrap_or_default(),
            None => self.missing(
                path,
                Some(node),
                "podCIDR",
                "add `podCIDR: <CIDR>` (or a list for dual stack), unique across the mesh",
            ),
        }
        if let Some(n) = f.get("podCIDRMaskSize") {
            c.pod_cidr_mask_size = self
                .integer(n, &child(path, "podCIDRMaskSize"), 1, 128)
                .map(|v| v as u8);
        }
        match f.get("serviceCIDR") {
            Some(n) => {
                c.service_cidrs = self
                    .cidrs(n, &child(path, "serviceCIDR"))
                    .unwrap_or_default()
            }
            None => self.missing(
                path,
                Some(node),
                "serviceCIDR",
                "add `serviceCIDR: <CIDR>`, the cluster's --service-cluster-ip-range",
            ),
        }
        if let Some(n) = f.get("nodeCIDR") {
            c.node_cidrs = self.cidrs(n, &child(path, "nodeCIDR")).unwrap_or_default();
        }
        match f.get("clustermesh") {
            Some(n) => self.endpoint(n, &child(path, "clustermesh"), &mut c),
            None => {
                c.endpoint_given = false;
                self.missing(path, Some(node), "clustermesh", "add `clustermesh:` with `address` (or `ips`) and `port`: where the other clusters reach this one");
            }
        }
        if let Some(n) = f.get("values") {
            c.values = self.values(n, &child(path, "values"));
        }
        c
    }

    fn endpoint(&mut self, node: &Node, path: &str, c: &mut RawCluster) {
        c.endpoint_given = true;
        let Some(f) = self.fields(node, path, ENDPOINT) else {
            return;
        };
        if let Some(n) = f.get("address") {
            let p = child(path, "address");
            if let Some(text) = self.string(n, &p) {
                match parse_host(&text) {
                    Some(h) => c.address = Some(h),
                    None => {
                        let msg = format!(
                            "`{}` is `{text}`, which is neither a DNS name nor an IP address",
                            display_path(&p)
                        );
                        let help = if text.contains("://")
                            || text.contains(':') && text.parse::<IpAddr>().is_err()
                        {
                            "give the host only: the scheme is always https and the port goes in `port`"
                        } else {
                            "use a DNS name such as k8s-lab-01.mylaptop.loc or an IP address"
                        };
                        self.problem(&codes::ADDRESS_FORMAT, &p, n, msg, Some(help.into()));
                    }
                }
            }
        }
        if let Some(n) = f.get("ips") {
            let p = child(path, "ips");
            match &n.value {
                NodeValue::Seq(items) => {
                    for (i, it) in items.iter().enumerate() {
                        let ip_path = item(&p, i);
                        if let Some(text) = self.string(it, &ip_path) {
                            match text.trim().parse::<IpAddr>() {
                                Ok(ip) => c.ips.push(ip),
                                Err(_) => {
                                    let msg = format!(
                                        "`{}` is `{text}`, which is not an IP address",
                                        display_path(&ip_path)
                                    );
                                    self.problem(&codes::IPS_FORMAT, &ip_path, it, msg, Some("list IP addresses only; put a DNS name in `address` instead".into()));
                                }
                            }
                        }
                    }
                }
                _ => self.wrong_type(
                    &p,
                    n,
                    "a list of IP addresses",
                    Some("write a list, for example [192.168.124.6]".into()),
                ),
            }
        }
        if let Some(n) = f.get("port") {
            c.port = self
                .integer(n, &child(path, "port"), 1, 65535)
                .map(|p| p as u16);
            // Out-of-range ports were reported; remember that one was given.
            if c.port.is_none() {
                c.port = Some(0);
            }
        }
    }
}

/// Renders a path for messages (identical to the index path).
/// Whether `u` looks like a URL git can clone (https, http, ssh or scp-like `git@host:path`).
///
/// # Errors
/// What is wrong with it, to follow "`gitops.repoURL` ".
pub fn check_git_url(u: &str) -> Result<(), String> {
    if u.contains(char::is_whitespace) {
        return Err("contains spaces".into());
    }
    let scp = u
        .split_once('@')
        .and_then(|(_, rest)| rest.split_once(':'))
        .is_some_and(|(host, path)| !host.is_empty() && !path.is_empty() && !host.contains('/'));
    let url = ["https://", "http://", "ssh://", "git://", "file://"]
        .iter()
        .any(|p| u.strip_prefix(p).is_some_and(|r| r.len() > 1));
    if scp || url {
        Ok(())
    } else {
        Err(format!(
            "`{u}` is not a git URL (https://, ssh:// or git@host:path)"
        ))
    }
}

/// `p` as a repository-relative directory: no leading or trailing `/`, no `..`, `.` for the
/// root.
///
/// # Errors
/// What is wrong with it, to follow "`gitops.path` ".
pub fn normalize_git_path(p: &str) -> Result<String, String> {
    let parts: Vec<&str> = p
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect();
    if p.starts_with('/') {
        return Err(format!(
            "`{p}` is absolute; it is relative to the repository root"
        ));
    }
    if parts.contains(&"..") {
        return Err(format!("`{p}` leaves the repository (`..`)"));
    }
    if parts.is_empty() {
        return Ok(".".into());
    }
    Ok(parts.join("/"))
}

pub(crate) fn display_path(path: &str) -> String {
    path.to_owned()
}

/// Suggests the closest of `options` to `given`, if any is close.
pub(crate) fn suggest<'a>(given: &str, options: &[&'a str]) -> Option<&'a str> {
    let g = given.to_ascii_lowercase();
    options
        .iter()
        .map(|o| (o, strsim::jaro_winkler(&g, &o.to_ascii_lowercase())))
        .filter(|(_, score)| *score > 0.8)
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(o, _)| *o)
}

/// True for a DNS name: labels of 1..63 `[a-z0-9-]` not starting or ending with `-`,
/// total <= 253. A leading `*.` wildcard is not accepted here.
pub fn is_dns_name(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(is_dns_label_loose)
        // An all-numeric last label would be mistaken for an IP address.
        && !s.rsplit('.').next().is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
}

fn is_dns_label_loose(l: &str) -> bool {
    !l.is_empty()
        && l.len() <= 63
        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !l.starts_with('-')
        && !l.ends_with('-')
}

/// True for a DNS-1123 label: lowercase alphanumerics and `-`, starting and ending with an
/// alphanumeric, at most 63 characters.
pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn parse_host(text: &str) -> Option<Host> {
    let t = text.trim();
    if let Ok(ip) = t
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        return Some(Host::Ip(ip));
    }
    is_dns_name(t).then(|| Host::Dns(t.trim_end_matches('.').to_ascii_lowercase()))
}

/// Parses `host`, `host:port`, `[v6]:port` or an `https://` URL.
pub(crate) fn parse_host_port(text: &str, default_port: u16) -> Option<HostPort> {
    let t = text.trim();
    let t = t.strip_prefix("https://").unwrap_or(t);
    let t = t.strip_suffix('/').unwrap_or(t);
    if let Some(rest) = t.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        let ip: IpAddr = ip.parse().ok()?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok().filter(|p| *p > 0)?,
            None if after.is_empty() => default_port,
            None => return None,
        };
        return Some(HostPort {
            host: Host::Ip(ip),
            port,
        });
    }
    if let Ok(ip) = t.parse::<IpAddr>() {
        return Some(HostPort {
            host: Host::Ip(ip),
            port: default_port,
        });
    }
    let (host, port) = match t.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().ok().filter(|p: &u16| *p > 0)?),
        None => (t, default_port),
    };
    Some(HostPort {
        host: parse_host(host)?,
        port,
    })
}

/// Whether `t` is a Go duration as Cilium's flags parse it: one or more `<number><unit>`
/// (units ns, us, µs, ms, s, m, h; `0` alone is allowed too).
pub(crate) fn go_duration(t: &str) -> bool {
    if t == "0" {
        return true;
    }
    let mut rest = t;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..digits];
        if number.is_empty()
            || number.starts_with('.')
            || number.ends_with('.')
            || number.matches('.').count() > 1
        {
            return false;
        }
        rest = &rest[digits..];
        let Some(unit) = ["ns", "us", "µs", "ms", "s", "m", "h"]
            .into_iter()
            .filter(|u| rest.starts_with(u))
            .max_by_key(|u| u.len())
        else {
            return false;
        };
        rest = &rest[unit.len()..];
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_as_cilium_parses_them() {
        for ok in [
            "0", "0s", "10m", "1h30m", "1.5h", "300ms", "2us", "2µs", "1h0m0s",
        ] {
            assert!(go_duration(ok), "{ok}");
        }
        for bad in [
            "",
            "10",
            "m",
            "ten minutes",
            "1d",
            "1.h",
            ".5s",
            "1..5s",
            "-1s",
            "5 m",
        ] {
            assert!(!go_duration(bad), "{bad}");
        }
    }

    #[test]
    fn host_port_forms() {
        let hp = parse_host_port("k8s-lab-01.mylaptop.loc:6443", 1).unwrap();
        assert_eq!(hp.host, Host::Dns("k8s-lab-01.mylaptop.loc".into()));
        assert_eq!(hp.port, 6443);
        assert_eq!(
            parse_host_port("https://10.0.0.1:443/", 1).unwrap().port,
            443
        );
        assert_eq!(
            parse_host_port("[fd00::1]:6443", 1).unwrap().host,
            Host::Ip("fd00::1".parse().unwrap())
        );
        assert_eq!(parse_host_port("fd00::1", 6443).unwrap().port, 6443);
        assert_eq!(parse_host_port("host", 6443).unwrap().port, 6443);
        assert!(parse_host_port("host:0", 1).is_none());
        assert!(parse_host_port("ho st:1", 1).is_none());
        assert!(parse_host_port("host:99999", 1).is_none());
    }

    #[test]
    fn names() {
        assert!(is_dns_name("k8s-lab-01.mylaptop.loc"));
        assert!(!is_dns_name("-bad.example"));
        assert!(!is_dns_name("1.2.3.4"));
        assert!(!is_dns_name("a..b"));
        assert!(is_dns1123_label("k8s01"));
        assert!(!is_dns1123_label("K8s01"));
        assert!(!is_dns1123_label("k8s_01"));
        assert_eq!(suggest("podCidr", CLUSTER), Some("podCIDR"));
        assert_eq!(suggest("zzz", CLUSTER), None);
    }
}
