//! `cmesh test`: runs the suite on the live clusters and always cleans up (success, failure,
//! timeout, Ctrl-C or SIGTERM); `--cleanup` removes what interrupted runs left behind.

use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::time::{Duration, Instant};

use cmesh_core::meshtest::{self, Kind, Settings};

use super::common::{emit, load_spec};
use crate::cli::{GlobalArgs, TestArgs, TestOutput};
use crate::errors::{ExpectedError, exit};
use crate::fs::atomic::{Mode, write_atomic};
use crate::live::kube;
use crate::live::meshtest::{Options, Suite, remove_leftovers};
use crate::ui::{self, Style};

/// Runs `cmesh test`. Exit 0 when every check passed and cleanup worked, 1 otherwise, 130 when
/// interrupted.
///
/// # Errors
/// Spec and usage errors, unreachable clusters.
pub(crate) fn run(
    global: &GlobalArgs,
    args: &TestArgs,
    style: Style,
    out: &mut dyn Write,
) -> Result<u8, ExpectedError> {
    let loaded = load_spec(global)?;
    let spec = &loaded.spec;
    super::common::known_clusters(spec, &args.cluster)?;
    let selected: Vec<String> = spec
        .clusters
        .iter()
        .map(|c| c.name.clone())
        .filter(|n| args.cluster.is_empty() || args.cluster.contains(n))
        .collect();
    if !args.cleanup && selected.len() < 2 {
        return Err(ExpectedError::Usage {
            message: "cmesh test needs two clusters or more: it tests traffic between them".into(),
            hint: Some("drop --cluster, or name at least two".into()),
        });
    }
    if args.requests == 0 {
        return Err(ExpectedError::Usage {
            message: "--requests must be at least 1".into(),
            hint: None,
        });
    }
    let runtime = super::common::runtime()?;
    // Execs stream a whole batch of requests: the connection must outlive the slowest one.
    let http = args.http_timeout.0;
    let conn_timeout = args
        .request_timeout
        .0
        .max(http * 2 + Duration::from_secs(5));
    let connected = runtime.block_on(kube::connect_all(
        spec,
        &loaded.input.base_dir,
        &selected,
        conn_timeout,
    ));
    let mut conns = Vec::new();
    let mut problems = Vec::new();
    for (name, c) in connected {
        match c {
            Ok(c) => conns.push(c),
            Err(e) => problems.push(format!("{name}: {e}")),
        }
    }
    // Every API server must answer before anything is created: a run that cannot reach a
    // cluster would only report its cells as not run, and leave the others half set up.
    let versions = runtime.block_on(futures_util::future::join_all(
        conns.iter().map(|c| c.version()),
    ));
    for (c, v) in conns.iter().zip(versions) {
        if let Err(e) = v {
            problems.push(format!("{}: unreachable: {e}", c.name));
        }
    }
    if !problems.is_empty() {
        return Err(ExpectedError::Cluster {
            message: format!(
                "cannot reach {} cluster(s); nothing was created:\n  {}",
                problems.len(),
                problems.join("\n  ")
            ),
            hint: "check the clusters' kubeconfig, context and apiServer in mesh.yaml (`cmesh status` shows every cluster)".into(),
        });
    }
    let stderr_log = |line: &str| {
        crate::ui::term::eprint(&format!("test: {line}\n"));
    };
    if args.cleanup {
        let found = runtime.block_on(remove_leftovers(
            &conns,
            args.request_timeout.0,
            args.timeout.0,
            args.poll.0,
        ));
        let text = match args.output {
            TestOutput::Table => ui::meshtest::cleanup_table(&found, &selected, style.width),
            TestOutput::Json | TestOutput::Junit | TestOutput::Html => {
                ui::meshtest::cleanup_json(&found)
            }
        };
        emit(out, &text)?;
        return Ok(if found.iter().all(meshtest::Cleanup::ok) {
            exit::OK
        } else {
            exit::CLUSTER
        });
    }

    let mut settings = Settings::new(&meshtest::run_id(entropy()), spec.cilium.version.clone());
    settings.server_image.clone_from(&args.server_image);
    settings.client_image.clone_from(&args.client_image);
    settings.http_timeout_secs = u32::try_from(http.as_secs().max(1)).unwrap_or(u32::MAX);
    settings.requests = args.requests;
    let kinds: Vec<Kind> = if args.only.is_empty() {
        Kind::ALL.to_vec()
    } else {
        Kind::ALL
            .into_iter()
            .filter(|k| args.only.iter().any(|o| Kind::from(*o) == *k))
            .collect()
    };
    let opts = Options {
        kinds,
        keep: args.keep,
        wait: args.timeout.0,
        retry_for: args.retry_for.0,
        request_timeout: args.request_timeout.0,
        poll: args.poll.0,
        ingress_class: args.ingress_class.clone(),
        pod_requests: 3,
    };
    let suite = Suite::new(conns, settings, opts, Box::new(stderr_log));
    let started = Instant::now();
    let (interrupted, cleanup) = runtime.block_on(async {
        let interrupted = tokio::select! {
            () = suite.run() => false,
            () = shutdown_signal() => true,
        };
        if interrupted {
            stderr_log("interrupted: cleaning up (interrupt again to stop without waiting)");
        }
        let cleanup = tokio::select! {
            c = suite.cleanup() => Some(c),
            () = shutdown_signal() => None,
        };
        (interrupted, cleanup)
    });
    let Some(cleanup) = cleanup else {
        stderr_log(
            "interrupted again: cleanup abandoned; remove the leftovers with `cmesh test --cleanup`",
        );
        return Ok(exit::INTERRUPTED);
    };
    let report = suite.finish(cleanup, interrupted, started);
    let render = |format| match format {
        TestOutput::Table => ui::meshtest::report_table(&report, style.width),
        TestOutput::Json => ui::meshtest::report_json(&report),
        TestOutput::Junit => ui::meshtest::report_junit(&report),
        TestOutput::Html => ui::meshtest::report_html(&report),
    };
    // The files first: a failed write is reported, and the run's verdict still printed.
    let mut unwritten = None;
    for f in &args.report {
        if let Err(e) = write_atomic(&f.path, render(f.format).as_bytes(), Mode::Public, true) {
            unwritten.get_or_insert(e);
        }
    }
    emit(out, &render(args.output))?;
    if let Some(e) = unwritten {
        return Err(e);
    }
    Ok(if interrupted {
        exit::INTERRUPTED
    } else if report.ok() {
        exit::OK
    } else {
        exit::CHECKS_FAILED
    })
}

/// Some randomness for the run ID: the std hasher's random keys, the time and the pid.
fn entropy() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// Resolves on Ctrl-C or SIGTERM (never, if the handlers cannot be installed).
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
