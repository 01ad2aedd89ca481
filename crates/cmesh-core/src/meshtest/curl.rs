//! The HTTP requests of a run: one `sh -c` in the client pod runs `count` curls and marks
//! each result, so that one exec measures a whole batch; [`parse`] reads the marks back.

use serde::Serialize;

/// A batch of identical requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The URL.
    pub url: String,
    /// A `Host` header (for the Ingress).
    pub host: Option<String>,
    /// How many requests (each a new connection, so that load balancing shows).
    pub count: u32,
    /// Bound on each request, seconds.
    pub timeout_secs: u32,
}

const MARK: &str = "@@cmesh";

impl Request {
    /// The command to exec in the client pod.
    pub fn command(&self) -> Vec<String> {
        let host = self
            .host
            .as_ref()
            .map(|h| format!(" -H 'Host: {h}'"))
            .unwrap_or_default();
        let t = self.timeout_secs.max(1);
        let script = format!(
            "i=0; while [ $i -lt {n} ]; do i=$((i+1)); curl -sS -o - --connect-timeout {t} --max-time {t}{host} -w '\\n{MARK} %{{http_code}} %{{time_total}}\\n' '{url}' 2>&1; echo \"{MARK}-exit $?\"; done",
            n = self.count,
            url = self.url,
        );
        vec!["sh".into(), "-c".into(), script]
    }
}

/// One request's result.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Attempt {
    /// curl's exit code (0 on any HTTP answer).
    pub exit: i32,
    /// HTTP status, if an answer came.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<u16>,
    /// Total time, seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
    /// The cluster the server named.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// The pod the server named.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// curl's error message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The page title of a non-test answer (ingress-nginx's 503 page).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

impl Attempt {
    /// An HTTP 200 from the test server.
    pub fn answered(&self) -> bool {
        self.exit == 0 && self.http == Some(200) && self.cluster.is_some()
    }

    /// What went wrong, in words (curl's own message when it has one).
    pub fn problem(&self) -> String {
        if let Some(e) = &self.error {
            return e.clone();
        }
        match (self.exit, self.http) {
            (0, Some(code)) => match &self.title {
                Some(t) => format!("HTTP {code} ({t})"),
                None => format!("HTTP {code}"),
            },
            (e, _) => format!("curl exit code {e}"),
        }
    }
}

/// Reads the output of [`Request::command`].
pub fn parse(stdout: &str) -> Vec<Attempt> {
    let mut out = Vec::new();
    let mut cur = Attempt::default();
    for line in stdout.lines() {
        let line = line.trim_end();
        if let Some(rest) = line.strip_prefix(&format!("{MARK}-exit ")) {
            cur.exit = rest.trim().parse().unwrap_or(-1);
            out.push(std::mem::take(&mut cur));
        } else if let Some(rest) = line.strip_prefix(&format!("{MARK} ")) {
            let mut it = rest.split_whitespace();
            cur.http = it.next().and_then(|c| c.parse().ok()).filter(|c| *c != 0);
            cur.seconds = it.next().and_then(|t| t.parse().ok());
        } else if let Some(msg) = line.strip_prefix("curl: ") {
            cur.error = Some(msg.to_owned());
        } else if let Some(rest) = line.strip_prefix("cluster=") {
            let mut it = rest.split_whitespace();
            cur.cluster = it.next().map(str::to_owned);
            cur.pod = it.find_map(|w| w.strip_prefix("pod=")).map(str::to_owned);
        } else if let (Some(a), Some(b)) = (line.find("<title>"), line.find("</title>"))
            && a + 7 <= b
        {
            cur.title = Some(line[a + 7..b].to_owned());
        }
    }
    out
}

/// The median of the answered requests' times, in milliseconds.
pub fn median_ms(attempts: &[Attempt]) -> Option<f64> {
    let mut t: Vec<f64> = attempts
        .iter()
        .filter(|a| a.answered())
        .filter_map(|a| a.seconds)
        .collect();
    if t.is_empty() {
        return None;
    }
    t.sort_by(f64::total_cmp);
    Some(t[t.len() / 2] * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_is_one_shell_loop() {
        let r = Request {
            url: "http://echo.ns.svc:8080/".into(),
            host: Some("h.example".into()),
            count: 3,
            timeout_secs: 5,
        };
        let c = r.command();
        assert_eq!(&c[..2], ["sh", "-c"]);
        assert!(c[2].contains("[ $i -lt 3 ]"), "{}", c[2]);
        assert!(
            c[2].contains("--max-time 5 -H 'Host: h.example'"),
            "{}",
            c[2]
        );
        assert!(c[2].ends_with("echo \"@@cmesh-exit $?\"; done"), "{}", c[2]);
    }

    #[test]
    fn parses_answers_errors_and_pages() {
        let out = "cluster=k8s02 pod=echo-7d9f\n\n@@cmesh 200 0.002311\n@@cmesh-exit 0\n\
curl: (28) Connection timed out after 5002 milliseconds\n\n@@cmesh 000 5.002\n@@cmesh-exit 28\n\
<html>\n<head><title>503 Service Temporarily Unavailable</title></head>\n</html>\n\n@@cmesh 503 0.001\n@@cmesh-exit 0\n";
        let a = parse(out);
        assert_eq!(a.len(), 3);
        assert!(a[0].answered());
        assert_eq!(a[0].cluster.as_deref(), Some("k8s02"));
        assert_eq!(a[0].pod.as_deref(), Some("echo-7d9f"));
        assert_eq!(a[1].exit, 28);
        assert_eq!(a[1].http, None);
        assert_eq!(
            a[1].problem(),
            "(28) Connection timed out after 5002 milliseconds"
        );
        assert_eq!(a[2].http, Some(503));
        assert_eq!(
            a[2].problem(),
            "HTTP 503 (503 Service Temporarily Unavailable)"
        );
        assert!(!a[2].answered());
        assert_eq!(median_ms(&a), Some(2.311));
    }
}
