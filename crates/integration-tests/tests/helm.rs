//! Rendered values through the real helm binary: helm's YAML 1.1 parser reads them exactly as
//! cmesh meant them (a chart the test writes whose one template prints `.Values` as JSON), and
//! through the real Cilium charts (1.14.2, 1.16.19, 1.20.0 from the `github.com/cilium/cilium`
//! Go module, installed by scripts/install-test-deps) two renders are byte-identical with
//! `certificates: cmesh`, while with the article's helm method they are not.

use std::path::Path;
use std::process::Command;

use cmesh_core::pki::store::{self, CaPolicy, PkiFiles, ReconcileOptions};
use cmesh_core::render::{self, Phase, RenderOptions, ScriptPaths};
use cmesh_core::spec::{self, CertMethod, MeshSpec, example};
use integration_tests::lab::components;
use integration_tests::tools;

fn spec_for(version: &str, method: &str) -> MeshSpec {
    let o = example::ExampleOptions {
        version: version.parse().unwrap(),
        ..Default::default()
    };
    let text = example::generate(&o)
        .unwrap()
        .replace("certificates: cmesh", &format!("certificates: {method}"));
    spec::load("m", &text).unwrap().0
}

/// Per cluster: its name, the values files of the tree (values.yaml, and secret-values.yaml
/// where the version takes keys only as values) and the values cmesh meant.
fn values(spec: &MeshSpec) -> Vec<(String, Vec<String>, serde_json::Value)> {
    let opts = ReconcileOptions {
        now: time::OffsetDateTime::now_utc(),
        renew_before: time::Duration::days(30),
        force: false,
        clusters: None,
        leaves: spec.clustermesh.certificates == CertMethod::Cmesh,
        ca_policy: CaPolicy::CreateIfMissing,
    };
    let r = store::reconcile(spec, &PkiFiles::new(), &opts).unwrap();
    let view = render::pki_view(spec, Some(&r));
    let ro = RenderOptions {
        phase: Phase::Mesh,
        paths: ScriptPaths {
            spec_dir: "..".into(),
            secrets_dir: ".".into(),
        },
        secrets_elsewhere: false,
    };
    let tree = render::render_tree(spec, &view, &ro).unwrap();
    spec.clusters
        .iter()
        .map(|c| {
            let text = |f: &render::RenderedFile| String::from_utf8(f.bytes.clone()).unwrap();
            let mut files = vec![text(&tree.files[&format!("{}/values.yaml", c.name)])];
            files.extend(
                tree.secret_files
                    .get(&format!("{}/secret-values.yaml", c.name))
                    .map(text),
            );
            (
                c.name.clone(),
                files,
                render::cluster_values(spec, c, Phase::Mesh, &view).to_json(),
            )
        })
        .collect()
}

/// `helm template` of `chart` with `values` written as files in `dir`, in order (`-f a -f b`).
fn helm_template(helm: &Path, chart: &Path, dir: &Path, values: &[String]) -> String {
    let mut cmd = Command::new(helm);
    cmd.args(["template", "cilium"])
        .arg(chart)
        .args(["--namespace", "kube-system"]);
    for (i, text) in values.iter().enumerate() {
        let f = dir.join(format!("values-{i}.yaml"));
        std::fs::write(&f, text).unwrap();
        cmd.arg("-f").arg(f);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "helm template failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn values_read_by_helm(manifest: &str) -> serde_json::Value {
    let line = manifest
        .lines()
        .find(|l| l.trim_start().starts_with("values.json:"))
        .expect("values ConfigMap");
    let quoted = line.trim_start().trim_start_matches("values.json:").trim();
    let json: String = serde_json::from_str(quoted).expect("a JSON string");
    serde_json::from_str(&json).unwrap()
}

/// A chart without defaults whose one template is `.Values` as helm parsed them, as JSON.
fn echo_chart(dir: &Path) -> std::path::PathBuf {
    let chart = dir.join("echo-values");
    std::fs::create_dir_all(chart.join("templates")).unwrap();
    std::fs::write(
        chart.join("Chart.yaml"),
        "apiVersion: v2\nname: echo-values\nversion: 0.0.1\n",
    )
    .unwrap();
    std::fs::write(
        chart.join("templates/values.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: values\ndata:\n  values.json: {{ toJson .Values | quote }}\n",
    )
    .unwrap();
    chart
}

/// The real charts of the lab's releases (a missing one fails the test).
fn real_charts() -> Vec<(String, std::path::PathBuf)> {
    ["1.14.2", "1.16.19", "1.20.0"]
        .into_iter()
        .map(|v| (v.to_owned(), components::cilium(v).chart()))
        .collect()
}

#[test]
#[ignore = "needs helm (scripts/install-test-deps; scripts/test runs it)"]
fn helm_reads_values_exactly_as_rendered() {
    let helm = tools::helm();
    let dir = tempfile::tempdir().unwrap();
    let chart = echo_chart(dir.path());
    for version in ["1.14.2", "1.16.0", "1.19.6", "1.20.0"] {
        for method in ["cmesh", "helm", "cronJob"] {
            // values.yaml then secret-values.yaml, merged by helm, are what cmesh meant.
            for (cluster, files, expected) in values(&spec_for(version, method)) {
                let manifest = helm_template(&helm, &chart, dir.path(), &files);
                assert_eq!(
                    values_read_by_helm(&manifest),
                    expected,
                    "{version} {method} {cluster}"
                );
            }
        }
    }
}

#[test]
#[ignore = "needs helm and the Cilium charts (scripts/install-test-deps; scripts/test runs it)"]
fn cmesh_certificates_render_identically_helm_method_does_not() {
    let helm = tools::helm();
    let dir = tempfile::tempdir().unwrap();
    let charts = real_charts();
    for (version, chart) in &charts {
        for (method, stable) in [("cmesh", true), ("helm", false)] {
            for (cluster, files, _) in values(&spec_for(version, method)) {
                let a = helm_template(&helm, chart, dir.path(), &files);
                let b = helm_template(&helm, chart, dir.path(), &files);
                assert!(
                    a.contains("name: clustermesh-apiserver-server-cert")
                        && a.contains("name: hubble-server-certs"),
                    "{version} {method} {cluster}: the chart made no certificate Secrets"
                );
                assert_eq!(
                    a == b,
                    stable,
                    "{version} {method} {cluster}: two renders identical = {}",
                    a == b
                );
            }
        }
    }
    assert_eq!(charts.len(), 3, "every lab chart rendered");
}
