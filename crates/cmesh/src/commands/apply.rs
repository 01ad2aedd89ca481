//! `cmesh apply`, `cmesh plan` and `cmesh disconnect`: renders (same code as `render`),
//! observes every cluster and plans (`cmesh_core::plan`), then (apply) asks and installs
//! stage by stage, phase by phase, with live progress and a summary, and records which
//! clusters are meshed (pki.dir/membership.yaml). Exit 7 if any cluster failed. `cmesh
//! upgrade` ([`upgrade`]) is a sequence of these applies, one per minor release.

mod upgrade;

pub(crate) use upgrade::run as upgrade;

use std::collections::{BTreeMap, HashMap};
use std::io::{IsTerminal, Write};
use std::sync::Arc;

use cmesh_core::pki::store::CaPolicy;
use cmesh_core::render::{self, Phase};

use cmesh_core::apply::{self as decide, Release};
use cmesh_core::membership::Member;
use cmesh_core::plan::{Observed, PlanOptions};
use cmesh_core::render::ClusterArtifacts;

use super::common::{emit, load_spec, now};
use crate::cli::{ApplyArgs, DisconnectArgs, GlobalArgs, Output, PlanArgs, TimeoutArg};
use crate::errors::{ExpectedError, exit};
use crate::live::apply::{self, Artifacts, Options};
use crate::live::helm::{self, Chart};
use crate::live::{self, kube};
use crate::pipeline::{PkiAccess, open_pki, reconcile};
use crate::ui::{self, Style};
use cmesh_core::apply::StepOutcome;

/// Runs `cmesh plan`: apply's plan, nothing changed.
///
/// # Errors
/// As [`run`].
pub(crate) fn plan(
    global: &GlobalArgs,
    args: &PlanArgs,
    style: Style,
    out: &mut dyn Write,
) -> Result<u8, ExpectedError> {
    let as_apply = ApplyArgs {
        phase: args.phase,
        cluster: args.cluster.clone(),
        dry_run: true,
        yes: false,
        prune: args.prune,
        helm: args.helm.clone(),
        chart: args.chart.clone(),
        timeout: TimeoutArg(std::time::Duration::from_secs(300)),
        request_timeout: TimeoutArg(args.request_timeout.0),
        poll: TimeoutArg(std::time::Duration::from_secs(1)),
        output: args.output,
        one_at_a_time: false,
        why: None,
    };
    run(global, &as_apply, style, out)
}

/// The chart named by `--chart`, or cilium.repo's at `version`.
fn chart_of(
    flag: Option<&std::path::Path>,
    repo: &str,
    version: &str,
) -> Result<Chart, ExpectedError> {
    match flag {
        Some(p) if p.exists() => Ok(Chart::Local(p.to_path_buf())),
        Some(p) => Err(ExpectedError::Usage {
            message: format!("--chart {} does not exist", p.display()),
            hint: None,
        }),
        None => Ok(Chart::Repo {
            url: repo.to_owned(),
            version: version.to_owned(),
        }),
    }
}

fn chart_text(chart: &Chart) -> String {
    match chart {
        Chart::Repo { url, version } => format!("cilium {version} from {url}"),
        Chart::Local(p) => format!("local chart {}", p.display()),
    }
}

fn locate_helm(flag: Option<&std::path::Path>) -> Result<helm::Helm, ExpectedError> {
    helm::locate(flag).map_err(|e| ExpectedError::Usage {
        message: format!("cannot find helm: {e}"),
        hint: Some("install helm 3, or pass --helm PATH (or set CMESH_HELM)".into()),
    })
}

/// Asks before changing clusters: `Ok(true)` to go on. Without a terminal to ask on, the
/// caller must have said `--yes`.
fn confirm(what: &str) -> Result<bool, ExpectedError> {
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        return Err(ExpectedError::Usage {
            message: format!("{what}, and there is no terminal to ask on"),
            hint: Some(
                "review the plan (`cmesh plan`, or the one printed above), then pass --yes".into(),
            ),
        });
    }
    crate::ui::term::eprint(&format!("{what}. Go ahead? Type `yes` to confirm: "));
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|source| ExpectedError::Read {
            path: "<stdin>".into(),
            source,
        })?;
    Ok(line.trim() == "yes")
}

/// Runs `cmesh apply`: the plan first (printed; asked about unless `--yes`), then the
/// clusters joining the mesh, then those meshed, then (with `--prune`) those leaving it; last,
/// the membership record, and any difference between what was planned and what happened.
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
    let helm = locate_helm(args.helm.as_deref())?;
    let phases = match args.phase {
        Some(p) => vec![p.into()],
        None => vec![Phase::Base, Phase::Mesh],
    };
    let chart = chart_of(
        args.chart.as_deref(),
        &spec.cilium.repo,
        &spec.cilium.version.to_string(),
    )?;
    let chart_text = chart_text(&chart);

    // Render exactly as `render` would, writing new certificates to pki.dir (not with --dry-run).
    // pki.dir is locked only while it is read and written, not while clusters are changed.
    let (pki, record) = {
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
            pki_dir.write(r)?;
        }
        (pki, pki_dir.read_membership()?)
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
    // Clusters that left mesh.yaml: planned always (so that they are not forgotten),
    // disconnected only with --prune; not when --cluster narrows the run.
    let leaving: Vec<Member> = if args.cluster.is_empty() {
        record.leaving(spec).into_iter().cloned().collect()
    } else {
        Vec::new()
    };
    let mut opts = Options {
        phases: phases.clone(),
        chart: chart.clone(),
        helm,
        timeout: args.timeout.0,
        poll: args.poll.0,
        request_timeout: args.request_timeout.0,
        skip_base_when_meshed: args.phase.is_none(),
        trust_replaced: false,
        ask_kvstoremesh: crate::live::status::asks_kvstoremesh(spec).is_some(),
    };
    let runtime = super::common::runtime()?;
    let base_dir = loaded.input.base_dir.clone();
    let conns = runtime.block_on(kube::connect_all(
        spec,
        &base_dir,
        &args.cluster,
        args.request_timeout.0,
    ));
    let leave_conns: Vec<(String, Result<kube::Conn, kube::KubeError>)> = if args.prune {
        runtime.block_on(futures_util::future::join_all(leaving.iter().map(|m| {
            let base_dir = base_dir.clone();
            async move {
                (
                    m.name.clone(),
                    kube::connect_to(
                        &m.name,
                        m.kubeconfig.as_deref(),
                        m.context.as_deref(),
                        &base_dir,
                        args.request_timeout.0,
                    )
                    .await,
                )
            }
        })))
    } else {
        Vec::new()
    };

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

    // The plan, from one observation of every cluster.
    let version = chart.version();
    let popts = PlanOptions {
        chart_version: version.as_deref(),
        skip_base_when_meshed: opts.skip_base_when_meshed,
        trust_replaced: opts.trust_replaced,
    };
    let secret_names = |name: &str| -> Vec<String> {
        let mut names: Vec<String> = phases
            .iter()
            .filter_map(|p| artifacts.get(&(name.to_owned(), *p)))
            .flat_map(|a| a.secrets.iter().map(|s| decide::secret_name(s).to_owned()))
            .collect();
        names.sort();
        names.dedup();
        names
    };
    let mesh_names: Vec<String> = cmesh_core::plan::mesh_secret_names()
        .into_iter()
        .map(str::to_owned)
        .collect();
    let (observed, left_observed) = runtime.block_on(async {
        let members = futures_util::future::join_all(conns.iter().map(|(name, c)| {
            let names = secret_names(name);
            let helm = &opts.helm;
            async move { live::plan::observe(c, &names, helm, args.request_timeout.0).await }
        }));
        let left =
            futures_util::future::join_all(leave_conns.iter().map(|(_, c)| {
                live::plan::observe(c, &mesh_names, &opts.helm, args.request_timeout.0)
            }));
        futures_util::future::join(members, left).await
    });
    let mut plans = Vec::new();
    for ((name, _), obs) in conns.iter().zip(&observed) {
        let arts: Vec<(Phase, &ClusterArtifacts)> = phases
            .iter()
            .filter_map(|p| artifacts.get(&(name.clone(), *p)).map(|a| (*p, a)))
            .collect();
        plans.push(cmesh_core::plan::plan_cluster(
            name,
            &arts,
            obs.as_ref().map(|(o, _)| o).map_err(String::as_str),
            &popts,
        ));
    }
    for m in &leaving {
        let obs = leave_conns
            .iter()
            .zip(&left_observed)
            .find(|((n, _), _)| n == &m.name)
            .map(|(_, o)| o);
        let obs: Result<&Observed, &str> = match obs {
            Some(Ok((o, _))) => Ok(o),
            Some(Err(e)) => Err(e.as_str()),
            None => Err("not observed"),
        };
        plans.push(cmesh_core::plan::plan_leaving(m, obs, args.prune));
    }
    let plans = cmesh_core::plan::ordered(plans);
    let planned_ok = plans
        .iter()
        .all(|p| p.error.is_none() && p.refused.is_none());

    if args.dry_run {
        emit(
            out,
            &match args.output {
                Output::Table => ui::plan::table(&plans, &chart_text),
                Output::Json => json_text(&ui::plan::json(&plans, &chart_text)),
            },
        )?;
        return Ok(if planned_ok { exit::OK } else { exit::CLUSTER });
    }
    if args.output == Output::Table {
        emit(out, &ui::plan::table(&plans, &chart_text))?;
        emit(out, "\n")?;
    }
    let changing = plans.iter().filter(|p| p.changes()).count();
    if changing > 0 && !args.yes && !confirm(&format!("apply changes {changing} cluster(s)"))? {
        crate::ui::term::eprint("apply: cancelled, nothing was changed\n");
        return Ok(exit::USAGE);
    }

    // Release values the plan read: no phase reads them again.
    let seeds = release_values_seen(&conns, &observed);
    let left_seeds = release_values_seen(&leave_conns, &left_observed);
    let mut names: Vec<String> = conns.iter().map(|(n, _)| n.clone()).collect();
    names.extend(leave_conns.iter().map(|(n, _)| n.clone()));
    let reporter = Arc::new(ui::progress::Reporter::new(
        &names,
        std::io::stderr().is_terminal(),
    ));
    let progress = Arc::clone(&reporter) as Arc<dyn ui::progress::Progress>;
    let artifacts = Arc::new(artifacts);
    let opts = Arc::new(opts);
    if trust_change == TrustChange::Disjoint {
        crate::ui::term::eprint(
            "apply: the clusters' CA is being replaced without a rotation: peers that have the new CA and peers that do not yet distrust each other until every cluster is done (`cmesh pki rotate` avoids that)\n",
        );
    }
    // Stages in the plan's order: joining clusters serve their peers before the peers list
    // them; meshed clusters then change; leaving clusters go last, once no peer dials them.
    let stage_of = |name: &str| {
        plans
            .iter()
            .find(|p| p.cluster == name)
            .map_or(2, |p| p.stage)
    };
    let mut by_stage: BTreeMap<u8, Vec<Connected>> = BTreeMap::new();
    let mut steps = Vec::new();
    for (n, c) in conns {
        // A cluster whose plan apply refuses is not touched.
        if let Some(why) = plans
            .iter()
            .find(|p| p.cluster == n)
            .and_then(|p| p.refused.clone())
        {
            let s = cmesh_core::apply::Step {
                cluster: n,
                phase: None,
                step: "plan",
                outcome: StepOutcome::Failed,
                detail: why,
                millis: 0,
            };
            progress.finished(&s);
            steps.push(s);
            continue;
        }
        by_stage.entry(stage_of(&n)).or_default().push((n, c));
    }
    let one_at_a_time =
        args.one_at_a_time || rotation.is_some() || trust_change == TrustChange::Staged;
    let gate = Gate {
        spec,
        base_dir: &loaded.input.base_dir,
        helm: helm::locate(args.helm.as_deref()),
        mesh_ca: pki.as_ref().map(|r| r.trust.trusted_pem[0].clone()),
        timeout: args.timeout.0,
        poll: args.poll.0,
        request_timeout: args.request_timeout.0,
        why: match (rotation, trust_change, &args.why) {
            (Some(stage), _, _) => format!("CA rotation at stage `{}`", stage.as_str()),
            (None, TrustChange::Staged, _) => {
                "the trusted CAs change (a rotation's last step)".into()
            }
            (None, _, Some(why)) => why.clone(),
            _ => "--one-at-a-time".into(),
        },
    };
    let stages = by_stage.len();
    for (i, (_, stage_conns)) in by_stage.into_iter().enumerate() {
        let these = if one_at_a_time {
            one_at_a_time_run(
                &runtime,
                stage_conns,
                &artifacts,
                &opts,
                &progress,
                &gate,
                &seeds,
            )
        } else {
            runtime.block_on(apply::run(
                stage_conns,
                Arc::clone(&artifacts),
                Arc::clone(&opts),
                Arc::clone(&progress),
                seeds.clone(),
            ))
        };
        let failed = these.iter().any(|s| s.outcome == StepOutcome::Failed);
        steps.extend(these);
        // Peers change only after the joining clusters made it: a failure stops here.
        if failed && i + 1 < stages {
            crate::ui::term::eprint(
                "apply: a cluster failed; the clusters of the later stages were left as they were\n",
            );
            break;
        }
    }
    let meshed_failed = steps.iter().any(|s| s.outcome == StepOutcome::Failed);
    if args.prune && !leave_conns.is_empty() {
        if meshed_failed {
            crate::ui::term::eprint(
                "apply: not disconnecting the clusters that left: a cluster failed before them\n",
            );
        } else {
            let leave_steps = runtime.block_on(disconnect_all(
                leave_conns,
                &leaving,
                &left_observed,
                &opts,
                &progress,
                &spec.cilium.repo,
                args.chart.is_some(),
                &left_seeds,
            ));
            steps.extend(leave_steps);
        }
    }
    reporter.finish();

    // The record: clusters whose mesh phase went through are meshed; those pruned, removed.
    if !args.dry_run {
        let meshed: Vec<String> = if phases.contains(&Phase::Mesh) {
            names
                .iter()
                .filter(|n| spec.clusters.iter().any(|c| &c.name == *n))
                .filter(|n| {
                    let mine: Vec<&cmesh_core::apply::Step> =
                        steps.iter().filter(|s| &s.cluster == *n).collect();
                    mine.iter().any(|s| s.phase == Some(Phase::Mesh))
                        && !mine.iter().any(|s| s.outcome == StepOutcome::Failed)
                })
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        let removed: Vec<String> = leaving
            .iter()
            .map(|m| m.name.clone())
            .filter(|n| {
                let mine: Vec<&cmesh_core::apply::Step> =
                    steps.iter().filter(|s| &s.cluster == n).collect();
                mine.iter().any(|s| s.step == "disconnect")
                    && !mine.iter().any(|s| s.outcome == StepOutcome::Failed)
            })
            .collect();
        let pki_dir = open_pki(global, &loaded, PkiAccess::Write)?;
        let record = pki_dir.read_membership()?;
        let next = record.after_apply(spec, &meshed, &removed, now());
        if next != record {
            pki_dir.write_membership(&next)?;
        }
    }
    report(
        out,
        args.output,
        "apply",
        &names,
        &phases,
        &steps,
        &plans,
        &chart_text,
    )?;
    Ok(if steps.iter().any(|s| s.outcome == StepOutcome::Failed) {
        exit::CLUSTER
    } else {
        exit::OK
    })
}

/// The summary of `apply` or `disconnect` (`command`), with where it differed from its plan.
#[allow(clippy::too_many_arguments)]
fn report(
    out: &mut dyn Write,
    output: Output,
    command: &str,
    names: &[String],
    phases: &[Phase],
    steps: &[cmesh_core::apply::Step],
    plans: &[cmesh_core::plan::ClusterPlan],
    chart_text: &str,
) -> Result<(), ExpectedError> {
    let deviations = cmesh_core::plan::deviations(plans, steps);
    match output {
        Output::Table => {
            emit(out, &ui::apply::summary(names, phases, steps))?;
            for d in &deviations {
                emit(out, &format!("{command}: differs from its plan: {d}\n"))?;
            }
            Ok(())
        }
        Output::Json => emit(
            out,
            &json_text(&ui::apply::summary_json(
                names,
                steps,
                ui::plan::json(plans, chart_text),
                &deviations,
            )),
        ),
    }
}

fn json_text(v: &serde_json::Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

/// The chart a leaving cluster's release is upgraded with: `--chart` when given (it must be
/// the chart of the version the cluster runs), else cilium.repo's at that version.
fn leave_chart(
    local: Option<&Chart>,
    repo: &str,
    release: Option<&Release>,
) -> Result<Chart, String> {
    if let Some(c) = local {
        return Ok(c.clone());
    }
    let version = release
        .map(|r| {
            r.chart
                .strip_prefix("cilium-")
                .unwrap_or(&r.chart)
                .to_owned()
        })
        .ok_or_else(|| "its release could not be listed: pass its chart with --chart".to_owned())?;
    Ok(Chart::Repo {
        url: repo.to_owned(),
        version,
    })
}

/// Disconnects every leaving cluster at once.
#[allow(clippy::too_many_arguments)]
async fn disconnect_all(
    conns: Vec<(String, Result<kube::Conn, kube::KubeError>)>,
    leaving: &[Member],
    observed: &[live::plan::Observation],
    opts: &Options,
    progress: &Arc<dyn ui::progress::Progress>,
    repo: &str,
    local_chart: bool,
    seeds: &HashMap<String, serde_json::Value>,
) -> Vec<cmesh_core::apply::Step> {
    use cmesh_core::apply::Step;
    let jobs = conns.into_iter().zip(observed).map(|((name, conn), obs)| {
        let progress = Arc::clone(progress);
        let known = seeds.get(&name).cloned();
        async move {
            let fail = |detail: String| {
                let s = Step {
                    cluster: name.clone(),
                    phase: None,
                    step: "connect",
                    outcome: StepOutcome::Failed,
                    detail,
                    millis: 0,
                };
                progress.finished(&s);
                vec![s]
            };
            if !leaving.iter().any(|m| m.name == name) {
                return Vec::new();
            }
            let conn = match conn {
                Ok(c) => c,
                Err(e) => return fail(e.to_string()),
            };
            let release = match obs {
                Ok((o, _)) => o.release.clone(),
                Err(e) => return fail(e.clone()),
            };
            let local = local_chart.then_some(&opts.chart);
            match leave_chart(local, repo, release.as_ref()) {
                Ok(chart) => apply::disconnect(&conn, &chart, opts, progress.as_ref(), known).await,
                Err(e) => fail(e),
            }
        }
    });
    futures_util::future::join_all(jobs)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// Runs `cmesh disconnect NAME`: a cluster no longer in mesh.yaml loses its mesh
/// configuration; Cilium stays.
///
/// # Errors
/// Spec, PKI and usage errors; a cluster failure gives exit 7.
pub(crate) fn disconnect(
    global: &GlobalArgs,
    args: &DisconnectArgs,
    out: &mut dyn Write,
) -> Result<u8, ExpectedError> {
    let loaded = load_spec(global)?;
    let spec = &loaded.spec;
    if spec.clusters.iter().any(|c| c.name == args.name) {
        return Err(ExpectedError::Usage {
            message: format!("`{}` is still in mesh.yaml", args.name),
            hint: Some(
                "remove it from mesh.yaml and run `cmesh apply` (its peers drop it), then `cmesh apply --prune` or this command".into(),
            ),
        });
    }
    let record = open_pki(global, &loaded, PkiAccess::Read)?.read_membership()?;
    let member = record.get(&args.name).cloned();
    if let Some(m) = &member
        && m.state == cmesh_core::membership::State::Meshed
        && !args.force
    {
        return Err(ExpectedError::Usage {
            message: format!(
                "`{}` is recorded as meshed: its peers may still list it",
                args.name
            ),
            hint: Some(
                "run `cmesh apply` first (it drops the cluster from its peers' lists), or pass --force".into(),
            ),
        });
    }
    let kubeconfig = args
        .kubeconfig
        .as_ref()
        .map(|p| p.display().to_string())
        .or_else(|| member.as_ref().and_then(|m| m.kubeconfig.clone()));
    let context = args
        .context
        .clone()
        .or_else(|| member.as_ref().and_then(|m| m.context.clone()));
    if kubeconfig.is_none() && member.is_none() {
        return Err(ExpectedError::Usage {
            message: format!("`{}` is not in pki.dir's membership record", args.name),
            hint: Some("say how to reach it: --kubeconfig PATH [--context NAME]".into()),
        });
    }
    // --kubeconfig is relative to where cmesh runs, the record's to mesh.yaml.
    let base_dir = if args.kubeconfig.is_some() {
        std::env::current_dir().map_err(|source| ExpectedError::Read {
            path: ".".into(),
            source,
        })?
    } else {
        loaded.input.base_dir.clone()
    };
    let helm = locate_helm(args.helm.as_deref())?;
    let as_member = member.clone().unwrap_or(Member {
        name: args.name.clone(),
        id: 0,
        kubeconfig: kubeconfig.clone(),
        context: context.clone(),
        version: None,
        state: cmesh_core::membership::State::Left,
        since: String::new(),
    });
    let runtime = super::common::runtime()?;
    let conn = runtime.block_on(kube::connect_to(
        &args.name,
        kubeconfig.as_deref(),
        context.as_deref(),
        &base_dir,
        args.request_timeout.0,
    ));
    let mesh_names: Vec<String> = cmesh_core::plan::mesh_secret_names()
        .into_iter()
        .map(str::to_owned)
        .collect();
    let obs = runtime.block_on(live::plan::observe(
        &conn,
        &mesh_names,
        &helm,
        args.request_timeout.0,
    ));
    let plan = cmesh_core::plan::plan_leaving(
        &as_member,
        obs.as_ref().map(|(o, _)| o).map_err(String::as_str),
        true,
    );
    let local = match &args.chart {
        Some(p) => Some(chart_of(Some(p), &spec.cilium.repo, "")?),
        None => None,
    };
    let chart = leave_chart(
        local.as_ref(),
        &spec.cilium.repo,
        obs.as_ref().ok().and_then(|(o, _)| o.release.as_ref()),
    );
    let chart_text = chart
        .as_ref()
        .map_or_else(|e| format!("no chart: {e}"), chart_text);
    let plans = vec![plan];
    if args.dry_run || args.output == Output::Table {
        emit(
            out,
            &match args.output {
                Output::Table => ui::plan::table(&plans, &chart_text),
                Output::Json => json_text(&ui::plan::json(&plans, &chart_text)),
            },
        )?;
    }
    if args.dry_run {
        return Ok(if plans[0].error.is_some() {
            exit::CLUSTER
        } else {
            exit::OK
        });
    }
    if let Some(e) = &plans[0].error {
        return Err(ExpectedError::Usage {
            message: format!("cannot reach `{}`: {e}", args.name),
            hint: Some("check --kubeconfig and --context".into()),
        });
    }
    let chart = chart.map_err(|e| ExpectedError::Usage {
        message: format!("`{}`: {e}", args.name),
        hint: None,
    })?;
    if plans[0].changes()
        && !args.yes
        && !confirm(&format!("disconnect `{}` from the mesh", args.name))?
    {
        crate::ui::term::eprint("disconnect: cancelled, nothing was changed\n");
        return Ok(exit::USAGE);
    }
    let conn = conn.map_err(|e| ExpectedError::Usage {
        message: e.to_string(),
        hint: None,
    })?;
    let opts = Options {
        phases: Vec::new(),
        chart: chart.clone(),
        helm,
        timeout: args.timeout.0,
        poll: args.poll.0,
        request_timeout: args.request_timeout.0,
        skip_base_when_meshed: false,
        trust_replaced: false,
        ask_kvstoremesh: false,
    };
    let names = vec![args.name.clone()];
    let reporter = Arc::new(ui::progress::Reporter::new(
        &names,
        std::io::stderr().is_terminal(),
    ));
    let known = obs.as_ref().ok().and_then(|(_, v)| v.clone());
    let steps = runtime.block_on(apply::disconnect(
        &conn,
        &chart,
        &opts,
        reporter.as_ref(),
        known,
    ));
    reporter.finish();
    let failed = steps.iter().any(|s| s.outcome == StepOutcome::Failed);
    if !failed {
        let pki_dir = open_pki(global, &loaded, PkiAccess::Write)?;
        let record = pki_dir.read_membership()?;
        // Its ID as its release had it: `check` then warns if it is used again.
        let id = obs
            .as_ref()
            .ok()
            .and_then(|(o, _)| o.values.as_ref())
            .and_then(|v| v.get(&["cluster", "id"]))
            .and_then(cmesh_core::value::Value::as_int)
            .and_then(|i| u16::try_from(i).ok())
            .or(member.as_ref().map(|m| m.id));
        pki_dir.write_membership(&record.after_disconnect(&args.name, id, now()))?;
    }
    report(
        out,
        args.output,
        "disconnect",
        &names,
        &[],
        &steps,
        &plans,
        &chart_text,
    )?;
    Ok(if failed { exit::CLUSTER } else { exit::OK })
}

/// The release values each observation read, by cluster.
fn release_values_seen(
    conns: &[Connected],
    observed: &[live::plan::Observation],
) -> HashMap<String, serde_json::Value> {
    conns
        .iter()
        .zip(observed)
        .filter_map(|((name, _), obs)| match obs {
            Ok((_, Some(v))) => Some((name.clone(), v.clone())),
            _ => None,
        })
        .collect()
}

/// A cluster's name and its connection, or why it could not be connected.
type Connected = (String, Result<kube::Conn, kube::KubeError>);

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
fn one_at_a_time_run(
    runtime: &tokio::runtime::Runtime,
    conns: Vec<(String, Result<kube::Conn, kube::KubeError>)>,
    artifacts: &Arc<Artifacts>,
    opts: &Arc<Options>,
    progress: &Arc<dyn ui::progress::Progress>,
    gate: &Gate<'_>,
    seeds: &HashMap<String, serde_json::Value>,
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
            seeds.clone(),
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
            let failing = failing_now(runtime, gate, mesh_ca.as_ref());
            if failing.is_empty() {
                break Ok(format!(
                    "status passed on every cluster after {}s ({done} of {total} applied; {})",
                    t.elapsed().as_secs(),
                    gate.why
                ));
            }
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

/// The status checks that fail on some cluster of the mesh now (`cluster check: reason`);
/// empty when status passes on every cluster (drift aside).
fn failing_now(
    runtime: &tokio::runtime::Runtime,
    gate: &Gate<'_>,
    mesh_ca: Option<&cmesh_core::pki::CertInfo>,
) -> Vec<String> {
    let (checks, _) = runtime.block_on(super::status::survey(
        gate.spec,
        gate.base_dir,
        &[],
        &gate.helm,
        gate.request_timeout,
        mesh_ca,
        None,
    ));
    if ui::status::ok(&checks) {
        return Vec::new();
    }
    checks
        .iter()
        .flat_map(|c| {
            c.checks
                .iter()
                .filter(|k| k.outcome == cmesh_core::status::Outcome::Fail)
                .map(move |k| format!("{} {}: {}", c.cluster, k.name, k.reason))
        })
        .collect()
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
