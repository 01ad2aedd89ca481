//! Text for PKI reports: what reconcile did, and `pki show`. Pure functions of their data
//! (the clock is passed in), so they are snapshot-tested. No private material ever reaches
//! these functions.

use std::fmt::Write as _;

use cmesh_core::pki::store::{Action, PkiEvent};
use cmesh_core::pki::{CertInfo, fmt_date};
use time::OffsetDateTime;

/// What `pki show` found of the CA's key (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaKey {
    /// The key belongs to ca.crt (its algorithm).
    Matches(&'static str),
    /// A key of another certificate (its algorithm).
    Mismatch(&'static str),
    /// No ca.key.
    Missing,
    /// Not a key cmesh can read.
    Unreadable(String),
}

impl CaKey {
    /// `ok`, `mismatch`, `missing` or `unreadable`, for JSON.
    pub fn state(&self) -> &'static str {
        match self {
            CaKey::Matches(_) => "ok",
            CaKey::Mismatch(_) => "mismatch",
            CaKey::Missing => "missing",
            CaKey::Unreadable(_) => "unreadable",
        }
    }

    /// The key's algorithm, when it could be read.
    pub fn algorithm(&self) -> Option<&'static str> {
        match self {
            CaKey::Matches(a) | CaKey::Mismatch(a) => Some(a),
            _ => None,
        }
    }
}

/// Summarises reconcile events: the CA line, then issued/renewed leaves grouped per cluster
/// with reasons, then a count of reused ones.
pub fn events_summary(dir: &str, events: &[PkiEvent]) -> String {
    let mut s = String::new();
    for e in events.iter().filter(|e| e.kind.is_none()) {
        let _ = writeln!(
            s,
            "pki: {} in {dir}, valid until {}",
            e.reason,
            fmt_date(e.not_after)
        );
    }
    for action in [Action::Issued, Action::Renewed] {
        let mut by_cluster: Vec<(String, Vec<String>)> = Vec::new();
        for e in events
            .iter()
            .filter(|e| e.action == action && e.kind.is_some())
        {
            let cluster = e.cluster.clone().unwrap_or_default();
            let item = match (action, e.kind) {
                (Action::Renewed, Some(k)) => format!("{} ({})", kind_name(k), e.reason),
                (_, Some(k)) => kind_name(k).to_owned(),
                _ => continue,
            };
            match by_cluster.iter_mut().find(|(c, _)| *c == cluster) {
                Some((_, items)) => items.push(item),
                None => by_cluster.push((cluster, vec![item])),
            }
        }
        for (cluster, items) in by_cluster {
            let verb = if action == Action::Issued {
                "issued"
            } else {
                "renewed"
            };
            let _ = writeln!(s, "pki: {verb} for {cluster}: {}", items.join(", "));
        }
    }
    let reused = events
        .iter()
        .filter(|e| e.action == Action::Reused && e.kind.is_some())
        .count();
    if reused > 0 {
        let soonest = events
            .iter()
            .filter(|e| e.action == Action::Reused && e.kind.is_some())
            .map(|e| e.not_after)
            .min();
        let _ = write!(s, "pki: reused {reused} certificate(s) from {dir}");
        if let Some(t) = soonest {
            let _ = write!(s, " (first expiry {})", fmt_date(t));
        }
        s.push('\n');
    }
    s
}

fn kind_name(k: cmesh_core::pki::LeafKind) -> &'static str {
    k.file_stem()
}

/// One certificate row for `pki show`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LeafRow {
    /// File, relative to pki.dir.
    pub file: String,
    /// Certificate details.
    pub cert: CertInfo,
    /// `ok`, `expiring`, `expired`, `other-ca`.
    pub status: String,
}

/// `pki show` as text.
pub fn show(
    dir: &str,
    ca: &CertInfo,
    key: &CaKey,
    leaves: &[LeafRow],
    users: &[String],
    now: OffsetDateTime,
) -> String {
    let mut s = String::new();
    let key_text = match key {
        CaKey::Matches(alg) => format!("key {dir}/ca.key, {alg}"),
        CaKey::Mismatch(alg) => {
            format!("key {dir}/ca.key, {alg}: DOES NOT MATCH ca.crt")
        }
        CaKey::Missing => format!("key {dir}/ca.key: MISSING"),
        CaKey::Unreadable(why) => format!("key {dir}/ca.key: UNREADABLE ({why})"),
    };
    let _ = writeln!(s, "CA          {dir}/ca.crt ({key_text})");
    let _ = writeln!(s, "subject     {}", ca.subject);
    if ca.issuer != ca.subject {
        let _ = writeln!(s, "issuer      {}", ca.issuer);
    }
    let _ = writeln!(s, "serial      {}", ca.serial);
    let _ = writeln!(s, "sha256      {}", ca.sha256);
    let days = ca.days_left(now);
    let state = if days < 0 {
        "EXPIRED".to_owned()
    } else {
        format!("{days} days left")
    };
    let _ = writeln!(
        s,
        "valid       {} .. {} ({state})",
        fmt_date(ca.not_before),
        fmt_date(ca.not_after)
    );
    if leaves.is_empty() {
        let _ = writeln!(s, "\nno certificates issued from it in {dir}");
    } else {
        let _ = writeln!(s, "\ncertificates in {dir}:");
        let width = leaves.iter().map(|l| l.file.len()).max().unwrap_or(0);
        for l in leaves {
            let _ = writeln!(
                s,
                "  {:<width$}  {:<9} until {}  CN={}",
                l.file,
                l.status,
                fmt_date(l.cert.not_after),
                l.cert.common_name
            );
        }
    }
    if !users.is_empty() {
        let _ = writeln!(s, "\nrendered files carrying it:");
        for u in users {
            let _ = writeln!(s, "  {u}");
        }
    }
    s
}

/// `pki rotate status` (and the summary after each rotate command): the stage with when each
/// was entered, both CAs with fingerprint and expiry and what each does now, the leaves of
/// pki.dir by issuer, and the next step.
pub fn rotation(r: &cmesh_core::pki::rotation::RotationReport, now: OffsetDateTime) -> String {
    let mut s = String::new();
    match &r.rotation {
        None => {
            let _ = writeln!(s, "no CA rotation in progress");
        }
        Some(state) => {
            let when: Vec<String> = r
                .history
                .iter()
                .map(|h| format!("{} {}", h.stage.as_str(), fmt_date(h.at)))
                .collect();
            let _ = writeln!(
                s,
                "CA rotation at stage `{}` ({})",
                state.stage.as_str(),
                when.join(", ")
            );
        }
    }
    let role = |which: &str| {
        let trusted = if r.rotation.is_some() {
            "trusted"
        } else {
            "trusted alone"
        };
        if r.issuer == which {
            format!("{trusted}, issues the certificates")
        } else {
            trusted.to_owned()
        }
    };
    let mut rows = vec![("mesh CA", &r.current, role("current"))];
    if let Some(i) = &r.incoming {
        rows.push(("new CA", i, role("incoming")));
    }
    for (label, c, what) in rows {
        let _ = writeln!(
            s,
            "  {label:<8} {}\n           sha256 {}\n           valid until {} ({} days); {what}",
            c.subject,
            c.sha256,
            fmt_date(c.not_after),
            c.days_left(now)
        );
    }
    if !r.leaves.is_empty() {
        let parts: Vec<String> = [
            ("current", "from the mesh CA"),
            ("incoming", "from the new CA"),
            ("other", "from neither"),
        ]
        .iter()
        .filter_map(|(k, label)| r.leaves.get(k).map(|n| format!("{n} {label}")))
        .collect();
        let _ = writeln!(s, "certificates in pki.dir: {}", parts.join(", "));
    }
    let _ = writeln!(s, "next: {}", r.next);
    s
}
