//! `cmesh apply`: renders (same code as `render`), then installs phase by phase on every
//! cluster with live progress and a summary. Exit 7 if any cluster failed.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::Arc;

use cmesh_core::pki::store::CaPolicy;
use cmesh_core::render::{self, Phase};

use super::common::{emit, load_spec};
use crate::cli::{ApplyArgs, GlobalArgs, Output};
use crate::errors::{ExpectedError, exit};
use crate::live::apply::{self, Artifacts, Options};
use crate::live::helm::{self, Chart};
use crate::live::kube;
use crate::pipeline::{PkiAccess, open_pki, reconcile};
use crate::ui::{self, Style};
use cmesh_core::apply::StepOutcome;

/// Runs `cmesh apply`.
///
/// # Errors
/// Spec, PKI, usage errors; cluster failures are reported and give exit 7.
pub(crate) fn run(
    global: &GlobalArgs,
    args: &ApplyArgs,
    _style: Style,
    out: &mut dyn Write,
) -> Result<u8, ExpectedError> {
    let loaded = load_spec(global)?;
    let spec = &loaded.spec;
    super::common::known_clusters(spec, &args.cluster)?;
    let helm = helm::locate(args.helm.as_deref()).map_err(|e| ExpectedError::Usage {
        message: format!("cannot find helm: {e}"),
        hint: Some("install helm 3, or pass --helm PATH (or set CMESH_HELM)".into()),
    })?;
    let phases = match args.phase {
        Some(p) => vec![p.into()],
        None => vec![Phase::Base, Phase::Mesh],
    };
    let chart = match &args.chart {
        Some(p) if p.exists() => Chart::Local(p.clone()),
        Some(p) => {
            return Err(ExpectedError::Usage {
                message: format!("--chart {} does not exist", p.display()),
                hint: None,
            });
        }
        None => Chart::Repo {
            url: spec.cilium.repo.clone(),
            version: spec.cilium.version.to_string(),
        },
    };
    let chart_text = match &chart {
        Chart::Repo { url, version } => format!("cilium {version} from {url}"),
        Chart::Local(p) => format!("local chart {}", p.display()),
    };

    // Render exactly as `render` would, writing new certificates to pki.dir (not with --dry-run).
    // pki.dir is locked only while it is read and written, not while clusters are changed.
    let pki = {
        let (access, policy) = if args.dry_run {
            (PkiAccess::Read, CaPolicy::MustExist)
        } else {
            (PkiAccess::Write, CaPolicy::CreateIfMissing)
        };
        let pki_dir = open_pki(global, &loaded, access)?;
        let pki = reconcile(spec, &pki_dir, policy, None, false)?;
        if !args.dry_run
            && let Some(r) = &pki
        {
            pki_dir.write(&r.writes)?;
        }
        pki
    };
    let view = render::pki_view(spec, pki.as_ref());
    let mut artifacts: Artifacts = BTreeMap::new();
    for c in spec
        .clusters
        .iter()
        .filter(|c| args.cluster.is_empty() || args.cluster.contains(&c.name))
    {
        for &p in &phases {
            let a = render::cluster_artifacts(spec, c, p, &view)
                .map_err(|e| ExpectedError::Internal(e.to_string()))?;
            artifacts.insert((c.name.clone(), p), a);
        }
    }
    let mut opts = Options {
        phases: phases.clone(),
        chart,
        helm,
        timeout: args.timeout.0,
        poll: args.poll.0,
        request_timeout: args.request_timeout.0,
        skip_base_when_meshed: args.phase.is_none(),
        trust_replaced: false,
    };
    let runtime = super::common::runtime()?;
    let conns = runtime.block_on(kube::connect_all(
        spec,
        &loaded.input.base_dir,
        &args.cluster,
        args.request_timeout.0,
    ));
    let names: Vec<String> = conns.iter().map(|(n, _)| n.clone()).collect();

    if args.dry_run {
        let plans = runtime.block_on(apply::dry_run(conns, &artifacts, &opts));
        emit(
            out,
            &match args.output {
                Output::Table => ui::apply::dry_run(&plans, &chart_text),
                Output::Json => ui::apply::dry_run_json(&plans, &chart_text),
            },
        )?;
        return Ok(if plans.iter().any(|p| p.error.is_some()) {
            exit::CLUSTER
        } else {
            exit::OK
        });
    }

    let reporter = Arc::new(ui::progress::Reporter::new(
        &names,
        std::io::stderr().is_terminal(),
    ));
    let progress = Arc::clone(&reporter) as Arc<dyn ui::progress::Progress>;
    let artifacts = Arc::new(artifacts);
    // During a CA rotation clusters change one at a time, each followed by a status gate:
    // all at once, every cluster's agents and clustermesh-apiserver restart together.
    let rotation = pki
        .as_ref()
        .and_then(|r| r.trust.rotation.as_ref())
        .map(|r| r.stage);
    // A rotation's last step (finish, or an abort after begin) changes the trust without a
    // rotation left in pki.dir: a change that keeps a CA in common still goes one at a time.
    // A change with nothing in common (`pki init --force`) cuts the mesh whatever the order,
    // so it goes at once, the shortest cut.
    let trust_change = match &pki {
        Some(r) if rotation.is_none() => {
            runtime.block_on(live_trust_change(&conns, &r.trust, args.request_timeout.0))
        }
        _ => TrustChange::None,
    };
    opts.trust_replaced = trust_change == TrustChange::Disjoint;
    let opts = Arc::new(opts);
    if trust_change == TrustChange::Disjoint {
        crate::ui::term::eprint(
            "apply: the clusters' CA is being replaced without a rotation: peers that have the new CA and peers that do not yet distrust each other until every cluster is done (`cmesh pki rotate` avoids that)\n",
        );
    }
    let steps = if args.one_at_a_time || rotation.is_some() || trust_change == TrustChange::Staged {
        let gate = Gate {
            spec,
            base_dir: &loaded.input.base_dir,
            helm: helm::locate(args.helm.as_deref()),
            mesh_ca: pki.as_ref().map(|r| r.trust.trusted_pem[0].clone()),
            timeout: args.timeout.0,
            poll: args.poll.0,
            request_timeout: args.request_timeout.0,
            why: match (rotation, trust_change) {
                (Some(stage), _) => format!("CA rotation at stage `{}`", stage.as_str()),
                (None, TrustChange::Staged) => {
                    "the trusted CAs change (a rotation's last step)".into()
                }
                _ => "--one-at-a-time".into(),
            },
        };
        one_at_a_time(&runtime, conns, &artifacts, &opts, &progress, &gate)
    } else {
        runtime.block_on(apply::run(conns, artifacts, opts, progress))
    };
    reporter.finish();
    emit(
        out,
        &match args.output {
            Output::Table => ui::apply::summary(&names, &phases, &steps),
            Output::Json => ui::apply::summary_json(&names, &steps),
        },
    )?;
    Ok(if steps.iter().any(|s| s.outcome == StepOutcome::Failed) {
        exit::CLUSTER
    } else {
        exit::OK
    })
}

/// What the gate between clusters needs.
struct Gate<'a> {
    spec: &'a cmesh_core::spec::MeshSpec,
    base_dir: &'a std::path::Path,
    helm: Result<helm::Helm, String>,
    /// The CA whose certificate the `ca` check compares with (PEM).
    mesh_ca: Option<String>,
    timeout: std::time::Duration,
    poll: std::time::Duration,
    request_timeout: std::time::Duration,
    /// Why clusters go one at a time, for the report.
    why: String,
}

/// Applies every phase to one cluster after another; after each, waits until `status` passes
/// on every cluster of the mesh (drift aside: the clusters not yet applied differ from the
/// render by design). A cluster that fails, or a gate that does not pass within the timeout,
/// stops the rollout: the clusters after it are left as they were.
fn one_at_a_time(
    runtime: &tokio::runtime::Runtime,
    conns: Vec<(String, Result<kube::Conn, kube::KubeError>)>,
    artifacts: &Arc<Artifacts>,
    opts: &Arc<Options>,
    progress: &Arc<dyn ui::progress::Progress>,
    gate: &Gate<'_>,
) -> Vec<cmesh_core::apply::Step> {
    use cmesh_core::apply::Step;
    let mesh_ca = gate
        .mesh_ca
        .as_deref()
        .and_then(|p| cmesh_core::pki::CertInfo::from_pem(p).ok());
    let mut steps = Vec::new();
    let total = conns.len();
    let mut conns = conns.into_iter();
    let mut done = 0;
    while let Some(conn) = conns.next() {
        let name = conn.0.clone();
        let these = runtime.block_on(apply::run(
            vec![conn],
            Arc::clone(artifacts),
            Arc::clone(opts),
            Arc::clone(progress),
        ));
        let failed = these.iter().any(|s| s.outcome == StepOutcome::Failed);
        steps.extend(these);
        let stop = |steps: &mut Vec<Step>,
                    rest: Vec<(String, Result<kube::Conn, kube::KubeError>)>,
                    why: &str| {
            for (n, _) in rest {
                let s = Step {
                    cluster: n,
                    phase: None,
                    step: "gate",
                    outcome: StepOutcome::Skipped,
                    detail: format!("not changed: {why}"),
                    millis: 0,
                };
                progress.finished(&s);
                steps.push(s);
            }
        };
        if failed {
            stop(
                &mut steps,
                conns.collect(),
                &format!(
                    "{name} failed, and clusters go one at a time ({})",
                    gate.why
                ),
            );
            break;
        }
        done += 1;
        let t = std::time::Instant::now();
        progress.working(&name, "waiting for status to pass on every cluster");
        let verdict = loop {
            let (checks, _) = runtime.block_on(super::status::survey(
                gate.spec,
                gate.base_dir,
                &[],
                &gate.helm,
                gate.request_timeout,
                mesh_ca.as_ref(),
                None,
            ));
            if ui::status::ok(&checks) {
                break Ok(format!(
                    "status passed on every cluster after {}s ({done} of {total} applied; {})",
                    t.elapsed().as_secs(),
                    gate.why
                ));
            }
            let failing: Vec<String> = checks
                .iter()
                .flat_map(|c| {
                    c.checks
                        .iter()
                        .filter(|k| k.outcome == cmesh_core::status::Outcome::Fail)
                        .map(move |k| format!("{} {}: {}", c.cluster, k.name, k.reason))
                })
                .collect();
            if t.elapsed() >= gate.timeout {
                break Err(format!(
                    "status did not pass on every cluster within {}s after {name}: {}",
                    gate.timeout.as_secs(),
                    failing.join("; ")
                ));
            }
            progress.working(
                &name,
                &format!(
                    "waiting for status on every cluster: {}",
                    failing.first().map_or("", String::as_str)
                ),
            );
            std::thread::sleep(gate.poll.max(std::time::Duration::from_secs(1)));
        };
        let ok = verdict.is_ok();
        let s = Step {
            cluster: name.clone(),
            phase: None,
            step: "gate",
            outcome: StepOutcome::of(ok),
            detail: verdict.unwrap_or_else(|e| e),
            millis: u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX),
        };
        progress.finished(&s);
        steps.push(s);
        if !ok {
            stop(
                &mut steps,
                conns.collect(),
                "the gate before them did not pass",
            );
            break;
        }
    }
    steps
}

/// How this apply changes what the clusters trust, compared with their `cilium-ca` now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TrustChange {
    /// No cluster's trust changes (or none could be read).
    None,
    /// Some cluster's trust changes, keeping a CA it trusts now: a rotation's step.
    Staged,
    /// Some cluster's trust changes to CAs it does not trust now: a replacement.
    Disjoint,
}

async fn live_trust_change(
    conns: &[(String, Result<kube::Conn, kube::KubeError>)],
    trust: &cmesh_core::pki::rotation::TrustView,
    request_timeout: std::time::Duration,
) -> TrustChange {
    let fingerprint = |pem: &str| {
        cmesh_core::pki::CertInfo::from_pem(pem)
            .ok()
            .map(|c| c.sha256)
    };
    let rendered: Vec<String> = trust
        .trusted_pem
        .iter()
        .filter_map(|p| fingerprint(p))
        .collect();
    let mut change = TrustChange::None;
    for conn in conns.iter().filter_map(|(_, c)| c.as_ref().ok()) {
        let Ok(Ok(Some(data))) =
            tokio::time::timeout(request_timeout, conn.secret_data("cilium-ca")).await
        else {
            continue;
        };
        let Some(pem) = data.get("ca.crt") else {
            continue;
        };
        let live: Vec<String> = pem
            .split_inclusive("-----END CERTIFICATE-----")
            .filter(|p| p.contains("-----BEGIN CERTIFICATE-----"))
            .filter_map(|p| fingerprint(p.trim_start()))
            .collect();
        let same = live.len() == rendered.len() && live.iter().all(|f| rendered.contains(f));
        if same {
            continue;
        }
        if live.iter().any(|f| rendered.contains(f)) {
            change = TrustChange::Staged;
        } else {
            return TrustChange::Disjoint;
        }
    }
    change
}
