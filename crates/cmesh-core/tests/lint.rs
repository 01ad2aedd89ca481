//! Lint rules on fixture manifests (testdata/lint): the reference article's own, one with
//! every problem, and a clean one.

use std::path::{Path, PathBuf};

use cmesh_core::lint::{self, Context, Inventory, Origin, Report};
use cmesh_core::spec;

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/lint")
        .join(name)
}

fn files(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "yaml")
                && p.file_name().unwrap() != "mesh.yaml"
            {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.push((rel, std::fs::read_to_string(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn spec_of(path: &Path) -> spec::MeshSpec {
    let text = std::fs::read_to_string(path).unwrap();
    spec::load(&path.display().to_string(), &text)
        .unwrap_or_else(|e| panic!("{e:?}"))
        .0
}

fn run(dir: &Path, ctx: &Context) -> Report {
    let names: Vec<String> = ctx.clusters.iter().map(|c| c.name.clone()).collect();
    let (inv, errors) = Inventory::from_files(&files(dir), &names);
    assert!(errors.is_empty(), "{errors:?}");
    lint::lint(&inv, ctx)
}

fn summary(r: &Report) -> Vec<String> {
    r.findings
        .iter()
        .map(|f| format!("{} {} [{}]", f.code, f.object, f.clusters.join(",")))
        .collect()
}

#[test]
fn the_articles_manifests_503_on_failover() {
    let dir = testdata("article");
    // As the article applies them: no mesh.yaml, the same files in both clusters.
    let ctx = Context {
        clusters: vec![],
        version: None,
        endpoint_slice_sync: false,
        policy_default_local_cluster: None,
    };
    let r = run(&dir, &ctx);
    assert_eq!(summary(&r), ["L101 Ingress shared-service/ingress []"]);
    let f = &r.findings[0];
    assert!(!r.ok());
    assert_eq!(f.at[0].to_string(), "shared-ingress/01-ingress.yaml:16:17");
    assert_eq!(f.at[1].to_string(), "shared-svc/03-shared-svc.yaml:6:3");
    assert!(f.message.contains("answers 503"), "{}", f.message);
    assert!(
        f.fix
            .contains("nginx.ingress.kubernetes.io/service-upstream: \"true\""),
        "{}",
        f.fix
    );
    // Version unknown: the EndpointSlice alternative is offered with its version condition.
    assert!(f.fix.contains("on Cilium >= 1.16"), "{}", f.fix);
    let skipped: Vec<&str> = r.skipped.iter().flat_map(|s| s.codes.clone()).collect();
    assert_eq!(skipped, ["L201", "L202", "L203", "L204", "L401"]);

    // With the lab's mesh.yaml (Cilium 1.14.2): both clusters, and no 1.16 alternative.
    let spec = spec::load("example", &spec::example::builtin()).unwrap().0;
    let r = run(&dir, &Context::from_spec(&spec));
    assert_eq!(
        summary(&r),
        ["L101 Ingress shared-service/ingress [k8s01,k8s02]"]
    );
    assert!(!r.findings[0].fix.contains("1.16"), "{}", r.findings[0].fix);
    assert!(r.skipped.is_empty());
}

#[test]
fn the_fix_and_the_endpointslice_alternative_both_clear_it() {
    let dir = testdata("article");
    let mut inv_files = files(&dir);
    // EndpointSlice synchronisation on 1.16 with the Service annotated: no finding.
    for (p, t) in &mut inv_files {
        if p.ends_with("03-shared-svc.yaml") {
            *t = t.replace(
                "    service.cilium.io/global: \"true\"\n",
                "    service.cilium.io/global: \"true\"\n    service.cilium.io/global-sync-endpoint-slices: \"true\"\n",
            );
        }
    }
    let mut spec = spec::load("example", &spec::example::builtin()).unwrap().0;
    spec.cilium.version = "1.16.19".parse().unwrap();
    let mut ctx = Context::from_spec(&spec);
    let names = ["k8s01".to_owned(), "k8s02".to_owned()];
    let (inv, _) = Inventory::from_files(&inv_files, &names);
    let r = lint::lint(&inv, &ctx);
    assert_eq!(
        summary(&r),
        ["L101 Ingress shared-service/ingress [k8s01,k8s02]"]
    );
    assert!(
        r.findings[0]
            .message
            .contains("`clustermesh.endpointSliceSync` is off"),
        "{}",
        r.findings[0].message
    );
    ctx.endpoint_slice_sync = true;
    assert!(lint::lint(&inv, &ctx).findings.is_empty());
    // The article's own fix.
    let mut fixed = files(&dir);
    for (p, t) in &mut fixed {
        if p.ends_with("01-ingress.yaml") {
            *t = t.replace(
                "  namespace: shared-service\n",
                "  namespace: shared-service\n  annotations:\n    nginx.ingress.kubernetes.io/service-upstream: \"true\"\n",
            );
        }
    }
    let (inv, _) = Inventory::from_files(&fixed, &names);
    ctx.endpoint_slice_sync = false;
    assert!(lint::lint(&inv, &ctx).findings.is_empty());
}

#[test]
fn every_rule_on_the_problem_fixture() {
    let dir = testdata("problems");
    let spec = spec_of(&dir.join("mesh.yaml"));
    let r = run(&dir, &Context::from_spec(&spec));
    assert_eq!(
        summary(&r),
        [
            "L101 Ingress shop/cart [k8s01,k8s02,k8s03]",
            "L201 Service shop/payments [k8s01]",
            "L202 Service shop/catalog [k8s01,k8s02,k8s03]",
            "L301 Service shop/affinity-typo []",
            "L302 Service shop/shared-yes []",
            "L305 Service shop/unquoted []",
            "L401 Service billing/invoice [k8s03]",
            "L401 Service edge/gateway [k8s01,k8s02,k8s03]",
            "L203 Service shop/catalog [k8s01,k8s02,k8s03]",
            "L303 Service shop/local-affinity []",
            "L304 Service shop/legacy []",
        ]
    );
    let get = |code: &str, obj: &str| {
        r.findings
            .iter()
            .find(|f| f.code == code && f.object.ends_with(obj))
            .unwrap_or_else(|| panic!("{code} {obj}"))
    };
    let f = get("L201", "payments");
    assert!(
        f.message.contains("k8s02 has no Service shop/payments")
            && f.message
                .contains("k8s03 has it without `service.cilium.io/global: \"true\"`"),
        "{}",
        f.message
    );
    assert_eq!(f.at[0].to_string(), "k8s01/services.yaml:7:5");
    let f = get("L202", "catalog");
    assert!(
        f.message
            .contains("k8s01: http:80/TCP; k8s02: http:8080/TCP; k8s03: http:80/TCP"),
        "{}",
        f.message
    );
    let f = get("L203", "catalog");
    assert!(f.message.contains("k8s02: NodePort"), "{}", f.message);
    let f = get("L301", "affinity-typo");
    assert_eq!(f.at[0].to_string(), "common/services.yaml:11:9");
    assert!(f.fix.contains("`local`"), "{}", f.fix);
    let f = get("L305", "unquoted");
    assert_eq!(
        f.fix,
        "quote the value: `service.cilium.io/global: \"true\"`"
    );
    let f = get("L401", "invoice");
    assert!(
        f.message.contains("defaultGlobalNamespace is false"),
        "{}",
        f.message
    );
    let f = get("L401", "gateway");
    assert!(
        f.message
            .contains("annotated `clustermesh.cilium.io/global: \"false\"`"),
        "{}",
        f.message
    );
    assert!(
        f.at.iter()
            .any(|l| l.to_string() == "common/namespaces.yaml:13:5"),
        "{:?}",
        f.at
    );
    let f = get("L101", "cart");
    assert!(
        f.fix
            .contains("set `clustermesh.endpointSliceSync: true` in mesh.yaml"),
        "{}",
        f.fix
    );
    assert!(matches!(&f.at[0].origin, Origin::File { path, .. } if path == "common/ingress.yaml"));
}

#[test]
fn a_clean_directory_has_no_findings() {
    let dir = testdata("clean");
    let spec = spec_of(&testdata("problems").join("mesh.yaml"));
    let r = run(&dir, &Context::from_spec(&spec));
    assert!(r.findings.is_empty(), "{:?}", summary(&r));
    assert!(r.ok());
    assert_eq!(r.examined.services, 1);
    assert_eq!(r.examined.ingresses, 1);
}

#[test]
fn a_file_that_is_not_yaml_is_an_error_with_its_position() {
    let (_, errors) = Inventory::from_files(
        &[("a/b.yaml".into(), "kind: Service\n  bad: [\n".into())],
        &[],
    );
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].to_string().starts_with("a/b.yaml:2:"),
        "{}",
        errors[0]
    );
}

/// L501 (issue 22): peer selectors that name no cluster change meaning when
/// `policyDefaultLocalCluster` becomes true (1.19's default). Each selector of the fixture either
/// names a cluster in one of the ways Cilium reads (plain, `k8s:`, `any:` key; matchLabels or
/// matchExpressions), is on reserved labels, is an ipBlock, or is reported at its line.
#[test]
fn policies_whose_meaning_changes_with_policy_default_local_cluster() {
    let dir = testdata("policies");
    let ctx_for = |version: Option<&str>, pinned: Option<bool>| Context {
        clusters: Vec::new(),
        version: version.map(|v| v.parse().unwrap()),
        endpoint_slice_sync: false,
        policy_default_local_cluster: pinned,
    };
    let r = run(&dir, &ctx_for(Some("1.18.11"), None));
    assert_eq!(r.examined.policies, 4);
    assert_eq!(
        summary(&r),
        [
            "L501 CiliumClusterwideNetworkPolicy deny-from-anywhere []",
            "L501 CiliumNetworkPolicy demo/x-wing-to-rebel-base []",
            "L501 NetworkPolicy demo/from-monitoring []",
        ]
    );
    let lines = |object: &str| -> Vec<usize> {
        r.findings
            .iter()
            .find(|f| f.object == object)
            .unwrap()
            .at
            .iter()
            .map(|l| l.field_line.unwrap())
            .collect()
    };
    // Only the first toEndpoints selector of x-wing's policy; the two selectors of the CCNP;
    // the namespaceSelector peer of the NetworkPolicy.
    assert_eq!(lines("CiliumNetworkPolicy demo/x-wing-to-rebel-base"), [14]);
    assert_eq!(
        lines("CiliumClusterwideNetworkPolicy deny-from-anywhere"),
        [47, 51]
    );
    assert_eq!(lines("NetworkPolicy demo/from-monitoring"), [63]);
    let f = &r.findings[0];
    assert!(
        f.message
            .contains("2 peer selectors (fromEndpoints, toNodes)"),
        "{}",
        f.message
    );
    assert!(f.fix.contains("io.cilium.k8s.policy.cluster"), "{}", f.fix);
    assert!(
        r.skipped.iter().all(|s| !s.codes.contains(&"L501")),
        "{:?}",
        r.skipped
    );

    // Pinned false on 1.19: the same findings; 1.19's default (true) or pinned true: the
    // selectors already mean the local cluster, nothing changes.
    assert_eq!(
        run(&dir, &ctx_for(Some("1.19.7"), Some(false)))
            .findings
            .len(),
        3
    );
    assert!(
        run(&dir, &ctx_for(Some("1.19.7"), None))
            .findings
            .is_empty()
    );
    assert!(
        run(&dir, &ctx_for(Some("1.18.11"), Some(true)))
            .findings
            .is_empty()
    );
    // Unknown version: not checked, and said so.
    let r = run(&dir, &ctx_for(None, None));
    assert!(r.findings.is_empty());
    assert!(
        r.skipped.iter().any(|s| s.codes == ["L501"]),
        "{:?}",
        r.skipped
    );
}
