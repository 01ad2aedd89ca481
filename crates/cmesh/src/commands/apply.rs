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
    let opts = Arc::new(Options {
        phases: phases.clone(),
        chart,
        helm,
        timeout: args.timeout.0,
        poll: args.poll.0,
        request_timeout: args.request_timeout.0,
    });
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
    let steps = runtime.block_on(apply::run(
        conns,
        Arc::new(artifacts),
        opts,
        Arc::clone(&reporter) as Arc<dyn ui::progress::Progress>,
    ));
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
