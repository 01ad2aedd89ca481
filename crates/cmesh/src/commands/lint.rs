//! `cmesh lint`: reads the objects (live from every cluster, or offline from manifests given
//! as paths, `-` for a stream on stdin, or the older `-f DIR`) and reports what breaks Cluster
//! Mesh expectations, with fixes.

use std::io::Write;
use std::path::{Path, PathBuf};

use cmesh_core::lint::{self, Context, Inventory, Origin, Scope};

use super::common::{emit, load_spec};
use crate::cli::{GlobalArgs, LintArgs, Output};
use crate::errors::{ExpectedError, exit};
use crate::fs::bounded::BoundedReadError;
use crate::fs::spec::{self as input, SpecSourceArg};
use crate::live::kube;
use crate::ui::{self, Style, diagnostics};

/// Largest manifest file read.
const MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;
/// Most bytes read from a directory in all (hard links and copies count every time).
const MAX_TOTAL_BYTES: u64 = 64 * 1024 * 1024;
/// Most files read from a directory.
const MAX_FILES: usize = 20_000;

/// Runs `cmesh lint`. Exit 0 when nothing is wrong, 1 on error findings (or warnings with
/// `--strict`), 4 or 7 when some input could not be read.
///
/// # Errors
/// Spec and usage errors.
pub(crate) fn run(
    global: &GlobalArgs,
    args: &LintArgs,
    style: Style,
    out: &mut dyn Write,
) -> Result<u8, ExpectedError> {
    let target = &global.file;
    let legacy_offline = !global.example
        && target.as_os_str() != "-"
        && (target.is_dir() || is_manifest_file(target));
    let (report, problems, problem_code) = if !args.paths.is_empty() {
        let sources = sources(&args.paths)?;
        // -f stays the mesh spec: its clusters and version scope the rules.
        let mesh = args.mesh.clone().or_else(|| {
            (target.as_os_str() != "-" && target.is_file() && !is_manifest_file(target))
                .then(|| target.clone())
        });
        let (r, p) = offline_lint(global, args, &sources, mesh.as_deref())?;
        (r, p, exit::IO)
    } else if legacy_offline {
        let (source, mesh) = if target.is_dir() {
            let beside = target.join("mesh.yaml");
            (
                Source::Dir(target.clone()),
                args.mesh
                    .clone()
                    .or_else(|| beside.is_file().then_some(beside)),
            )
        } else {
            (Source::File(target.clone()), args.mesh.clone())
        };
        let (r, p) = offline_lint(global, args, &[source], mesh.as_deref())?;
        (r, p, exit::IO)
    } else {
        if args.mesh.is_some() {
            return Err(ExpectedError::Usage {
                message: "--mesh is for linting manifests (cmesh lint PATH…)".into(),
                hint: Some("live linting reads the clusters of the mesh.yaml given with -f".into()),
            });
        }
        let (r, p) = live_lint(global, args)?;
        (r, p, exit::CLUSTER)
    };
    let text = match args.output {
        Output::Table => ui::lint::table(&report, &problems, style),
        Output::Json => ui::lint::json(&report, &problems),
    };
    emit(out, &text)?;
    let warnings = report
        .findings
        .iter()
        .any(|f| f.severity == cmesh_core::Severity::Warning);
    Ok(if !report.ok() || (args.strict && warnings) {
        exit::CHECKS_FAILED
    } else if !problems.is_empty() {
        problem_code
    } else {
        exit::OK
    })
}

/// A file whose first documents look like Kubernetes objects rather than a mesh.yaml.
fn is_manifest_file(p: &Path) -> bool {
    let Ok(bytes) = crate::fs::bounded::read(p, MAX_MANIFEST_BYTES) else {
        return false;
    };
    let Ok(text) = String::from_utf8(bytes) else {
        return false;
    };
    let top = |k: &str| text.lines().any(|l| l.starts_with(k));
    (top("kind:") || top("apiVersion:")) && !top("clusters:")
}

fn override_version(ctx: &mut Context, v: Option<&str>) -> Result<(), ExpectedError> {
    if let Some(v) = v {
        ctx.version = Some(v.parse().map_err(|e| ExpectedError::Usage {
            message: format!("--cilium-version {v}: {e}"),
            hint: Some("for example --cilium-version 1.16.19".into()),
        })?);
    }
    Ok(())
}

/// Where manifests come from.
#[derive(Debug)]
enum Source {
    /// Every manifest file below a directory (scoped by the cluster named in its path).
    Dir(PathBuf),
    /// One file (any number of `---` documents).
    File(PathBuf),
    /// A stream on stdin, such as `helm template` output.
    Stdin,
}

/// The sources the positional paths name: `-` (once) for stdin.
fn sources(paths: &[PathBuf]) -> Result<Vec<Source>, ExpectedError> {
    let mut out = Vec::new();
    let mut stdin = false;
    for p in paths {
        if p.as_os_str() == "-" {
            if stdin {
                return Err(ExpectedError::Usage {
                    message: "`-` (stdin) given twice".into(),
                    hint: Some("stdin is one stream: join the manifests, e.g. `cat a.yaml b.yaml | cmesh lint -`".into()),
                });
            }
            stdin = true;
            out.push(Source::Stdin);
        } else if p.is_dir() {
            out.push(Source::Dir(p.clone()));
        } else {
            out.push(Source::File(p.clone()));
        }
    }
    Ok(out)
}

/// Reads stdin through the same bound as a file (a stream that never ends stops there).
fn read_stdin(limit: u64) -> Result<Vec<u8>, BoundedReadError> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    std::io::stdin()
        .lock()
        .take(limit + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(BoundedReadError::TooLarge {
            size: bytes.len() as u64,
            limit,
        });
    }
    Ok(bytes)
}

/// One manifest text to lint: as shown, the path that scopes it, and the text.
struct Manifest {
    shown: String,
    rel: String,
    text: String,
}

/// Manifests read so far, within one budget of bytes for all of them.
#[derive(Default)]
struct Gathered {
    manifests: Vec<Manifest>,
    problems: Vec<String>,
    total: u64,
}

impl Gathered {
    /// What is left of the budget for the next read: never more than the total, whatever
    /// the files (links to one big file, hard links, devices, FIFOs), and each read is
    /// bounded before a byte is taken.
    fn budget(&self, per_input: u64) -> u64 {
        per_input.min(MAX_TOTAL_BYTES - self.total)
    }

    /// Takes one read's outcome; false when the total budget is spent (nothing after it is
    /// read, and the problem says how many inputs that left out).
    fn take(
        &mut self,
        shown: String,
        rel: String,
        read: Result<Vec<u8>, BoundedReadError>,
        per_input: u64,
        budget: u64,
        rest: usize,
    ) -> bool {
        match read {
            Ok(bytes) => {
                self.total += bytes.len() as u64;
                match String::from_utf8(bytes) {
                    Ok(text) => self.manifests.push(Manifest { shown, rel, text }),
                    Err(_) => self
                        .problems
                        .push(format!("{shown}: not UTF-8 text; skipped")),
                }
                true
            }
            Err(BoundedReadError::TooLarge { size, .. }) if budget < per_input => {
                self.problems.push(format!(
                    "{shown}: {size} bytes would pass the {MAX_TOTAL_BYTES}-byte total read; skipped with the {rest} input(s) after it"
                ));
                false
            }
            Err(e) => {
                self.problems.push(format!("{shown}: {e}; skipped"));
                true
            }
        }
    }
}

/// Reads every manifest of `sources` within the bounds (files, bytes per file, bytes in all);
/// what cannot be read is a problem, never a silent skip.
fn read_sources(sources: &[Source], mesh: Option<&Path>) -> Gathered {
    let mesh_canonical = mesh.and_then(|m| m.canonicalize().ok());
    let mut g = Gathered::default();
    for (i, source) in sources.iter().enumerate() {
        let (root, paths) = match source {
            Source::Stdin => {
                // A stream is one input, read whole within what is left of the total.
                let budget = g.budget(MAX_TOTAL_BYTES);
                let read = read_stdin(budget);
                let rest = sources.len() - i - 1;
                if !g.take(
                    "<stdin>".into(),
                    String::new(),
                    read,
                    MAX_TOTAL_BYTES,
                    budget,
                    rest,
                ) {
                    return g;
                }
                continue;
            }
            Source::File(f) => (
                f.parent().map(Path::to_path_buf).unwrap_or_default(),
                vec![f.clone()],
            ),
            Source::Dir(d) => {
                let paths = walk(d, &mut g.problems);
                if paths.len() > MAX_FILES {
                    g.problems.push(format!(
                        "{}: {} manifest files, more than the {MAX_FILES} read; the rest skipped",
                        d.display(),
                        paths.len()
                    ));
                }
                (d.clone(), paths)
            }
        };
        let count = paths.len().min(MAX_FILES);
        let root_shown = root.display().to_string();
        for (n, p) in paths.into_iter().take(MAX_FILES).enumerate() {
            if mesh_canonical.is_some() && p.canonicalize().ok() == mesh_canonical {
                continue;
            }
            let shown = p.display().to_string();
            // Scope by the path below the linted directory: `clusters/k8s01/app.yaml` is
            // k8s01's.
            let rel = shown
                .strip_prefix(&root_shown)
                .unwrap_or(&shown)
                .trim_start_matches(['/', '\\'])
                .to_owned();
            let budget = g.budget(MAX_MANIFEST_BYTES);
            let read = crate::fs::bounded::read(&p, budget);
            if !g.take(shown, rel, read, MAX_MANIFEST_BYTES, budget, count - n - 1) {
                return g;
            }
        }
    }
    g
}

fn offline_lint(
    global: &GlobalArgs,
    args: &LintArgs,
    sources: &[Source],
    mesh: Option<&Path>,
) -> Result<(lint::Report, Vec<String>), ExpectedError> {
    let mut ctx = match mesh {
        Some(m) => {
            let loaded = load_mesh(global, m)?;
            Context::from_spec(&loaded)
        }
        None => Context {
            clusters: Vec::new(),
            version: None,
            endpoint_slice_sync: false,
            policy_default_local_cluster: None,
        },
    };
    override_version(&mut ctx, args.cilium_version.as_deref())?;
    let Gathered {
        manifests: files,
        mut problems,
        ..
    } = read_sources(sources, mesh);
    let names: Vec<String> = ctx.clusters.iter().map(|c| c.name.clone()).collect();
    let mut inv = Inventory::default();
    for m in &files {
        if let Err(e) = inv.add_manifest(&m.shown, &m.text, &lint::scope_for_path(&m.rel, &names)) {
            problems.push(format!("{e} (not a YAML manifest; skipped)"));
        }
    }
    // Clusters no manifest applies to were not linted: leave them out of cross-cluster rules
    // rather than report everything as missing there.
    let applies = |c: &str| {
        let all = |s: &Scope| matches!(s, Scope::All) || matches!(s, Scope::Cluster(x) if x == c);
        inv.services.iter().any(|s| all(&s.meta.scope))
            || inv.ingresses.iter().any(|s| all(&s.meta.scope))
            || inv.namespaces.iter().any(|s| all(&s.meta.scope))
    };
    ctx.clusters.retain(|c| applies(&c.name));
    Ok((lint::lint(&inv, &ctx), problems))
}

fn load_mesh(
    global: &GlobalArgs,
    path: &Path,
) -> Result<cmesh_core::spec::MeshSpec, ExpectedError> {
    let style = Style::detect_stderr(global.color);
    let loaded = input::load(&SpecSourceArg::File(path.to_path_buf()), &mut |diags| {
        crate::ui::term::eprint(&diagnostics::render_list(diags, style));
    })?;
    Ok(loaded.spec)
}

/// Manifest files under `root`, sorted; hidden directories skipped, symlinked directories not
/// followed.
fn walk(root: &Path, problems: &mut Vec<String>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) => {
                problems.push(format!("{}: {e}", dir.display()));
                continue;
            }
        };
        for e in entries.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(p);
            } else if (ft.is_file() || ft.is_symlink())
                && [".yaml", ".yml", ".json"].iter().any(|x| name.ends_with(x))
            {
                out.push(p);
                if out.len() > MAX_FILES {
                    // Enough to say there are too many; no need to list a million.
                    out.sort();
                    return out;
                }
            }
        }
    }
    out.sort();
    out
}

fn live_lint(
    global: &GlobalArgs,
    args: &LintArgs,
) -> Result<(lint::Report, Vec<String>), ExpectedError> {
    let loaded = load_spec(global)?;
    let spec = &loaded.spec;
    super::common::known_clusters(spec, &args.cluster)?;
    let runtime = super::common::runtime()?;
    let timeout = args.request_timeout.0;
    let results = runtime.block_on(async {
        let conns = kube::connect_all(spec, &loaded.input.base_dir, &args.cluster, timeout).await;
        let mut out = Vec::new();
        for (name, conn) in conns {
            let objects = match conn {
                Err(e) => Err(e),
                Ok(c) => read_cluster(&c).await,
            };
            out.push((name, objects));
        }
        out
    });
    let mut inv = Inventory::default();
    let mut problems = Vec::new();
    let mut reached = Vec::new();
    for (name, objects) in results {
        match objects {
            Ok(list) => {
                let origin = Origin::Cluster {
                    cluster: name.clone(),
                };
                for o in &list {
                    inv.add(o, &Scope::Cluster(name.clone()), &origin, None);
                }
                reached.push(name);
            }
            Err(e) => problems.push(format!("{name}: {e}")),
        }
    }
    let mut ctx = Context::from_spec(spec);
    ctx.clusters.retain(|c| reached.contains(&c.name));
    override_version(&mut ctx, args.cilium_version.as_deref())?;
    Ok((lint::lint(&inv, &ctx), problems))
}

async fn read_cluster(c: &kube::Conn) -> Result<Vec<serde_json::Value>, kube::KubeError> {
    let mut all = Vec::new();
    for (api, kind) in [
        ("v1", "Service"),
        ("networking.k8s.io/v1", "Ingress"),
        ("v1", "Namespace"),
        ("networking.k8s.io/v1", "IngressClass"),
        ("networking.k8s.io/v1", "NetworkPolicy"),
    ] {
        all.extend(c.list_json(api, kind, None, None).await?);
    }
    // Cilium's policy kinds exist only where Cilium's CRDs are installed: a cluster without
    // them (404) has none of those policies, which is no failure.
    for kind in ["CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy"] {
        match c.list_json("cilium.io/v2", kind, None, None).await {
            Ok(list) => all.extend(list),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(all)
}
