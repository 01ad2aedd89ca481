//! The lab's stand-in for the nginx image (container images cannot run here): an HTTP server
//! that answers what the pod's nginx configuration says. It reads every `*.conf` of
//! `/etc/nginx/conf.d` (the pod's ConfigMap volume, mounted by the kubelet stand-in), takes
//! each `server`'s `listen` port, `default_type` and `return CODE "TEXT"`, expands `$hostname`
//! (the pod's name, as nginx does from the hostname kubelet sets), and answers every GET and
//! HEAD with that. Without a configuration it answers nginx's welcome page on port 80. The
//! packets are real: it runs in the pod's network namespace, behind Cilium.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};

#[derive(Debug, Clone)]
struct Server {
    port: u16,
    code: u16,
    content_type: String,
    body: String,
}

/// The `server` blocks of an nginx configuration, as far as `return` goes.
fn parse(conf: &str, hostname: &str) -> Vec<Server> {
    let mut out = Vec::new();
    let mut cur: Option<Server> = None;
    for raw in conf.lines() {
        let line = raw.trim();
        if line.starts_with("server") && line.ends_with('{') {
            cur = Some(Server {
                port: 80,
                code: 200,
                content_type: "text/html".into(),
                body: String::new(),
            });
        } else if let Some(rest) = line.strip_prefix("listen ") {
            if let Some(s) = cur.as_mut() {
                let p = rest
                    .trim_end_matches(';')
                    .split_whitespace()
                    .next()
                    .unwrap_or("80");
                s.port = p.rsplit(':').next().unwrap_or(p).parse().unwrap_or(80);
            }
        } else if let Some(rest) = line.strip_prefix("default_type ") {
            if let Some(s) = cur.as_mut() {
                s.content_type = rest.trim_end_matches(';').trim().to_owned();
            }
        } else if let Some(rest) = line.strip_prefix("return ") {
            if let Some(s) = cur.as_mut() {
                let rest = rest.trim_end_matches(';').trim();
                let (code, text) = rest.split_once(' ').unwrap_or((rest, ""));
                s.code = code.parse().unwrap_or(200);
                let text = text.trim().trim_matches('"');
                s.body = text.replace("\\n", "\n").replace("$hostname", hostname);
            }
        } else if line == "}" && cur.as_ref().is_some_and(|s| !s.body.is_empty()) {
            out.extend(cur.take());
        }
    }
    out
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        404 => "Not Found",
        503 => "Service Temporarily Unavailable",
        _ => "",
    }
}

fn serve(mut s: TcpStream, srv: &Server) {
    let mut reader = BufReader::new(match s.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    });
    let mut first = String::new();
    if reader.read_line(&mut first).is_err() {
        return;
    }
    // Drain the headers.
    loop {
        let mut l = String::new();
        match reader.read_line(&mut l) {
            Ok(0) | Err(_) => break,
            Ok(_) if l == "\r\n" || l == "\n" => break,
            _ => {}
        }
    }
    let head = first.starts_with("HEAD ");
    let _ = write!(
        s,
        "HTTP/1.1 {} {}\r\nServer: nginx (cmesh lab stand-in)\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        srv.code,
        reason(srv.code),
        srv.content_type,
        srv.body.len()
    );
    if !head {
        let _ = s.write_all(srv.body.as_bytes());
    }
}

fn main() {
    let hostname = std::env::var("HOSTNAME").unwrap_or_else(|_| "nginx".into());
    let mut servers = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/etc/nginx/conf.d") {
        let mut files: Vec<_> = rd.flatten().map(|e| e.path()).collect();
        files.sort();
        for f in files
            .iter()
            .filter(|f| f.extension().is_some_and(|e| e == "conf"))
        {
            if let Ok(text) = std::fs::read_to_string(f) {
                servers.extend(parse(&text, &hostname));
            }
        }
    }
    if servers.is_empty() {
        servers.push(Server {
            port: 80,
            code: 200,
            content_type: "text/html".into(),
            body: "<html><head><title>Welcome to nginx!</title></head></html>\n".into(),
        });
    }
    let mut threads = Vec::new();
    for srv in servers {
        let l = TcpListener::bind(("0.0.0.0", srv.port))
            .unwrap_or_else(|e| panic!("lab-nginx: listen on {}: {e}", srv.port));
        eprintln!(
            "lab-nginx: port {} answers {} {:?}",
            srv.port, srv.code, srv.body
        );
        threads.push(std::thread::spawn(move || {
            for c in l.incoming().flatten() {
                let srv = srv.clone();
                std::thread::spawn(move || serve(c, &srv));
            }
        }));
    }
    for t in threads {
        let _ = t.join();
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn reads_the_test_servers_configuration() {
        let conf = "server {\n    listen 80;\n    location / {\n        default_type text/plain;\n        return 200 \"cluster=k8s01 pod=$hostname\\n\";\n    }\n}\n";
        let s = parse(conf, "echo-abc");
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].port, 80);
        assert_eq!(s[0].body, "cluster=k8s01 pod=echo-abc\n");
        assert_eq!(s[0].content_type, "text/plain");
    }
}
