//! `cmesh upgrade --to VERSION [--plan]`: moves the mesh to a newer Cilium one minor release at
//! a time. Plans every step offline first (`cmesh_core::upgrade`: the way, the pins, Cilium's
//! changes; mesh.yaml edited and checked at each step's version; the values rendered before
//! and after), refuses the whole upgrade if any step's mesh.yaml does not check, then (unless
//! `--plan`) asks, checks that status passes on every cluster, and for each step writes
//! mesh.yaml and runs apply one cluster at a time behind status gates. A failed step stops
//! the upgrade; mesh.yaml then names that step's version and a second run finishes it first
//! (the record says which clusters are behind).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use cmesh_core::membership::Record;
use cmesh_core::pki::store::CaPolicy;
use cmesh_core::render::{self, Phase};
use cmesh_core::spec::MeshSpec;
use cmesh_core::upgrade::{self, Plan, Step};
use cmesh_core::value::Value;
use cmesh_core::version::CiliumVersion;

use super::super::common::{emit, load_spec};
use crate::cli::{ApplyArgs, GlobalArgs, Output, TimeoutArg, UpgradeArgs};
use crate::errors::{ExpectedError, exit};
use crate::fs::pki::PkiDir;
use crate::fs::spec::{Loaded, SpecSourceArg};
use crate::pipeline::{PkiAccess, open_pki, reconcile};
use crate::ui::{self, Style};

fn usage(message: String, hint: &str) -> ExpectedError {
    ExpectedError::Usage {
        message,
        hint: Some(hint.into()),
    }
}

fn version_arg(flag: &str, text: &str) -> Result<CiliumVersion, ExpectedError> {
    text.parse().map_err(|e| {
        usage(
            format!("{flag} {text}: {e}"),
            "write a release such as 1.17.17",
        )
    })
}

/// `--chart VERSION=PATH` values by version.
fn charts(args: &UpgradeArgs) -> Result<BTreeMap<String, PathBuf>, ExpectedError> {
    let mut out = BTreeMap::new();
    for c in &args.chart {
        let Some((v, p)) = c.split_once('=') else {
            return Err(usage(
                format!("--chart {c}: expected VERSION=PATH"),
                "name the version the chart is for, e.g. --chart 1.17.17=./cilium-1.17.17.tgz",
            ));
        };
        let v = version_arg("--chart", v)?;
        out.insert(v.to_string(), PathBuf::from(p));
    }
    Ok(out)
}

/// Each cluster's name and values, in mesh.yaml's order.
type ValuesByCluster = Vec<(String, Value)>;

/// Every cluster's values (mesh phase) as `spec` renders them with the PKI as it is, and the
/// certificates that takes issuing anew (nothing written: they are issued in memory only).
fn values_of(
    spec: &MeshSpec,
    pki: &PkiDir,
) -> Result<(ValuesByCluster, Vec<upgrade::Certificate>), ExpectedError> {
    let r = reconcile(spec, pki, CaPolicy::MustExist, None, false)?;
    let view = render::pki_view(spec, r.as_ref());
    let values = spec
        .clusters
        .iter()
        .map(|c| {
            (
                c.name.clone(),
                render::cluster_values(spec, c, Phase::Mesh, &view),
            )
        })
        .collect();
    let certs = r
        .as_ref()
        .map(|r| upgrade::certificates(&r.events))
        .unwrap_or_default();
    Ok((values, certs))
}

fn problem_text(d: &cmesh_core::Diagnostic) -> String {
    let mut s = format!("{} ", d.code);
    if let Some(f) = &d.field {
        s.push_str(&format!("{f}: "));
    }
    s.push_str(&d.message);
    if let Some(h) = &d.help {
        s.push_str(&format!(" (fix: {h})"));
    }
    s
}

/// The plan, and mesh.yaml's text for each step.
fn plan(
    loaded: &Loaded,
    pki: &PkiDir,
    record: &Record,
    to: &CiliumVersion,
    via: &[CiliumVersion],
) -> Result<(Plan, Vec<String>), ExpectedError> {
    let spec = &loaded.spec;
    let file = &loaded.input.name;
    let from = upgrade::start(spec, record);
    let hint = "see `cmesh upgrade --help`";
    let mut steps = Vec::new();
    let mut texts = Vec::new();
    // An upgrade that stopped in a step: finish it first.
    if from < spec.cilium.version {
        if let Some(why) = from.step_problem(&spec.cilium.version) {
            return Err(usage(
                format!(
                    "mesh.yaml says {} but a meshed cluster last had {from} applied: {why}",
                    spec.cilium.version
                ),
                "set cilium.version back to the version after the one that cluster runs, and apply",
            ));
        }
        let mut at_from = spec.clone();
        at_from.cilium.version = from.clone();
        let (before, _) = values_of(&at_from, pki)?;
        let (after, certificates) = values_of(spec, pki)?;
        steps.push(Step {
            from: from.clone(),
            to: spec.cilium.version.clone(),
            resume: true,
            pins: Vec::new(),
            changes: upgrade::changes(&from, &spec.cilium.version, spec),
            clusters: upgrade::values_by_cluster(&before, &after),
            certificates,
            problems: Vec::new(),
        });
        texts.push(loaded.input.text.clone());
    }
    let way =
        upgrade::path(&spec.cilium.version, to, via).map_err(|e| usage(e.to_string(), hint))?;
    let mut prev = spec.clone();
    let (mut prev_values, mut prev_certs) = values_of(&prev, pki)?;
    for next_version in way {
        let pins = upgrade::pins(&prev, &next_version);
        let edits: Vec<(&'static str, bool)> = pins
            .iter()
            .map(|p| (p.field.trim_start_matches("clustermesh."), p.value))
            .collect();
        let text = cmesh_core::lab::edit::set_version(&prev, file, &next_version, &edits).map_err(
            |e| {
                usage(
                    e.to_string(),
                    "write cilium.version and the clustermesh block one key per line",
                )
            },
        )?;
        let checked = cmesh_core::spec::check(file, &text);
        let mut step = Step {
            from: prev.cilium.version.clone(),
            to: next_version.clone(),
            resume: false,
            pins,
            changes: Vec::new(),
            clusters: Vec::new(),
            certificates: Vec::new(),
            problems: Vec::new(),
        };
        let Some(next) = checked.spec else {
            step.problems = checked
                .diagnostics
                .iter()
                .filter(|d| d.is_error())
                .map(problem_text)
                .collect();
            steps.push(step);
            break;
        };
        let (values, certificates) = values_of(&next, pki)?;
        // pki.dir is not written between planned steps: a certificate an earlier step
        // re-issues would show again in every later one.
        step.certificates = certificates
            .iter()
            .filter(|c| !prev_certs.contains(c))
            .cloned()
            .collect();
        prev_certs = certificates;
        step.changes = upgrade::changes(&prev.cilium.version, &next_version, &next);
        step.clusters = upgrade::values_by_cluster(&prev_values, &values);
        steps.push(step);
        texts.push(text);
        prev = next;
        prev_values = values;
    }
    Ok((
        Plan {
            from,
            to: to.clone(),
            steps,
        },
        texts,
    ))
}

/// Runs `cmesh upgrade`.
///
/// # Errors
/// Usage errors (version, way, charts, no file to edit), mesh.yaml and PKI errors, and
/// apply's.
pub(crate) fn run(
    global: &GlobalArgs,
    args: &UpgradeArgs,
    style: Style,
    out: &mut dyn Write,
) -> Result<u8, ExpectedError> {
    let loaded = load_spec(global)?;
    let to = version_arg("--to", &args.to)?;
    let via = args
        .via
        .iter()
        .map(|v| version_arg("--via", v))
        .collect::<Result<Vec<_>, _>>()?;
    let charts = charts(args)?;
    let (plan, texts, mesh_ca) = {
        let pki = open_pki(global, &loaded, PkiAccess::Read)?;
        let record = pki.read_membership()?;
        let (plan, texts) = plan(&loaded, &pki, &record, &to, &via)?;
        let mesh_ca = reconcile(&loaded.spec, &pki, CaPolicy::MustExist, None, false)?
            .and_then(|r| r.trust.trusted_pem.first().cloned());
        (plan, texts, mesh_ca)
    };
    if args.plan || args.output == Output::Table {
        emit(
            out,
            &match args.output {
                Output::Table => ui::upgrade::table(&plan),
                Output::Json => json_text(&ui::upgrade::json(&plan)),
            },
        )?;
    }
    if !plan.ok() {
        return Ok(exit::SPEC);
    }
    if args.plan || plan.steps.is_empty() {
        return Ok(exit::OK);
    }
    let SpecSourceArg::File(path) = global.spec_source() else {
        return Err(usage(
            "upgrade writes each step's version into mesh.yaml, and the built-in example is no file".into(),
            "run `cmesh init` to write one, or pass -f FILE",
        ));
    };
    if path.as_os_str() == "-" {
        return Err(usage(
            "upgrade writes each step's version into mesh.yaml, and stdin is no file".into(),
            "pass -f FILE",
        ));
    }
    if !args.yes
        && !super::confirm(&format!(
            "upgrade takes the mesh from {} to {} in {} step(s)",
            plan.from,
            plan.to,
            plan.steps.len()
        ))?
    {
        crate::ui::term::eprint("upgrade: cancelled, nothing was changed\n");
        return Ok(exit::USAGE);
    }

    // The mesh must be green before the first step: a gate that fails later should be the
    // upgrade's doing, not something it started with.
    let failing = preflight(&loaded, args, mesh_ca)?;
    if !failing.is_empty() {
        crate::ui::term::eprint(&format!(
            "upgrade: status does not pass on every cluster, so nothing was changed: {}\n",
            failing.join("; ")
        ));
        return Ok(exit::CLUSTER);
    }

    let total = plan.steps.len();
    let mut reports = Vec::new();
    let mut written = loaded.input.text.clone();
    for (i, (step, text)) in plan.steps.iter().zip(&texts).enumerate() {
        if *text != written {
            crate::fs::atomic::write_atomic(
                &path,
                text.as_bytes(),
                crate::fs::atomic::Mode::Public,
                true,
            )?;
            written.clone_from(text);
        }
        crate::ui::term::eprint(&format!(
            "upgrade: step {} of {total}: {} → {}\n",
            i + 1,
            step.from,
            step.to
        ));
        let apply_args = ApplyArgs {
            phase: None,
            cluster: Vec::new(),
            dry_run: false,
            yes: true,
            prune: false,
            helm: args.helm.clone(),
            chart: charts.get(&step.to.to_string()).cloned(),
            timeout: TimeoutArg(args.timeout.0),
            request_timeout: TimeoutArg(args.request_timeout.0),
            poll: TimeoutArg(args.poll.0),
            output: args.output,
            one_at_a_time: true,
            why: Some(format!("upgrade step {} → {}", step.from, step.to)),
        };
        let mut buf: Vec<u8> = Vec::new();
        let sink: &mut dyn Write = if args.output == Output::Json {
            &mut buf
        } else {
            &mut *out
        };
        let code = super::run(global, &apply_args, style, sink)?;
        if args.output == Output::Json {
            reports.push(serde_json::json!({
                "from": step.from,
                "to": step.to,
                "exitCode": code,
                "apply": serde_json::from_slice::<serde_json::Value>(&buf).unwrap_or(serde_json::Value::Null),
            }));
        }
        if code != exit::OK {
            crate::ui::term::eprint(&format!(
                "upgrade: stopped in step {} ({} → {}): mesh.yaml says {}, and the clusters apply did not reach keep {}. Fix what failed, then run `cmesh upgrade --to {}` again: it finishes this step first.\n",
                i + 1,
                step.from,
                step.to,
                step.to,
                step.from,
                plan.to
            ));
            if args.output == Output::Json {
                emit(out, &json_text(&result_json(&plan, &reports, false)))?;
            }
            return Ok(code);
        }
    }
    if args.output == Output::Json {
        emit(out, &json_text(&result_json(&plan, &reports, true)))?;
    } else {
        emit(
            out,
            &format!(
                "\nupgrade: the mesh runs Cilium {}; mesh.yaml says so. Run `cmesh render` to refresh the GitOps tree.\n",
                plan.to
            ),
        )?;
    }
    Ok(exit::OK)
}

fn result_json(plan: &Plan, steps: &[serde_json::Value], ok: bool) -> serde_json::Value {
    serde_json::json!({
        "ok": ok,
        "plan": ui::upgrade::json(plan),
        "steps": steps,
    })
}

fn json_text(v: &serde_json::Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

/// The status checks failing now, before any change.
fn preflight(
    loaded: &Loaded,
    args: &UpgradeArgs,
    mesh_ca: Option<String>,
) -> Result<Vec<String>, ExpectedError> {
    let spec = &loaded.spec;
    let ca = mesh_ca
        .as_deref()
        .and_then(|p| cmesh_core::pki::CertInfo::from_pem(p).ok());
    let runtime = super::super::common::runtime()?;
    let gate = super::Gate {
        spec,
        base_dir: &loaded.input.base_dir,
        helm: crate::live::helm::locate(args.helm.as_deref()),
        mesh_ca,
        timeout: args.timeout.0,
        poll: args.poll.0,
        request_timeout: args.request_timeout.0,
        why: "before the upgrade".into(),
    };
    Ok(super::failing_now(&runtime, &gate, ca.as_ref()))
}
