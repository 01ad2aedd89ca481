//! The lab's git host ([`integration_tests::gitserver`]) speaks git's smart HTTP protocol: a
//! real `git clone` over HTTP gets the committed files, a fetch after a new commit gets it, and
//! the chart repository's files are served as they are.

use integration_tests::flux::git;
use integration_tests::gitserver::GitServer;

#[test]
fn git_clones_and_fetches_over_smart_http() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = GitServer::start(&dir.path().join("host"));
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    git(&work, &["init", "-q"]);
    std::fs::write(work.join("values.yaml"), "cluster:\n  name: k8s01\n").unwrap();
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "one"]);
    let bare = host.repo_dir("platform").display().to_string();
    git(dir.path(), &["init", "-q", "--bare", &bare]);
    git(&work, &["push", "-q", &bare, "main"]);

    let clone = dir.path().join("clone");
    let url = host.repo_url("platform");
    // GIT_SMART_HTTP defaults on; the dumb protocol would need info/refs as a file, which the
    // bare repository does not have (no update-server-info), so success means smart HTTP.
    git(
        dir.path(),
        &["clone", "-q", &url, &clone.display().to_string()],
    );
    assert_eq!(
        std::fs::read_to_string(clone.join("values.yaml")).unwrap(),
        "cluster:\n  name: k8s01\n"
    );
    std::fs::write(work.join("values.yaml"), "cluster:\n  name: k8s02\n").unwrap();
    git(&work, &["commit", "-q", "-am", "two"]);
    git(&work, &["push", "-q", &bare, "main"]);
    git(&clone, &["pull", "-q", "--ff-only"]);
    assert_eq!(
        git(&clone, &["rev-parse", "HEAD"]),
        git(&work, &["rev-parse", "HEAD"])
    );
    assert!(host.requests() >= 4, "{} requests", host.requests());

    std::fs::write(host.root.join("charts/index.yaml"), "apiVersion: v1\n").unwrap();
    // A plain HTTP/1.1 GET, the path sent as it is (clients normalise `..` away).
    let get = |path: &str| {
        use std::io::{Read as _, Write as _};
        let addr = host.url.trim_start_matches("http://");
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").expect("a response");
        format!("{} {body}", &head[9..12])
    };
    assert_eq!(get("/charts/index.yaml"), "200 apiVersion: v1\n");
    assert!(get("/charts/../git/platform.git/HEAD").starts_with("400 "));
    assert!(get("/charts/missing.tgz").starts_with("404 "));
}
