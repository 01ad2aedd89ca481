//! A git host for the lab's GitOps stories: git's own smart HTTP protocol (`git http-backend`,
//! run as a CGI program per request, as Apache or nginx run it in front of a real git host),
//! plus static files under `/charts/` (a Helm chart repository: `index.yaml` and the chart's
//! `.tgz`), on 127.0.0.1 at a port the kernel picks. Flux's source-controller clones from it as
//! from any HTTP git host (go-git speaks only the smart protocol, which is why a plain file
//! server would not do). The server stops when dropped. `lab-git` runs the same server as a
//! process inside a network namespace (Argo CD's story runs in a cluster's namespace).

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// Requests larger than this are refused (a clone's negotiation is a few KiB).
const MAX_BODY: usize = 16 << 20;

/// A running git host.
pub struct GitServer {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Served directory: `git/<name>.git` (bare repositories) and `charts/`.
    pub root: PathBuf,
    requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl GitServer {
    /// Serves `root` (creating `root/git` and `root/charts`).
    ///
    /// # Panics
    /// When it cannot listen.
    pub fn start(root: &Path) -> GitServer {
        std::fs::create_dir_all(root.join("git")).expect("git root");
        std::fs::create_dir_all(root.join("charts")).expect("charts root");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        listener.set_nonblocking(true).expect("nonblocking");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicUsize::new(0));
        let thread = {
            let (stop, requests, root) = (stop.clone(), requests.clone(), root.to_path_buf());
            std::thread::Builder::new()
                .name("lab-git".into())
                .spawn(move || accept_loop(&listener, &root, &stop, &requests))
                .expect("git server thread")
        };
        GitServer {
            url,
            root: root.to_path_buf(),
            requests,
            stop,
            thread: Some(thread),
        }
    }

    /// How many connections it has accepted.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }

    /// A bare repository's URL (`<url>/git/<name>.git`).
    pub fn repo_url(&self, name: &str) -> String {
        format!("{}/git/{name}.git", self.url)
    }

    /// A bare repository's directory.
    pub fn repo_dir(&self, name: &str) -> PathBuf {
        self.root.join("git").join(format!("{name}.git"))
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Serves `root` on a non-blocking `listener` until `stop` is set, counting connections.
pub fn accept_loop(listener: &TcpListener, root: &Path, stop: &AtomicBool, requests: &AtomicUsize) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((s, _)) => {
                requests.fetch_add(1, Ordering::Relaxed);
                let _ = s.set_nonblocking(false);
                let root = root.to_path_buf();
                std::thread::spawn(move || serve(s, &root));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

struct Request {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn read_request(s: &TcpStream) -> Option<Request> {
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let (path, query) = target
        .split_once('?')
        .map_or((target.clone(), String::new()), |(p, q)| {
            (p.into(), q.into())
        });
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line).ok()?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':')?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let mut req = Request {
        method,
        path,
        query,
        headers,
        body: Vec::new(),
    };
    if let Some(n) = req.header("content-length") {
        let n: usize = n.parse().ok()?;
        if n > MAX_BODY {
            return None;
        }
        req.body.resize(n, 0);
        r.read_exact(&mut req.body).ok()?;
    } else if req
        .header("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        loop {
            line.clear();
            r.read_line(&mut line).ok()?;
            let n = usize::from_str_radix(line.trim().split(';').next()?, 16).ok()?;
            if n == 0 {
                line.clear();
                r.read_line(&mut line).ok()?;
                break;
            }
            if req.body.len() + n > MAX_BODY {
                return None;
            }
            let start = req.body.len();
            req.body.resize(start + n, 0);
            r.read_exact(&mut req.body[start..]).ok()?;
            line.clear();
            r.read_line(&mut line).ok()?;
        }
    }
    Some(req)
}

fn respond(mut s: &TcpStream, status: &str, headers: &[(String, String)], body: &[u8]) {
    let mut head = format!("HTTP/1.1 {status}\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    let _ = s.write_all(head.as_bytes());
    let _ = s.write_all(body);
    let _ = s.flush();
}

fn serve(s: TcpStream, root: &Path) {
    let Some(req) = read_request(&s) else {
        respond(&s, "400 Bad Request", &[], b"bad request\n");
        return;
    };
    if req.path.split('/').any(|p| p == "..") {
        respond(&s, "400 Bad Request", &[], b"bad path\n");
    } else if let Some(rest) = req.path.strip_prefix("/git/") {
        cgi(&s, root, &req, rest);
    } else if let Some(rest) = req.path.strip_prefix("/charts/") {
        match std::fs::read(root.join("charts").join(rest)) {
            Ok(b) if req.method == "GET" => {
                let kind = if rest.ends_with(".yaml") {
                    "text/yaml"
                } else {
                    "application/gzip"
                };
                respond(&s, "200 OK", &[("Content-Type".into(), kind.into())], &b);
            }
            _ => respond(&s, "404 Not Found", &[], b"not found\n"),
        }
    } else {
        respond(&s, "404 Not Found", &[], b"not found\n");
    }
}

/// One request through `git http-backend` (CGI: the request in the environment and on stdin,
/// the response's headers then body on stdout).
fn cgi(s: &TcpStream, root: &Path, req: &Request, rest: &str) {
    let mut cmd = Command::new("git");
    cmd.arg("http-backend")
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("GIT_PROJECT_ROOT", root.join("git"))
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", root)
        .env("REQUEST_METHOD", &req.method)
        .env("PATH_INFO", format!("/{rest}"))
        .env("QUERY_STRING", &req.query)
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("CONTENT_LENGTH", req.body.len().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(t) = req.header("content-type") {
        cmd.env("CONTENT_TYPE", t);
    }
    if let Some(e) = req.header("content-encoding") {
        cmd.env("HTTP_CONTENT_ENCODING", e);
    }
    if let Some(p) = req.header("git-protocol") {
        cmd.env("GIT_PROTOCOL", p);
    }
    let Ok(mut child) = cmd.spawn() else {
        respond(s, "500 Internal Server Error", &[], b"git http-backend\n");
        return;
    };
    let mut stdin = child.stdin.take().expect("stdin");
    let body = req.body.clone();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&body);
    });
    let mut out = Vec::new();
    let _ = child.stdout.take().expect("stdout").read_to_end(&mut out);
    let _ = writer.join();
    let _ = child.wait();
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| (p, p + 4))
        .or_else(|| {
            out.windows(2)
                .position(|w| w == b"\n\n")
                .map(|p| (p, p + 2))
        });
    let Some((end, body)) = split else {
        respond(s, "500 Internal Server Error", &[], b"no CGI headers\n");
        return;
    };
    let mut status = "200 OK".to_string();
    let mut headers = Vec::new();
    for l in String::from_utf8_lossy(&out[..end]).lines() {
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("status") {
                status = v.trim().to_string();
            } else {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
    }
    respond(s, &status, &headers, &out[body..]);
}
