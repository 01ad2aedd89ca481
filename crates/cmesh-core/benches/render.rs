//! Render benchmark: the full tree for 2, 16, 255 and 511 clusters (every cluster lists every
//! other, so output grows as N²), with an existing PKI (reconcile reuses every certificate)
//! and with issuance (an empty pki.dir: CA and every leaf created).
//!
//! Run: `cargo bench -p cmesh-core --bench render` (`-- --quick` for one round). Figures are
//! recorded in docs/performance.md.

use std::time::{Duration, Instant};

use cmesh_core::pki::store::{self, CaPolicy, PkiFiles, ReconcileOptions};
use cmesh_core::render::{self, Phase, RenderOptions, ScriptPaths};
use cmesh_core::spec::{self, example};

fn opts() -> ReconcileOptions {
    ReconcileOptions {
        now: time::OffsetDateTime::now_utc(),
        renew_before: time::Duration::days(30),
        force: false,
        clusters: None,
        leaves: true,
        ca_policy: CaPolicy::CreateIfMissing,
        verified: Default::default(),
    }
}

fn render_opts() -> RenderOptions {
    RenderOptions {
        phase: Phase::Mesh,
        paths: ScriptPaths {
            spec_dir: "..".into(),
            secrets_dir: ".".into(),
        },
        secrets_elsewhere: false,
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    println!(
        "{:>8} {:>8} {:>9} {:>11} {:>11} {:>11} {:>16} {:>16}",
        "clusters",
        "version",
        "tree MiB",
        "load",
        "reconcile",
        "render",
        "total, PKI kept",
        "total, PKI new"
    );
    for (n, version) in [
        (2usize, "1.14.2"),
        (16, "1.20.0"),
        (255, "1.20.0"),
        (511, "1.20.0"),
        (511, "1.14.2"),
    ] {
        let o = example::ExampleOptions {
            clusters: n.max(2),
            version: version.parse().unwrap(),
            ..Default::default()
        };
        let o = if n > 255 && version.starts_with("1.14") {
            example::ExampleOptions {
                version: "1.15.19".parse().unwrap(),
                ..o
            }
        } else {
            o
        };
        let text = example::generate(&o).unwrap();

        // Issuance: empty pki.dir.
        let t = Instant::now();
        let (spec, _) = spec::load("bench", &text).unwrap();
        let r = store::reconcile(&spec, &PkiFiles::new(), &opts()).unwrap();
        let issue = t.elapsed();
        let mut files = PkiFiles::new();
        for w in &r.writes {
            files.insert(w.path.clone(), w.bytes.clone());
        }

        let rounds = if quick {
            1
        } else if n > 100 {
            5
        } else {
            20
        };
        let (mut load, mut rec, mut ren, mut tot) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut bytes = 0usize;
        for _ in 0..rounds {
            let t0 = Instant::now();
            let (spec, _) = spec::load("bench", &text).unwrap();
            let t1 = Instant::now();
            let r = store::reconcile(&spec, &files, &opts()).unwrap();
            assert!(r.writes.is_empty());
            let t2 = Instant::now();
            let view = render::pki_view(&spec, Some(&r));
            let tree = render::render_tree(&spec, &view, &render_opts()).unwrap();
            let t3 = Instant::now();
            bytes = tree
                .files
                .values()
                .chain(tree.secret_files.values())
                .map(|f| f.bytes.len())
                .sum();
            load.push(t1 - t0);
            rec.push(t2 - t1);
            ren.push(t3 - t2);
            tot.push(t3 - t0);
        }
        let render_ms = median(ren.clone()).as_secs_f64() * 1e3;
        println!(
            "{:>8} {:>8} {:>9.1} {:>9.1}ms {:>9.1}ms {:>9.1}ms {:>14.1}ms {:>14.1}ms",
            n,
            o.version.to_string(),
            bytes as f64 / 1048576.0,
            median(load).as_secs_f64() * 1e3,
            median(rec).as_secs_f64() * 1e3,
            render_ms,
            median(tot).as_secs_f64() * 1e3,
            issue.as_secs_f64() * 1e3 + render_ms,
        );
    }
}
