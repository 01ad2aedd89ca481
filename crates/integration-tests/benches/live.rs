//! The live benchmark (issue 24; docs/performance.md): how the time of `status`, `probe`,
//! `apply` with nothing to change and `test` grows with the number of clusters, on the lab
//! (real control planes, Cilium 1.20.0's agents, operator, clustermesh-apiserver and
//! KVStoreMesh; one node per cluster).
//!
//! ```sh
//! scripts/bench-live            # 2, 5 and 10 clusters, 5 runs of each command
//! RUNS=3 scripts/bench-live 2 5
//! HOLD=1 scripts/bench-live 10   # keeps each meshed lab until its `hold` file is removed
//! ```
//!
//! For each size it starts a lab, applies the mesh and waits for `status` to pass, then times
//! each command as a whole process (the release binary users run), over the whole mesh and,
//! in the same lab, over one cluster (`--cluster k8s01`; for `probe` one endpoint dialled as
//! one peer; for `test`, which needs two clusters, the pair k8s01 and k8s02), so the ratio of
//! the two says what the extra clusters cost. `test` runs the datapath checks
//! (`pod,service,failover`), whose work grows with the N×(N−1) pairs, and is reported per
//! cell too. A run that does not exit 0 (or an `apply` that changes something) stops the
//! benchmark: a figure is only written for what worked. Not a test (`cargo test` does not run
//! benches): the figures go into docs/performance.md, never into an assertion on time.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use integration_tests::cli::Run;
use integration_tests::mesh::{Mesh, MeshOptions};

/// The Cilium release the benchmark meshes (the newest the lab runs).
const VERSION: &str = "1.20.0";

/// Clusters applied at a time while the mesh is set up (not timed; `MESH_AT_ONCE` overrides).
const MESH_AT_ONCE: usize = 5;

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .map(|a| a.parse().expect("cluster counts: numbers"))
        .collect();
    let sizes = if sizes.is_empty() {
        vec![2, 5, 10]
    } else {
        sizes
    };
    let runs: usize = std::env::var("RUNS")
        .ok()
        .map_or(5, |r| r.parse().expect("RUNS: a number"));
    let bin = cmesh_bin();
    eprintln!(
        "bench-live: {} at {sizes:?} clusters, {runs} runs each",
        bin.display()
    );
    let mut rows = Vec::new();
    let mut failed = Vec::new();
    for n in sizes {
        // A size whose mesh does not come up is reported, and the other sizes still run (the
        // lab is torn down as the panic unwinds).
        match std::panic::catch_unwind(|| size(&bin, n, runs)) {
            Ok(r) => rows.extend(r),
            Err(_) => failed.push(n),
        }
        // Print what is known so far: a 10-cluster lab takes a while, and may fail.
        print_table(&rows);
        if !failed.is_empty() {
            println!("\nFailed (see stderr): {failed:?} clusters");
        }
    }
    if !failed.is_empty() {
        std::process::exit(1);
    }
}

/// The release binary (`CMESH_BIN` or `target/release/cmesh`, which scripts/bench-live builds).
fn cmesh_bin() -> PathBuf {
    let bin = std::env::var_os("CMESH_BIN").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release/cmesh"),
        PathBuf::from,
    );
    assert!(
        bin.is_file(),
        "{} is not built (cargo build --release -p cmesh)",
        bin.display()
    );
    bin
}

/// One measured command at one size.
struct Row {
    clusters: usize,
    command: &'static str,
    /// Median wall time over the whole mesh.
    all: Duration,
    /// Fastest and slowest of those runs.
    spread: (Duration, Duration),
    /// Median wall time over one cluster (or one cell), in the same lab.
    one: Duration,
    /// Cells `test` ran over the whole mesh (0 for the other commands).
    cells: usize,
    /// How busy the machine's CPUs were during the whole-mesh runs (0–1): the lab's
    /// components run on the same cores as cmesh, so a figure near 1 means the command waited
    /// for CPU time, not for the clusters.
    busy: f64,
}

fn size(bin: &Path, n: usize, runs: usize) -> Vec<Row> {
    let started = Instant::now();
    let m = Mesh::start(&MeshOptions::new(n, VERSION));
    eprintln!(
        "bench-live: {n} clusters: lab up in {:.1?}",
        started.elapsed()
    );
    let chart = m.cilium.chart().display().to_string();
    let timeout = format!("{}s", 120 + 60 * n);
    let t = Instant::now();
    // At most MESH_AT_ONCE clusters applied at a time: every agent compiles its datapath
    // when it starts and again when the mesh phase restarts it, and ten at once on two cores
    // starve each other until the CNI plugin's calls time out (measured: no endpoint within
    // 720 s). The timed commands run on the whole mesh afterwards.
    let names: Vec<String> = (0..n).map(integration_tests::lab::name).collect();
    let at_once = std::env::var("MESH_AT_ONCE")
        .ok()
        .map_or(MESH_AT_ONCE, |v| v.parse().expect("MESH_AT_ONCE: a number"));
    for batch in names.chunks(at_once) {
        let mut args = vec!["apply", "--yes", "--chart", &chart, "--timeout", &timeout];
        for c in batch {
            args.extend(["--cluster", c.as_str()]);
        }
        ok(&m, "apply", &m.cmesh(bin, &args));
    }
    eprintln!("bench-live: {n} clusters: meshed in {:.1?}", t.elapsed());
    ok(
        &m,
        "status --wait",
        &m.cmesh(bin, &["status", "--wait", "--timeout", &timeout]),
    );

    // HOLD=1: keep the meshed lab for a look by hand (cmesh -f DIR/mesh.yaml …) until
    // DIR/hold is removed.
    if std::env::var_os("HOLD").is_some() {
        let hold = m.dir().join("hold");
        std::fs::write(&hold, "").expect("hold file");
        eprintln!(
            "bench-live: {n} clusters held: cd {} (CMESH_HELM is set for you in scripts/bench-live); rm {} to go on",
            m.dir().display(),
            hold.display()
        );
        while hold.exists() {
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    // What the lab costs at rest (agents, operators, control planes), for comparison.
    let cpu = cpu_seconds();
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(10));
    let mut idle = Busy::default();
    idle.add(cpu, t.elapsed());
    eprintln!(
        "bench-live: {n} clusters: the lab at rest keeps {:.0} % of the CPU busy",
        100.0 * idle.fraction()
    );

    let mut rows = Vec::new();
    let status = |extra: &[&str]| {
        let mut a = vec!["status", "-o", "json"];
        a.extend_from_slice(extra);
        ok(&m, "status", &m.cmesh(bin, &a));
    };
    rows.push(measure(
        n,
        "status",
        runs,
        &mut |e| status(e),
        &["--cluster", "k8s01"],
    ));

    let probe = |extra: &[&str]| {
        let mut a = vec!["probe", "-o", "json"];
        a.extend_from_slice(extra);
        ok(&m, "probe", &m.cmesh(bin, &a));
    };
    rows.push(measure(
        n,
        "probe",
        runs,
        &mut |e| probe(e),
        &["--cluster", "k8s01", "--from", "k8s02"],
    ));

    let apply = |extra: &[&str]| {
        let mut a = vec!["apply", "--yes", "--chart", &chart, "--timeout", &timeout];
        a.extend_from_slice(extra);
        let r = m.cmesh(bin, &a);
        ok(&m, "apply", &r);
        // Nothing to change: the plan says so and every cluster's mesh release is skipped.
        let clusters = if extra.is_empty() { n } else { 1 };
        let skipped = r.stderr.matches("mesh  helm  skip: no change").count();
        assert!(
            skipped == clusters
                && r.stdout
                    .contains(&format!("0 of {clusters} cluster(s) change")),
            "apply changed something:\n{}\n{}",
            r.stdout,
            r.stderr
        );
    };
    rows.push(measure(
        n,
        "apply (no change)",
        runs,
        &mut |e| apply(e),
        &["--cluster", "k8s01"],
    ));

    let mut cells = 0;
    let mut test = |extra: &[&str]| {
        let mut a = vec![
            "test",
            "--only",
            "pod,service,failover",
            "--timeout",
            "300s",
            "-o",
            "json",
        ];
        a.extend_from_slice(extra);
        let r = m.cmesh(bin, &a);
        ok(&m, "test", &r);
        let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("test -o json");
        let ran = v["cells"].as_array().map_or(0, Vec::len);
        assert!(ran > 0, "test ran no cell: {}", r.stdout);
        if extra.is_empty() {
            cells = ran;
        }
    };
    // `test` creates and deletes pods in every cluster: fewer runs.
    // `test` needs two clusters: its smallest run is one pair.
    let mut row = measure(
        n,
        "test",
        runs.div_ceil(2),
        &mut test,
        &["--cluster", "k8s01", "--cluster", "k8s02"],
    );
    row.cells = cells;
    rows.push(row);
    eprintln!("bench-live: {n} clusters done in {:.1?}", started.elapsed());
    rows
}

/// Times `all` and `one` `runs` times each, alternating, so that a slow moment of the machine
/// falls on both.
fn measure(
    n: usize,
    command: &'static str,
    runs: usize,
    run: &mut impl FnMut(&[&str]),
    one: &[&str],
) -> Row {
    let mut a = Vec::new();
    let mut o = Vec::new();
    let mut busy = Busy::default();
    for _ in 0..runs {
        let cpu = cpu_seconds();
        let t = Instant::now();
        run(&[]);
        a.push(t.elapsed());
        busy.add(cpu, t.elapsed());
        let t = Instant::now();
        run(one);
        o.push(t.elapsed());
    }
    row(n, command, a, o, busy)
}

/// CPU time the whole machine spent (every process: cmesh, the lab's components, the
/// programs they exec) against the wall time it was measured over.
#[derive(Default)]
struct Busy {
    cpu: f64,
    wall: f64,
}

impl Busy {
    fn add(&mut self, cpu_before: f64, wall: Duration) {
        self.cpu += cpu_seconds() - cpu_before;
        self.wall += wall.as_secs_f64();
    }

    /// The fraction of all cores busy.
    fn fraction(&self) -> f64 {
        let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
        self.cpu / (self.wall * cores)
    }
}

/// Seconds of CPU time the machine spent so far, all cores, idle and I/O wait excluded
/// (`/proc/stat`, in USER_HZ: 100 per second).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").expect("/proc/stat");
    let cpu = stat.lines().next().expect("the cpu line");
    let f: Vec<f64> = cpu
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().expect("a number"))
        .collect();
    // user nice system idle iowait irq softirq steal
    (f[0] + f[1] + f[2] + f[5] + f[6] + f[7]) / 100.0
}

fn row(
    n: usize,
    command: &'static str,
    mut all: Vec<Duration>,
    mut one: Vec<Duration>,
    busy: Busy,
) -> Row {
    all.sort();
    one.sort();
    eprintln!(
        "bench-live: {n} clusters: {command}: all {all:.2?} ({:.0} % CPU busy), one {one:.2?}",
        100.0 * busy.fraction()
    );
    Row {
        clusters: n,
        command,
        all: all[all.len() / 2],
        spread: (all[0], all[all.len() - 1]),
        one: one[one.len() / 2],
        cells: 0,
        busy: busy.fraction(),
    }
}

#[track_caller]
fn ok(m: &Mesh, what: &str, r: &Run) {
    assert_eq!(
        r.code,
        0,
        "{what} failed\nstdout:\n{}\nstderr:\n{}\n{}",
        r.stdout,
        r.stderr,
        m.lab.logs(20)
    );
}

fn print_table(rows: &[Row]) {
    println!(
        "\n| clusters | command | whole mesh, median wall | fastest–slowest | one cluster (`test`: one pair), median | whole ÷ one | per cell | CPU busy (whole mesh) |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let per_cell = if r.cells > 0 {
            format!(
                "{} cells, {:.2} s",
                r.cells,
                r.all.as_secs_f64() / r.cells as f64
            )
        } else {
            "—".to_owned()
        };
        println!(
            "| {} | `{}` | {:.2} s | {:.2}–{:.2} s | {:.2} s | {:.1}× | {per_cell} | {:.0} % |",
            r.clusters,
            r.command,
            r.all.as_secs_f64(),
            r.spread.0.as_secs_f64(),
            r.spread.1.as_secs_f64(),
            r.one.as_secs_f64(),
            r.all.as_secs_f64() / r.one.as_secs_f64(),
            100.0 * r.busy,
        );
    }
}
