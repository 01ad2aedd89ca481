//! Real etcd servers for tests: mutual TLS with certificates from cmesh's own PKI code, on a
//! random 127.0.0.x address and a free port, cleaned up (process and data) on drop, panics
//! included.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use cmesh_core::pki::{Ca, IssuedCert, LeafRequest};
use cmesh_core::spec::KeyAlgorithm;
use time::OffsetDateTime;

use crate::tools;

/// An address reserved for a test server: a random 127.0.0.x and a free port.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint {
    /// Loopback address.
    pub ip: Ipv4Addr,
    /// Port.
    pub port: u16,
}

impl Endpoint {
    /// Picks an address and a port free right now.
    pub fn reserve() -> Self {
        let ip = loopback();
        Self {
            ip,
            port: free_port(ip),
        }
    }
}

/// What the server presents and whom it trusts.
pub struct ServerTls<'a> {
    /// Server certificate, PEM.
    pub cert_pem: String,
    /// Server key, PEM.
    pub key_pem: String,
    /// The CA client certificates must come from (the harness issues its `root` client from it).
    pub client_ca: &'a Ca,
}

impl<'a> ServerTls<'a> {
    /// Serves `cert` (certificate and key), trusting `client_ca` for clients.
    pub fn issued(cert: &IssuedCert, client_ca: &'a Ca) -> ServerTls<'a> {
        ServerTls {
            cert_pem: cert.cert_pem.clone(),
            key_pem: cert.key.pem().to_owned(),
            client_ca,
        }
    }
}

/// Issues a server certificate from `ca` for tests.
pub fn issue(
    ca: &Ca,
    cn: &str,
    dns: &[&str],
    ips: &[std::net::IpAddr],
    from: OffsetDateTime,
    days: u32,
) -> IssuedCert {
    ca.issue(
        &LeafRequest {
            common_name: cn.into(),
            dns_names: dns.iter().map(|d| (*d).to_owned()).collect(),
            ip_addresses: ips.to_vec(),
        },
        KeyAlgorithm::EcdsaP256,
        days,
        from,
    )
    .expect("issue")
}

/// A running etcd.
pub struct Etcd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// Where it listens for clients.
    pub addr: SocketAddr,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A loopback address unlikely to collide with other tests: 127.0.0.x with x from the pid and
/// a counter.
fn loopback() -> Ipv4Addr {
    let n = NEXT.fetch_add(1, Ordering::Relaxed) + std::process::id();
    Ipv4Addr::new(127, 0, ((n / 250) % 200) as u8 + 1, (n % 250) as u8 + 2)
}

/// A port free on `ip` right now.
pub fn free_port(ip: Ipv4Addr) -> u16 {
    TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

impl Etcd {
    /// Starts etcd at `ep`.
    ///
    /// # Panics
    /// When etcd is not installed or does not come up.
    pub fn start_at(ep: Endpoint, tls: ServerTls<'_>) -> Etcd {
        let etcd = tools::find("etcd", "CMESH_ETCD");
        let peer_port = free_port(ep.ip);
        let dir = tempfile::Builder::new()
            .prefix("cmesh-etcd-")
            .tempdir()
            .expect("temp dir");
        let now = OffsetDateTime::now_utc();
        let root = issue(tls.client_ca, "root", &[], &[], now, 30);
        let p = |n: &str| dir.path().join(n);
        write(&p("server.crt"), &tls.cert_pem);
        write(&p("server.key"), &tls.key_pem);
        write(&p("client-ca.crt"), tls.client_ca.cert_pem());
        write(&p("root.crt"), &root.cert_pem);
        write(&p("root.key"), root.key.pem());
        let url = format!("https://{}:{}", ep.ip, ep.port);
        let peer = format!("http://{}:{peer_port}", ep.ip);
        let log = std::fs::File::create(p("etcd.log")).expect("log");
        let child = Command::new(etcd)
            .args(["--name", "cmesh-test", "--data-dir"])
            .arg(p("data"))
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("cmesh-test={peer}")])
            .arg("--cert-file")
            .arg(p("server.crt"))
            .arg("--key-file")
            .arg(p("server.key"))
            .arg("--trusted-ca-file")
            .arg(p("client-ca.crt"))
            .args([
                "--client-cert-auth",
                "--logger",
                "zap",
                "--log-level",
                "error",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn etcd");
        let mut e = Etcd {
            child: Some(child),
            dir,
            addr: SocketAddr::from((ep.ip, ep.port)),
        };
        e.wait_ready();
        e
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("etcd exited with {status}: {}", self.log());
            }
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                // The port is open; etcd is ready when it answers a TLS client.
                if self.etcdctl_raw(&["endpoint", "health"]).0 {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("etcd did not become ready: {}", self.log());
    }

    /// The etcd process ID.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The directory holding its data and certificates.
    pub fn data_dir(&self) -> std::path::PathBuf {
        self.dir.path().to_path_buf()
    }

    /// etcd's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }

    fn etcdctl_raw(&self, args: &[&str]) -> (bool, String) {
        let p = |n: &str| self.dir.path().join(n);
        self.etcdctl_with(&p("root.crt"), &p("root.key"), args)
    }

    /// Runs etcdctl with the client certificate and key in these files.
    fn etcdctl_with(&self, cert: &Path, key: &Path, args: &[&str]) -> (bool, String) {
        let etcdctl = tools::find("etcdctl", "CMESH_ETCDCTL");
        let out = Command::new(etcdctl)
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints=https://{}", self.addr))
            .arg(format!("--cert={}", cert.display()))
            .arg(format!("--key={}", key.display()))
            .arg("--insecure-skip-tls-verify=true")
            .arg("--command-timeout=5s")
            .args(args)
            .output()
            .expect("run etcdctl");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// Runs etcdctl as the `root` user (client certificate CN=root) and panics on failure.
    /// (It skips server verification only because test servers may be deliberately broken;
    /// cmesh itself never does.)
    pub fn etcdctl(&self, args: &[&str]) -> String {
        let (ok, text) = self.etcdctl_raw(args);
        assert!(ok, "etcdctl {args:?} failed: {text}\nlog: {}", self.log());
        text
    }

    /// Runs etcdctl with another client certificate (PEM texts), returning success and output.
    pub fn etcdctl_as(&self, cert_pem: &str, key_pem: &str, args: &[&str]) -> (bool, String) {
        let cert = self.dir.path().join("as.crt");
        let key = self.dir.path().join("as.key");
        write(&cert, cert_pem);
        write(&key, key_pem);
        self.etcdctl_with(&cert, &key, args)
    }

    /// Writes a key.
    pub fn put(&self, key: &str, value: &str) {
        self.etcdctl(&["put", key, value]);
    }

    /// Turns on authentication: `root` (certificate CN=root) with the root role, a read-only
    /// role `remote` on `cilium/` (as clustermesh-apiserver creates), and `users` with it.
    pub fn enable_auth(&self, users: &[&str]) {
        self.etcdctl(&["user", "add", "root", "--no-password"]);
        self.etcdctl(&["user", "grant-role", "root", "root"]);
        self.etcdctl(&["role", "add", "remote"]);
        self.etcdctl(&[
            "role",
            "grant-permission",
            "remote",
            "--prefix=true",
            "read",
            "cilium/",
        ]);
        for u in users {
            self.etcdctl(&["user", "add", u, "--no-password"]);
            self.etcdctl(&["user", "grant-role", u, "remote"]);
        }
        self.etcdctl(&["auth", "enable"]);
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // The data directory goes with `dir`.
    }
}
