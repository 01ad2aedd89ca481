//! The invalid-spec corpus: every fixture declares, in its header, the exact error and warning
//! codes `check` must report. Removing or weakening a rule makes its fixture fail.

use std::path::{Path, PathBuf};

use cmesh_core::spec::{self, codes};

fn fixtures(dir: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

fn expected(text: &str, key: &str) -> Vec<String> {
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix(&format!("# {key}:")))
        .unwrap_or_else(|| panic!("fixture lacks `# {key}:`"));
    let mut codes: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
    codes.sort();
    codes
}

fn run(dir: &str) -> usize {
    let files = fixtures(dir);
    let mut failures = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let checked = spec::check(&name, &text);
        let mut errors: Vec<String> = checked
            .diagnostics
            .iter()
            .filter(|d| d.is_error())
            .map(|d| d.code.to_owned())
            .collect();
        let mut warnings: Vec<String> = checked
            .diagnostics
            .iter()
            .filter(|d| !d.is_error())
            .map(|d| d.code.to_owned())
            .collect();
        errors.sort();
        warnings.sort();
        let (want_e, want_w) = (
            expected(&text, "expect-errors"),
            expected(&text, "expect-warnings"),
        );
        if errors != want_e || warnings != want_w {
            failures.push(format!(
                "{name}: errors {errors:?} (want {want_e:?}), warnings {warnings:?} (want {want_w:?})\n  {}",
                checked.diagnostics.iter().map(|d| format!("{} {}", d.code, d.message)).collect::<Vec<_>>().join("\n  ")
            ));
        }
        // Every diagnostic must point somewhere and say how to fix it.
        for d in &checked.diagnostics {
            assert!(
                codes::by_code(d.code).is_some(),
                "{name}: unregistered code {}",
                d.code
            );
            assert!(d.help.is_some(), "{name}: {} has no help", d.code);
            if d.code != "CM002" && d.code != "CM009" {
                assert!(d.span.is_some(), "{name}: {} has no span", d.code);
            }
        }
        if !want_e.is_empty() {
            assert!(
                checked.spec.is_none(),
                "{name}: invalid spec produced a model"
            );
        }
    }
    assert!(
        failures.is_empty(),
        "{} fixture(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    files.len()
}

#[test]
fn invalid_specs_report_exactly_their_rule() {
    let n = run("invalid");
    assert!(
        n >= 40,
        "the corpus must hold at least 40 invalid specs, found {n}"
    );
}

#[test]
fn warning_specs_are_valid_with_exactly_their_warnings() {
    run("warnings");
}

#[test]
fn every_error_rule_has_an_invalid_fixture() {
    // A rule without a fixture is a rule nobody proved can fire.
    let mut seen = std::collections::BTreeSet::new();
    for dir in ["invalid", "warnings"] {
        for path in fixtures(dir) {
            let text = std::fs::read_to_string(&path).unwrap();
            seen.extend(expected(&text, "expect-errors"));
            seen.extend(expected(&text, "expect-warnings"));
        }
    }
    // Rules about an existing CA are exercised with real files in the PKI and CLI tests,
    // CM114 needs 256 clusters (tested below), and CM406 is `check`'s advisory, not a rule of
    // spec::check (tests/cli/check.rs), so they have no fixture here; nor do CM520-CM523,
    // which compare mesh.yaml with pki.dir's membership record (the membership unit tests,
    // tests/cli/check.rs).
    let elsewhere = [
        "CM114", "CM406", "CM510", "CM511", "CM512", "CM513", "CM514", "CM515", "CM516", "CM520",
        "CM521", "CM522", "CM523",
    ];
    let missing: Vec<&str> = codes::ALL
        .iter()
        .map(|r| r.code)
        .filter(|c| !seen.contains(*c) && !elsewhere.contains(c))
        .collect();
    assert!(missing.is_empty(), "rules without a fixture: {missing:?}");
}

#[test]
fn too_many_clusters_for_255() {
    let o = spec::example::ExampleOptions {
        clusters: 300,
        version: "1.16.0".parse().unwrap(),
        ..Default::default()
    };
    let text = spec::example::generate(&o)
        .unwrap()
        .replace("  maxConnectedClusters: 511\n", "");
    let checked = spec::check("gen", &text);
    let codes: Vec<&str> = checked.diagnostics.iter().map(|d| d.code).collect();
    // IDs 256..300 are out of range too; the count rule names the real fix.
    assert!(codes.contains(&"CM114"), "{codes:?}");
    assert!(
        codes.iter().all(|c| *c == "CM114" || *c == "CM111"),
        "{codes:?}"
    );
}

#[test]
fn docs_list_every_rule() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/mesh-spec.md"
    ))
    .unwrap();
    for r in codes::ALL {
        let sev = match r.severity {
            cmesh_core::Severity::Error => "error",
            cmesh_core::Severity::Warning => "warning",
        };
        assert!(
            doc.contains(&format!("| {} | {sev} |", r.code)),
            "docs/mesh-spec.md lacks `| {} | {sev} |`",
            r.code
        );
    }
}
