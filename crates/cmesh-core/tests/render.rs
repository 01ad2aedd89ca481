//! Rendering tests: snapshots per Cilium version (certificates and keys redacted to what they
//! are), byte-stability, YAML 1.1 safety, and the article's meaning.

use std::collections::BTreeMap;

use base64::Engine as _;
use cmesh_core::pki::CertInfo;
use cmesh_core::pki::store::{self, CaPolicy, PkiFiles, ReconcileOptions};
use cmesh_core::render::{self, Phase, RenderOptions, RenderedTree, ScriptPaths};
use cmesh_core::spec::{self, MeshSpec, example};
use cmesh_core::yaml;
use time::Duration;
use time::macros::datetime;

/// The lab at `version`, with the values that version's chart accepts.
fn lab(version: &str) -> MeshSpec {
    let mut text =
        example::builtin().replace("version: \"1.14.2\"", &format!("version: \"{version}\""));
    if !version.starts_with("1.14")
        && !version.starts_with("1.15")
        && !version.starts_with("1.16")
        && !version.starts_with("1.17")
        && !version.starts_with("1.18")
    {
        text = text.replace("    bgp:\n      enabled: false\n", "");
    }
    spec::load("mesh.yaml", &text).unwrap().0
}

/// Reconcile options at `now` for `spec`'s method, 30 days' renewal window.
fn reconcile_opts(
    spec: &MeshSpec,
    ca_policy: CaPolicy,
    now: time::OffsetDateTime,
) -> ReconcileOptions {
    ReconcileOptions {
        now,
        renew_before: Duration::days(30),
        force: false,
        clusters: None,
        leaves: spec.clustermesh.certificates == spec::CertMethod::Cmesh,
        ca_policy,
        verified: Default::default(),
    }
}

fn pki_for(spec: &MeshSpec, files: &mut PkiFiles) -> render::PkiView {
    let opts = reconcile_opts(
        spec,
        CaPolicy::CreateIfMissing,
        datetime!(2026-11-24 12:00 UTC),
    );
    let r = store::reconcile(spec, files, &opts).unwrap();
    for w in &r.writes {
        files.insert(w.path.clone(), w.bytes.clone());
    }
    render::pki_view(spec, Some(&r))
}

fn opts(phase: Phase) -> RenderOptions {
    RenderOptions {
        phase,
        paths: ScriptPaths {
            spec_dir: "..".into(),
            secrets_dir: ".".into(),
        },
        secrets_elsewhere: false,
    }
}

/// Replaces every base64 blob that decodes to PEM with a description of what it is.
fn redact(text: &str) -> String {
    let mut out = String::new();
    // Each value is on one line after `: ` or `- `.
    for line in text.lines() {
        let (head, tail) = match line.rfind(": ").or_else(|| line.rfind("- ")) {
            Some(i) => (&line[..i + 2], &line[i + 2..]),
            None => ("", line),
        };
        out.push_str(head);
        out.push_str(&describe(tail).unwrap_or_else(|| tail.to_owned()));
        out.push('\n');
    }
    out
}

fn describe(blob: &str) -> Option<String> {
    if blob.len() < 40 {
        return None;
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(blob.trim())
        .ok()?;
    let pem = String::from_utf8(bytes).ok()?;
    if pem.contains("PRIVATE KEY") {
        return Some("<private key>".into());
    }
    let info = CertInfo::from_pem(&pem).ok()?;
    let mut sans: Vec<String> = info.dns_names.clone();
    sans.extend(info.ip_addresses.iter().map(ToString::to_string));
    Some(if info.is_ca {
        format!("<CA certificate CN={}>", info.common_name)
    } else {
        format!(
            "<certificate CN={} SANs=[{}]>",
            info.common_name,
            sans.join(",")
        )
    })
}

fn file<'a>(tree: &'a RenderedTree, path: &str) -> &'a str {
    let f = tree
        .files
        .get(path)
        .or_else(|| tree.secret_files.get(path))
        .unwrap_or_else(|| panic!("no {path}"));
    std::str::from_utf8(&f.bytes).unwrap()
}

fn snapshot_version(version: &str) {
    let spec = lab(version);
    let pki = pki_for(&spec, &mut PkiFiles::new());
    let tree = render::render_tree(&spec, &pki, &opts(Phase::Mesh)).unwrap();
    let mut listing: Vec<String> = tree
        .files
        .iter()
        .map(|(p, f)| format!("{p} {:?}", f.kind))
        .collect();
    listing.extend(
        tree.secret_files
            .iter()
            .map(|(p, f)| format!("{p} {:?} (secret)", f.kind)),
    );
    let mut doc = format!("files:\n  {}\n", listing.join("\n  "));
    for p in [
        "k8s01/values.yaml",
        "k8s01/secrets.yaml",
        "argocd/applications/k8s01.yaml",
        "flux/k8s02.yaml",
        "helm/k8s01.sh",
    ] {
        if tree.files.contains_key(p) || tree.secret_files.contains_key(p) {
            doc.push_str(&format!("\n===== {p}\n{}", redact(file(&tree, p))));
        }
    }
    let name = format!("tree_{}", version.replace('.', "_"));
    insta::assert_snapshot!(name, doc);
}

#[test]
fn snapshot_1_14() {
    snapshot_version("1.14.2");
}

#[test]
fn snapshot_1_16() {
    snapshot_version("1.16.0");
}

#[test]
fn snapshot_1_16_19() {
    snapshot_version("1.16.19");
}

#[test]
fn snapshot_1_19() {
    snapshot_version("1.19.6");
}

#[test]
fn snapshot_1_20() {
    snapshot_version("1.20.0");
}

#[test]
fn snapshot_readme_and_applicationset() {
    let spec = lab("1.20.0");
    let pki = pki_for(&spec, &mut PkiFiles::new());
    let tree = render::render_tree(&spec, &pki, &opts(Phase::Mesh)).unwrap();
    insta::assert_snapshot!("readme_1_20", file(&tree, "README.md"));
    insta::assert_snapshot!(
        "applicationset_1_20",
        redact(file(&tree, "argocd/applicationset/applicationset.yaml"))
    );
    insta::assert_snapshot!("gitignore_1_20", file(&tree, ".gitignore"));
}

#[test]
fn base_phase_has_no_mesh_block() {
    let spec = lab("1.14.2");
    let pki = pki_for(&spec, &mut PkiFiles::new());
    let tree = render::render_tree(&spec, &pki, &opts(Phase::Base)).unwrap();
    let v = file(&tree, "k8s01/values.yaml");
    assert!(!v.contains("clustermesh"), "{v}");
    assert!(v.contains("  id: 1\n") && v.contains("name: k8s01"));
    assert!(v.contains("tls:\n  ca:\n    cert: "), "{v}");
    // Hubble certificates are needed in both phases.
    assert!(redact(v).contains("CN=*.k8s01.hubble-grpc.cilium.io"));
    insta::assert_snapshot!("base_1_14_values", redact(v));
}

/// The article's meaning: k8s01 id 1 lists k8s02 at k8s-lab-02.mylaptop.loc:32380 and vice
/// versa, one CA shared, and the CA key in no values file.
#[test]
fn the_article_lab_as_values() {
    let spec = lab("1.14.2");
    let pki = pki_for(&spec, &mut PkiFiles::new());
    let tree = render::render_tree(&spec, &pki, &opts(Phase::Mesh)).unwrap();
    let parse = |p: &str| -> cmesh_core::value::Value {
        let doc = yaml::parse(file(&tree, p), yaml::Limits::default()).unwrap();
        to_value(doc.root.as_ref().unwrap())
    };
    let a = parse("k8s01/values.yaml");
    let b = parse("k8s02/values.yaml");
    let s = |v: &cmesh_core::value::Value, p: &[&str]| v.get(p).cloned();
    use cmesh_core::value::Value;
    assert_eq!(s(&a, &["cluster", "id"]), Some(Value::Int(1)));
    assert_eq!(s(&b, &["cluster", "id"]), Some(Value::Int(2)));
    let peers = |v: &Value| match v.get(&["clustermesh", "config", "clusters"]) {
        Some(Value::Seq(items)) => items.clone(),
        other => panic!("{other:?}"),
    };
    let pa = peers(&a);
    assert_eq!(pa.len(), 1);
    assert_eq!(pa[0].get(&["name"]), Some(&Value::from("k8s02")));
    assert_eq!(
        pa[0].get(&["address"]),
        Some(&Value::from("k8s-lab-02.mylaptop.loc"))
    );
    assert_eq!(pa[0].get(&["port"]), Some(&Value::Int(32380)));
    let pb = peers(&b);
    assert_eq!(
        pb[0].get(&["address"]),
        Some(&Value::from("k8s-lab-01.mylaptop.loc"))
    );
    assert_eq!(pb[0].get(&["port"]), Some(&Value::Int(32379)));
    assert!(
        s(&a, &["tls", "ca", "cert"]).is_some(),
        "1.14 reads the CA from values"
    );
    assert_eq!(s(&a, &["tls", "ca", "cert"]), s(&b, &["tls", "ca", "cert"]));
    assert_eq!(s(&a, &["tls", "ca", "key"]), None);
    for (path, f) in tree.files.iter().chain(tree.secret_files.iter()) {
        let text = std::str::from_utf8(&f.bytes).unwrap();
        assert!(
            !text.contains("BEGIN PRIVATE KEY"),
            "{path} holds a raw PEM key"
        );
    }
    assert_eq!(
        s(&a, &["clustermesh", "apiserver", "service", "nodePort"]),
        Some(Value::Int(32379))
    );
    assert_eq!(
        s(&a, &["clustermesh", "apiserver", "tls", "authMode"]),
        Some(Value::from("cluster"))
    );
    assert_eq!(
        s(&a, &["clustermesh", "config", "domain"]),
        Some(Value::from("mylaptop.loc"))
    );
    assert_eq!(
        s(&a, &["k8sServiceHost"]),
        Some(Value::from("k8s-lab-01.mylaptop.loc"))
    );
    assert_eq!(s(&a, &["kubeProxyReplacement"]), Some(Value::Bool(true)));
}

/// Converts a parsed YAML tree into values (YAML 1.2 resolution), for assertions.
fn to_value(n: &yaml::Node) -> cmesh_core::value::Value {
    use cmesh_core::value::Value;
    match &n.value {
        yaml::NodeValue::Map(entries) => Value::Map(
            entries
                .iter()
                .map(|e| (e.key.as_str().unwrap().to_owned(), to_value(&e.value)))
                .collect(),
        ),
        yaml::NodeValue::Seq(items) => Value::Seq(items.iter().map(to_value).collect()),
        yaml::NodeValue::Scalar { text, .. } => match n.resolve() {
            Some(yaml::Resolved::Null) => Value::Null,
            Some(yaml::Resolved::Bool(b)) => Value::Bool(b),
            Some(yaml::Resolved::Int(i)) => Value::Int(i as i64),
            Some(yaml::Resolved::Float(f)) => Value::Float(f),
            _ => Value::Str(text.clone()),
        },
    }
}

#[test]
fn the_ca_private_key_never_leaves_pki_dir_with_cmesh() {
    for version in ["1.14.2", "1.16.0", "1.19.6", "1.20.0"] {
        let spec = lab(version);
        let mut files = PkiFiles::new();
        let pki = pki_for(&spec, &mut files);
        let ca_key_pem = String::from_utf8(files["ca.key"].clone()).unwrap();
        let ca_key_b64 = base64::engine::general_purpose::STANDARD.encode(&ca_key_pem);
        let tree = render::render_tree(&spec, &pki, &opts(Phase::Mesh)).unwrap();
        for (path, f) in tree.files.iter().chain(tree.secret_files.iter()) {
            let text = std::str::from_utf8(&f.bytes).unwrap();
            assert!(
                !text.contains(&ca_key_b64),
                "{version}: {path} holds the CA key"
            );
        }
    }
}

#[test]
fn rendering_is_byte_identical_and_yaml11_safe() {
    for version in ["1.14.2", "1.16.0", "1.19.6", "1.20.0"] {
        let spec = lab(version);
        let mut files = PkiFiles::new();
        let pki1 = pki_for(&spec, &mut files);
        let t1 = render::render_tree(&spec, &pki1, &opts(Phase::Mesh)).unwrap();
        // A second reconcile reuses every file, so a second render is identical.
        let pki2 = pki_for(&spec, &mut files);
        let t2 = render::render_tree(&spec, &pki2, &opts(Phase::Mesh)).unwrap();
        assert_eq!(t1.files, t2.files, "{version}");
        assert_eq!(t1.secret_files, t2.secret_files, "{version}");
        for (path, f) in t1.files.iter().chain(t1.secret_files.iter()) {
            if path.ends_with(".yaml") {
                let text = std::str::from_utf8(&f.bytes).unwrap();
                let bad = yaml::ambiguous_plain_scalars(text).unwrap();
                assert!(bad.is_empty(), "{version} {path}: {bad:?}");
            }
        }
    }
}

#[test]
fn every_cluster_lists_every_other_for_many_clusters() {
    let o = example::ExampleOptions {
        clusters: 16,
        version: "1.16.0".parse().unwrap(),
        ..Default::default()
    };
    let spec = spec::load("m", &example::generate(&o).unwrap()).unwrap().0;
    let pki = pki_for(&spec, &mut PkiFiles::new());
    for c in &spec.clusters {
        let v = render::cluster_values(&spec, c, Phase::Mesh, &pki);
        let Some(cmesh_core::value::Value::Seq(peers)) =
            v.get(&["clustermesh", "config", "clusters"])
        else {
            panic!()
        };
        let names: Vec<&str> = peers
            .iter()
            .filter_map(|p| p.get(&["name"]).and_then(|n| n.as_str()))
            .collect();
        let expected: Vec<&str> = spec
            .clusters
            .iter()
            .filter(|x| x.name != c.name)
            .map(|x| x.name.as_str())
            .collect();
        assert_eq!(names, expected);
    }
}

/// The README's Mermaid topology: a node per cluster, an edge per peering up to 16 clusters
/// (here 16: 120 edges), and above that the nodes with the count of peerings.
#[test]
fn the_topology_draws_every_peering_up_to_sixteen_clusters() {
    for (n, edges) in [(3, 3), (16, 120), (17, 0)] {
        let o = example::ExampleOptions {
            clusters: n,
            version: "1.20.0".parse().unwrap(),
            ..Default::default()
        };
        let spec = spec::load("m", &example::generate(&o).unwrap()).unwrap().0;
        let pki = pki_for(&spec, &mut PkiFiles::new());
        let tree = render::render_tree(&spec, &pki, &opts(Phase::Mesh)).unwrap();
        let readme = file(&tree, "README.md");
        let graph = readme
            .split("```mermaid\n")
            .nth(1)
            .and_then(|g| g.split("```").next())
            .unwrap_or_else(|| panic!("no mermaid block:\n{readme}"));
        assert!(graph.starts_with("graph LR\n"), "{graph}");
        assert_eq!(graph.matches("[\"<b>").count(), n, "{graph}");
        assert_eq!(graph.matches(" <--> ").count(), edges, "{graph}");
        for c in &spec.clusters {
            assert!(
                graph.contains(&format!("<b>{}</b><br/>id {}<br/>", c.name, c.id)),
                "{graph}"
            );
        }
        assert_eq!(
            readme.contains(&format!("{} peerings, not drawn", n * (n - 1) / 2)),
            n > 16,
            "{readme}"
        );
    }
}

#[test]
fn user_values_win_and_are_reported() {
    let text = example::builtin().replace(
        "      port: 32380\n",
        "      port: 32380\n    values:\n      operator:\n        replicas: 2\n      cluster:\n        name: renamed\n",
    );
    let checked = spec::check("m", &text);
    let warns: Vec<_> = checked
        .diagnostics
        .iter()
        .map(|d| (d.code, d.field.clone().unwrap_or_default()))
        .collect();
    assert_eq!(
        warns,
        vec![("CM601", "clusters[1].values.cluster.name".to_string())]
    );
    let d = &checked.diagnostics[0];
    assert_eq!(d.related[0].field.as_deref(), Some("clusters[1].name"));
    let spec = checked.spec.unwrap();
    let pki = pki_for(&spec, &mut PkiFiles::new());
    let v = render::cluster_values(&spec, &spec.clusters[1], Phase::Mesh, &pki);
    assert_eq!(
        v.get(&["cluster", "name"]).and_then(|x| x.as_str()),
        Some("renamed")
    );
    assert_eq!(
        v.get(&["operator", "replicas"]).and_then(|x| x.as_int()),
        Some(2)
    );
}

#[test]
fn other_methods_wire_the_chart() {
    let methods = BTreeMap::from([("helm", "helm"), ("cronJob", "cronJob")]);
    for (method, word) in methods {
        let text =
            example::builtin().replace("certificates: cmesh", &format!("certificates: {method}"));
        let spec = spec::load("m", &text).unwrap().0;
        let pki = pki_for(&spec, &mut PkiFiles::new());
        let tree = render::render_tree(&spec, &pki, &opts(Phase::Mesh)).unwrap();
        let v = file(&tree, "k8s01/values.yaml");
        assert!(v.contains(&format!("method: {word}")), "{method}: {v}");
        let app = file(&tree, "argocd/applications/k8s01.yaml");
        if method == "helm" {
            // The CA key goes to the chart (which signs) in secret-values.yaml, never in
            // values.yaml, and Argo CD must ignore the regenerated Secrets.
            assert!(!v.contains("    key: "), "{v}");
            let sv = redact(
                std::str::from_utf8(&tree.secret_files["k8s01/secret-values.yaml"].bytes).unwrap(),
            );
            assert!(sv.contains("ca:\n    key: <private key>"), "{sv}");
            assert!(app.contains("ignoreDifferences"), "{app}");
            assert!(app.contains("RespectIgnoreDifferences=true"));
            assert!(!tree.secret_files.contains_key("k8s01/secrets.yaml"));
        } else {
            // cronJob: the CA key travels in the pre-created cilium-ca Secret, not in values.
            assert!(!v.contains("    key: "), "{v}");
            assert!(!app.contains("ignoreDifferences"), "{app}");
            let s = redact(file(&tree, "k8s01/secrets.yaml"));
            assert!(
                s.contains("name: cilium-ca") && s.contains("ca.key: <private key>"),
                "{s}"
            );
        }
    }
}

fn schema() -> jsonschema::Validator {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/schema/cilium-values.schema-1.20.0.json"
    );
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    jsonschema::draft7::new(&schema).unwrap()
}

/// Rendered values pass the chart's own schema (shipped from 1.16) for every method and phase.
#[test]
fn values_pass_the_chart_schema() {
    let validator = schema();
    for version in [
        "1.16.0", "1.16.19", "1.17.18", "1.18.12", "1.19.6", "1.20.0",
    ] {
        for method in ["cmesh", "helm", "cronJob"] {
            let spec = {
                let base = lab(version);
                let text = base
                    .source
                    .text()
                    .text()
                    .replace("certificates: cmesh", &format!("certificates: {method}"));
                spec::load("m", &text).unwrap().0
            };
            let pki = pki_for(&spec, &mut PkiFiles::new());
            for phase in [Phase::Base, Phase::Mesh] {
                for c in &spec.clusters {
                    let v = render::cluster_values(&spec, c, phase, &pki).to_json();
                    let errors: Vec<String> = validator
                        .iter_errors(&v)
                        .map(|e| format!("{} at {}", e, e.instance_path()))
                        .collect();
                    assert!(
                        errors.is_empty(),
                        "{version} {method} {phase:?} {}: {errors:?}",
                        c.name
                    );
                }
            }
        }
    }
}

/// The validator is real: the article's `id: "01"`-style string ID fails it.
#[test]
fn schema_rejects_a_string_cluster_id() {
    let validator = schema();
    let spec = lab("1.20.0");
    let pki = pki_for(&spec, &mut PkiFiles::new());
    let mut v = render::cluster_values(&spec, &spec.clusters[0], Phase::Mesh, &pki);
    v.set(&["cluster", "id"], "01");
    assert!(!validator.is_valid(&v.to_json()));
    v.set(&["cluster", "id"], 1i64);
    v.set(
        &[
            "clustermesh",
            "apiserver",
            "service",
            "externalTrafficPolicy",
        ],
        "Nowhere",
    );
    assert!(!validator.is_valid(&v.to_json()));
}

fn parse_yaml(text: &str) -> cmesh_core::value::Value {
    to_value(
        yaml::parse(text, yaml::Limits::default())
            .unwrap()
            .root
            .as_ref()
            .unwrap(),
    )
}

fn docs(text: &str) -> Vec<cmesh_core::value::Value> {
    text.split("\n---\n").map(parse_yaml).collect()
}

/// Helm's `-f a -f b`: maps merge key by key, anything else from `b` wins.
fn helm_merge(a: &mut cmesh_core::value::Value, b: &cmesh_core::value::Value) {
    use cmesh_core::value::Value;
    match (a, b) {
        (Value::Map(x), Value::Map(y)) => {
            for (k, v) in y {
                match x.get_mut(k) {
                    Some(old) => helm_merge(old, v),
                    None => {
                        x.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (a, b) => *a = b.clone(),
    }
}

/// values.yaml (+ secret-values.yaml where the version needs it) is exactly the cluster's
/// values; Flux's ConfigMap holds values.yaml's text and the Secret the rest; Argo CD reads both
/// files from git by path.
#[test]
fn gitops_objects_carry_exactly_the_cluster_values() {
    for version in ["1.14.2", "1.20.0"] {
        let spec = lab(version);
        let pki = pki_for(&spec, &mut PkiFiles::new());
        let tree = render::render_tree(&spec, &pki, &opts(Phase::Mesh)).unwrap();
        for c in &spec.clusters {
            let want = render::cluster_values(&spec, c, Phase::Mesh, &pki);
            let mut got = parse_yaml(file(&tree, &format!("{}/values.yaml", c.name)));
            let secret = tree
                .secret_files
                .get(&format!("{}/secret-values.yaml", c.name));
            assert_eq!(secret.is_some(), version == "1.14.2", "{version}");
            if let Some(f) = secret {
                helm_merge(
                    &mut got,
                    &parse_yaml(std::str::from_utf8(&f.bytes).unwrap()),
                );
            }
            assert_eq!(got, want, "{version} {}: values files", c.name);

            let app = parse_yaml(file(&tree, &format!("argocd/applications/{}.yaml", c.name)));
            let cmesh_core::value::Value::Seq(sources) = app.get(&["spec", "sources"]).unwrap()
            else {
                panic!("sources")
            };
            let files = sources[0].get(&["helm", "valueFiles"]).unwrap();
            let mut expect = vec![format!("$values/cmesh-out/{}/values.yaml", c.name)];
            if secret.is_some() {
                expect.push(format!("$values/cmesh-out/{}/secret-values.yaml", c.name));
            }
            assert_eq!(files, &cmesh_core::value::Value::from(expect), "{version}");
            assert_eq!(sources[1].get(&["ref"]).unwrap().as_str(), Some("values"));

            let release = docs(file(
                &tree,
                &format!("flux/{}/release/release.yaml", c.name),
            ));
            let cm = release
                .iter()
                .find(|d| d.get(&["kind"]).and_then(|k| k.as_str()) == Some("ConfigMap"))
                .unwrap();
            let text = cm.get(&["data", "values.yaml"]).unwrap().as_str().unwrap();
            let mut got = parse_yaml(text);
            if secret.is_some() {
                let f = &tree.secret_files[&format!("{}/flux-secret-values.yaml", c.name)];
                let s = parse_yaml(std::str::from_utf8(&f.bytes).unwrap());
                let inner = s
                    .get(&["stringData", "values.yaml"])
                    .unwrap()
                    .as_str()
                    .unwrap();
                helm_merge(&mut got, &parse_yaml(inner));
            }
            assert_eq!(got, want, "{version} {}: flux values", c.name);
        }
    }
}

/// Decodes every base64-looking token of `text` too, so a key cannot hide in a values string.
fn has_private_key(text: &str) -> bool {
    text.contains("PRIVATE KEY")
        || text
            .split(|c: char| c.is_whitespace() || c == '"' || c == '\'')
            .filter(|t| t.len() > 40)
            .filter_map(|t| base64::engine::general_purpose::STANDARD.decode(t).ok())
            .any(|b| String::from_utf8_lossy(&b).contains("PRIVATE KEY"))
}

/// No private key (plain or base64) in any file outside the secrets outputs, for every
/// version, method and phase; the secrets outputs do hold them where the method needs them.
#[test]
fn no_private_key_outside_the_secrets_outputs() {
    for version in ["1.14.2", "1.15.19", "1.16.0", "1.16.19", "1.19.6", "1.20.0"] {
        for method in ["cmesh", "helm", "cronJob"] {
            let text = lab(version)
                .source
                .text()
                .text()
                .replace("certificates: cmesh", &format!("certificates: {method}"));
            let spec = spec::load("m", &text).unwrap().0;
            let pki = pki_for(&spec, &mut PkiFiles::new());
            for phase in [Phase::Base, Phase::Mesh] {
                let tree = render::render_tree(&spec, &pki, &opts(phase)).unwrap();
                for (path, f) in &tree.files {
                    let text = String::from_utf8_lossy(&f.bytes);
                    assert!(
                        !has_private_key(&text),
                        "{version} {method} {phase:?}: a private key in {path}"
                    );
                }
                for (path, f) in &tree.secret_files {
                    assert_eq!(f.kind, render::FileKind::Sensitive, "{path}");
                }
                assert!(
                    tree.secret_files
                        .values()
                        .any(|f| has_private_key(&String::from_utf8_lossy(&f.bytes))),
                    "{version} {method} {phase:?}: the keys went nowhere"
                );
            }
        }
    }
}

/// 511 clusters: every object of the Argo CD and Flux trees stays under the 256 KiB
/// client-side-apply limit (the ApplicationSet grows with N, not N²).
#[test]
fn five_hundred_eleven_clusters_fit_the_api_server() {
    // (511 clusters need maxConnectedClusters, from 1.15.)
    for version in ["1.15.19", "1.20.0"] {
        let o = example::ExampleOptions {
            clusters: 511,
            version: version.parse().unwrap(),
            ..Default::default()
        };
        let spec = spec::load("m", &example::generate(&o).unwrap()).unwrap().0;
        let pki = pki_for(&spec, &mut PkiFiles::new());
        let tree = render::render_tree(&spec, &pki, &opts(Phase::Mesh)).unwrap();
        assert_eq!(tree.large_objects, Vec::new(), "{version}");
        let largest = |prefix: &str| {
            tree.files
                .iter()
                .filter(|(p, _)| p.starts_with(prefix))
                .flat_map(|(_, f)| {
                    String::from_utf8_lossy(&f.bytes)
                        .split("\n---\n")
                        .map(str::len)
                        .collect::<Vec<_>>()
                })
                .max()
                .unwrap()
        };
        let (argo, flux) = (largest("argocd/"), largest("flux/"));
        eprintln!("{version}: largest Argo CD object {argo} bytes, Flux {flux} bytes");
        assert!(argo < render::WARN_OBJECT_BYTES && flux < render::WARN_OBJECT_BYTES);
        let set = file(&tree, "argocd/applicationset/applicationset.yaml");
        assert!(set.len() < 64 * 1024, "ApplicationSet {} bytes", set.len());
    }
}

/// Objects above 256 KiB are reported; above 1.5 MiB rendering fails naming the object.
#[test]
fn oversized_objects_are_reported() {
    let mut spec = lab("1.20.0");
    let big: String = "x".repeat(300 * 1024);
    spec.clusters[0]
        .values
        .set(&["extraConfig", "padding"], big.as_str());
    let pki = pki_for(&spec, &mut PkiFiles::new());
    let tree = render::render_tree(&spec, &pki, &opts(Phase::Mesh)).unwrap();
    let objects: Vec<String> = tree
        .large_objects
        .iter()
        .map(|o| format!("{} {}", o.path, o.object))
        .collect();
    assert_eq!(
        objects,
        ["flux/k8s01/release/release.yaml ConfigMap/cilium-values-k8s01"]
    );
    spec.clusters[0].values.set(
        &["extraConfig", "padding"],
        "x".repeat(1600 * 1024).as_str(),
    );
    let err = render::render_tree(&spec, &pki, &opts(Phase::Mesh)).unwrap_err();
    assert!(
        err.to_string()
            .contains("ConfigMap/cilium-values-k8s01 in flux/k8s01/release/release.yaml"),
        "{err}"
    );
}

/// certManager: the chart gets the method and the issuer (Hubble inherits it), no CA from
/// cmesh, no Secrets, no ignoreDifferences.
#[test]
fn cert_manager_method() {
    let text = example::builtin()
        .replace("authMode: cluster", "authMode: migration")
        .replace("certificates: cmesh", "certificates: certManager")
        .replace(
            "    l7Proxy: false\n",
            "    l7Proxy: false\n    clustermesh:\n      apiserver:\n        tls:\n          auto:\n            certManagerIssuerRef:\n              group: cert-manager.io\n              kind: ClusterIssuer\n              name: mesh-ca\n",
        );
    let (spec, warnings) = spec::load("m", &text).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let view = render::pki_view(&spec, None);
    let tree = render::render_tree(&spec, &view, &opts(Phase::Mesh)).unwrap();
    let v = file(&tree, "k8s01/values.yaml");
    assert!(v.contains("method: certmanager"), "{v}");
    assert!(!v.contains("tls:\n  ca:"), "no CA from cmesh: {v}");
    let parsed = to_value(
        yaml::parse(v, yaml::Limits::default())
            .unwrap()
            .root
            .as_ref()
            .unwrap(),
    );
    assert_eq!(
        parsed.get(&["hubble", "tls", "auto", "certManagerIssuerRef", "name"]),
        Some(&cmesh_core::value::Value::from("mesh-ca"))
    );
    assert!(tree.secret_files.is_empty());
    assert!(!file(&tree, "argocd/applications/k8s01.yaml").contains("ignoreDifferences"));
    let validator = schema();
    for c in &spec.clusters {
        assert!(
            validator.is_valid(&render::cluster_values(&spec, c, Phase::Mesh, &view).to_json())
        );
    }
}

/// The keyless check (issue 20): from the committed files alone (the CA certificate and the
/// leaf certificates the values carry), rendering reproduces every committed file byte for
/// byte, for every method, phase and a version on each side of the values/Secrets split; and
/// each committed leaf is judged kept.
#[test]
fn a_keyless_render_reproduces_every_committed_file() {
    use cmesh_core::pki::public::verify_public;
    use cmesh_core::render::keyless;
    for version in ["1.14.2", "1.15.19", "1.16.19", "1.20.0"] {
        for method in ["cmesh", "helm", "cronJob"] {
            let spec = {
                let text = lab(version)
                    .source
                    .text()
                    .text()
                    .replace("certificates: cmesh", &format!("certificates: {method}"));
                spec::load("m", &text).unwrap().0
            };
            let mut files = PkiFiles::new();
            let pki = pki_for(&spec, &mut files);
            for phase in [Phase::Base, Phase::Mesh] {
                let full = render::render_tree(&spec, &pki, &opts(phase)).unwrap();
                let values: BTreeMap<String, String> = spec
                    .clusters
                    .iter()
                    .map(|c| {
                        let f = &full.files[&format!("{}/values.yaml", c.name)];
                        (c.name.clone(), String::from_utf8(f.bytes.clone()).unwrap())
                    })
                    .collect();
                let committed = keyless::committed_leaf_certs(&spec, phase, &values);
                let check_opts =
                    reconcile_opts(&spec, CaPolicy::MustExist, datetime!(2026-11-25 12:00 UTC));
                let ca = String::from_utf8(files[store::CA_CERT].clone()).unwrap();
                let public = verify_public(
                    &spec,
                    &ca,
                    &committed,
                    |_, k| keyless::leaf_in_tree(&spec, phase, k),
                    &check_opts,
                )
                .unwrap();
                let what = format!("{version} {method} {}", phase.as_str());
                assert_eq!(committed.len(), public.events.len(), "{what}");
                assert!(
                    public
                        .events
                        .iter()
                        .all(|e| e.action == store::Action::Reused),
                    "{what}: {:?}",
                    public.events
                );
                // 1.14 and 1.15 take the Cluster Mesh leaves as values: the mesh phase
                // commits three per cluster; later versions none.
                let expect = if method == "cmesh"
                    && phase == Phase::Mesh
                    && (version.starts_with("1.14") || version.starts_with("1.15"))
                {
                    3 * spec.clusters.len()
                } else {
                    0
                };
                assert_eq!(
                    committed.keys().filter(|(_, k)| k.is_clustermesh()).count(),
                    expect,
                    "{what}"
                );
                let trust = cmesh_core::pki::rotation::trust_view(&files, &ca).unwrap();
                let view = keyless::keyless_view(&spec, &public, &trust);
                let again = render::render_tree(&spec, &view, &opts(phase)).unwrap();
                assert_eq!(
                    full.files.keys().collect::<Vec<_>>(),
                    again.files.keys().collect::<Vec<_>>(),
                    "{what}"
                );
                for (path, f) in &full.files {
                    assert!(
                        f.bytes == again.files[path].bytes,
                        "{what}: {path} differs:\n{}\n---\n{}",
                        String::from_utf8_lossy(&f.bytes),
                        String::from_utf8_lossy(&again.files[path].bytes)
                    );
                }
                assert_eq!(
                    full.secret_files.keys().collect::<Vec<_>>(),
                    again.secret_files.keys().collect::<Vec<_>>(),
                    "{what}: the same secret files, with stand-in keys"
                );
            }
        }
    }
}

/// A committed leaf from another CA, one whose names no longer match, and one missing are
/// each reported with what a render would do; the stand-in keys never pass for keys.
#[test]
fn a_keyless_check_names_each_leaf_it_would_change() {
    use cmesh_core::pki::public::verify_public;
    use cmesh_core::render::keyless;
    let spec = lab("1.14.2");
    let mut files = PkiFiles::new();
    let pki = pki_for(&spec, &mut files);
    let mut other_files = PkiFiles::new();
    let other = pki_for(&spec, &mut other_files);
    let full = render::render_tree(&spec, &pki, &opts(Phase::Mesh)).unwrap();
    let values =
        |c: &str| String::from_utf8(full.files[&format!("{c}/values.yaml")].bytes.clone()).unwrap();
    let mut committed = keyless::committed_leaf_certs(
        &spec,
        Phase::Mesh,
        &BTreeMap::from([
            ("k8s01".to_owned(), values("k8s01")),
            ("k8s02".to_owned(), values("k8s02")),
        ]),
    );
    use cmesh_core::pki::LeafKind;
    let key = |c: &str, k| (c.to_owned(), k);
    // k8s01's server certificate from the other CA; k8s02's admin certificate is k8s01's
    // (wrong names); k8s02's remote certificate is not committed.
    committed.insert(
        key("k8s01", LeafKind::ClustermeshServer),
        other.leaves[&key("k8s01", LeafKind::ClustermeshServer)]
            .0
            .clone(),
    );
    let k8s01_admin = committed[&key("k8s01", LeafKind::ClustermeshAdmin)].clone();
    committed.insert(key("k8s02", LeafKind::ClustermeshAdmin), k8s01_admin);
    committed.remove(&key("k8s02", LeafKind::ClustermeshRemote));
    let ca = String::from_utf8(files[store::CA_CERT].clone()).unwrap();
    let public = verify_public(
        &spec,
        &ca,
        &committed,
        |_, k| keyless::leaf_in_tree(&spec, Phase::Mesh, k),
        &reconcile_opts(&spec, CaPolicy::MustExist, datetime!(2026-11-25 12:00 UTC)),
    )
    .unwrap();
    let changed: Vec<(String, String, store::Action, String)> = public
        .events
        .iter()
        .filter(|e| e.action != store::Action::Reused)
        .map(|e| {
            (
                e.cluster.clone().unwrap(),
                e.kind.unwrap().file_stem().to_owned(),
                e.action,
                e.reason.clone(),
            )
        })
        .collect();
    assert_eq!(changed.len(), 3, "{changed:?}");
    assert_eq!(changed[0].0, "k8s01");
    assert_eq!(changed[0].3, "signed by a different CA");
    assert_eq!(changed[1].0, "k8s02");
    assert!(changed[1].3.starts_with("common name is"), "{changed:?}");
    assert_eq!(
        (changed[2].2, changed[2].3.as_str()),
        (store::Action::Issued, "not in the tree yet")
    );
    // A keyless render's values never carry a key, real or stand-in.
    let again = render::render_tree(
        &spec,
        &keyless::keyless_view(
            &spec,
            &public,
            &cmesh_core::pki::rotation::trust_view(&files, &ca).unwrap(),
        ),
        &opts(Phase::Mesh),
    )
    .unwrap();
    for (path, f) in &again.files {
        let text = String::from_utf8_lossy(&f.bytes);
        assert!(
            !text.contains("PRIVATE KEY") && !text.contains("LS0tLS1CRUdJTiBQUklWQVRF"),
            "{path}"
        );
    }
    // A CA certificate that is not a CA is an error, not a check.
    let leaf = pki.leaves[&key("k8s01", LeafKind::ClustermeshServer)]
        .0
        .clone();
    assert!(
        verify_public(
            &spec,
            &leaf,
            &committed,
            |_, _| true,
            &reconcile_opts(&spec, CaPolicy::MustExist, datetime!(2026-11-25 12:00 UTC))
        )
        .is_err()
    );
}

/// Issue 20: the tree is shaped as Argo CD and Flux users point tools at it. Every folder a
/// tool may be pointed at has a kustomization.yaml listing exactly the objects of that folder;
/// the two Argo CD alternatives are separate folders; the argocd-cm patch is in neither.
#[test]
fn every_kustomization_lists_exactly_its_folder() {
    for version in ["1.14.2", "1.20.0"] {
        let spec = lab(version);
        let pki = pki_for(&spec, &mut PkiFiles::new());
        let tree = render::render_tree(&spec, &pki, &opts(Phase::Mesh)).unwrap();
        let folders: Vec<&str> = tree
            .files
            .keys()
            .filter_map(|p| p.strip_suffix("/kustomization.yaml"))
            .collect();
        assert_eq!(
            folders,
            [
                "argocd/applications",
                "argocd/applicationset",
                "flux/k8s01",
                "flux/k8s01/release",
                "flux/k8s02",
                "flux/k8s02/release"
            ]
        );
        for folder in folders {
            let k = parse_yaml(file(&tree, &format!("{folder}/kustomization.yaml")));
            assert_eq!(
                k.get(&["kind"]).and_then(|v| v.as_str()),
                Some("Kustomization")
            );
            let Some(cmesh_core::value::Value::Seq(items)) = k.get(&["resources"]) else {
                panic!("{folder}: no resources");
            };
            let mut listed: Vec<String> = items
                .iter()
                .map(|r| r.as_str().unwrap().to_owned())
                .collect();
            listed.sort();
            let mut present: Vec<String> = tree
                .files
                .keys()
                .filter_map(|p| p.strip_prefix(&format!("{folder}/")))
                .filter(|f| !f.contains('/') && *f != "kustomization.yaml")
                .map(str::to_owned)
                .collect();
            present.sort();
            assert_eq!(listed, present, "{version} {folder}");
        }
        let apps: Vec<&String> = tree
            .files
            .keys()
            .filter(|p| p.starts_with("argocd/applications/"))
            .collect();
        assert!(
            apps.iter().all(|p| {
                let t = file(&tree, p);
                !t.contains("kind: ApplicationSet") && !t.contains("argocd-cm")
            }),
            "{apps:?}"
        );
        let set = file(&tree, "argocd/applicationset/kustomization.yaml");
        assert!(!set.contains("k8s01.yaml"), "{set}");
        assert!(
            tree.files
                .contains_key("argocd-config/argocd-cm-patch.yaml")
        );
        assert_eq!(
            file(&tree, "argocd/applications/project.yaml"),
            file(&tree, "argocd/applicationset/project.yaml")
        );
    }
}

/// Issue 20: where a chart version takes keys only as values, the runbook gives the route for
/// each tool with exact commands (and says what Argo CD cannot do); elsewhere it has no such
/// section.
#[test]
fn the_runbook_routes_keys_in_values_for_each_tool() {
    let spec = lab("1.14.2");
    let pki = pki_for(&spec, &mut PkiFiles::new());
    let tree = render::render_tree(&spec, &pki, &opts(Phase::Mesh)).unwrap();
    let readme = file(&tree, "README.md");
    assert!(
        readme.contains("## Private keys in values: how they reach the clusters"),
        "{readme}"
    );
    let sealed = render::gitops::GitSource::of(&spec).sealed;
    let tree_path = render::gitops::GitSource::of(&spec).path;
    assert!(
        readme.contains(&format!(
            "    {tree_path}/k8s01/flux-secret-values.yaml > {sealed}/k8s01/flux-secret-values.yaml"
        )),
        "{readme}"
    );
    assert!(readme.contains("helm-secrets does not support"), "{readme}");
    assert!(
        readme.contains("set `clustermesh.certificates: cronJob`"),
        "{readme}"
    );
    // That route, rendered: no values file with a key, the Applications list values.yaml alone,
    // and the shared CA (with its key, to be sealed) in secrets.yaml.
    let cron = {
        let text = spec
            .source
            .text()
            .text()
            .replace("certificates: cmesh", "certificates: cronJob");
        spec::load("m", &text).unwrap().0
    };
    let pki = pki_for(&cron, &mut PkiFiles::new());
    let routed = render::render_tree(&cron, &pki, &opts(Phase::Mesh)).unwrap();
    assert!(
        !routed
            .secret_files
            .keys()
            .any(|p| p.ends_with("secret-values.yaml")),
        "{:?}",
        routed.secret_files.keys()
    );
    let app = file(&routed, "argocd/applications/k8s01.yaml");
    assert!(!app.contains("secret-values.yaml"), "{app}");
    let secrets = file(&routed, "k8s01/secrets.yaml");
    assert!(
        secrets.contains("name: cilium-ca") && secrets.contains("ca.key"),
        "{secrets}"
    );
    assert!(!file(&routed, "README.md").contains("Private keys in values"));
    assert!(
        readme.contains("check` warns that 1.14.2 is out of support"),
        "{readme}"
    );
    // The Flux Kustomization that applies the sealed path decrypts SOPS, as the runbook says.
    let sync = file(&tree, "flux/k8s01/sync.yaml");
    assert!(sync.contains("provider: sops"), "{sync}");
    for version in ["1.16.19", "1.20.0"] {
        let spec = lab(version);
        let pki = pki_for(&spec, &mut PkiFiles::new());
        let tree = render::render_tree(&spec, &pki, &opts(Phase::Mesh)).unwrap();
        assert!(
            !file(&tree, "README.md").contains("Private keys in values"),
            "{version}"
        );
    }
}

/// Issue 22: `clustermesh.cacheTTL` reaches the values on 1.19 and later only when mesh.yaml
/// asks for it (the chart's default, never revoking a lost peer's state, stays otherwise), in
/// the mesh phase only.
#[test]
fn cache_ttl_is_rendered_only_when_asked_on_1_19_and_later() {
    for (version, ttl, want) in [
        ("1.19.7", Some("10m"), Some("10m")),
        ("1.20.0", Some("1h30m"), Some("1h30m")),
        ("1.20.0", None, None),
    ] {
        let mut spec = lab(version);
        spec.clustermesh.cache_ttl = ttl.map(str::to_owned);
        let mut files = PkiFiles::new();
        let pki = pki_for(&spec, &mut files);
        let mesh = render::cluster_values(&spec, &spec.clusters[0], Phase::Mesh, &pki);
        assert_eq!(
            mesh.get(&["clustermesh", "cacheTTL"])
                .and_then(|v| v.as_str()),
            want,
            "{version} {ttl:?}"
        );
        let base = render::cluster_values(&spec, &spec.clusters[0], Phase::Base, &pki);
        assert!(base.get(&["clustermesh", "cacheTTL"]).is_none());
    }
}

/// Issue 22: `clustermesh.policyDefaultLocalCluster` reaches the values from 1.18 (where the key
/// appears) when mesh.yaml sets it (what `cmesh upgrade` pins across 1.19), never otherwise:
/// unset, the chart's default (false on 1.18, true from 1.19) stays the chart's.
#[test]
fn policy_default_local_cluster_is_rendered_only_when_set_on_1_18_and_later() {
    for (version, set, want) in [
        ("1.18.11", Some(false), Some(false)),
        ("1.19.7", Some(false), Some(false)),
        ("1.20.0", Some(true), Some(true)),
        ("1.19.7", None, None),
    ] {
        let mut spec = lab(version);
        spec.clustermesh.policy_default_local_cluster = set;
        let mut files = PkiFiles::new();
        let pki = pki_for(&spec, &mut files);
        for c in &spec.clusters {
            let mesh = render::cluster_values(&spec, c, Phase::Mesh, &pki);
            assert_eq!(
                mesh.get(&["clustermesh", "policyDefaultLocalCluster"])
                    .and_then(|v| v.as_bool()),
                want,
                "{version} {set:?}"
            );
        }
    }
}
