//! The record of the clusters cmesh has meshed (`pki.dir/membership.yaml`): which clusters
//! `apply` meshed, under which name and ID, how to reach them, and which left mesh.yaml or were
//! disconnected since. Without it a cluster removed from mesh.yaml would simply be forgotten:
//! its peers would keep dialling it and it would keep its own mesh configuration (what users
//! of `cilium clustermesh disconnect` keep finding, cilium/cilium#32300). With it `apply`
//! notices a cluster that left, `apply --prune` can still reach it, and `check` warns when a
//! name or ID of a removed cluster comes back (identities carry the cluster ID: a peer that
//! still holds the old cluster's state would take the new one's for it).
//!
//! The file is public (names, IDs, kubeconfig paths; no secret) and written only by `apply`,
//! `disconnect` and `pki` commands under pki.dir's lock.

use serde::Serialize;
use time::OffsetDateTime;

use crate::diag::{Diagnostic, Rule};
use crate::spec::{MeshSpec, codes, source};

/// The record's file name in pki.dir.
pub const MEMBERSHIP: &str = "membership.yaml";

/// Where a recorded cluster stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Meshed by `apply` and listed in mesh.yaml.
    Meshed,
    /// Meshed, then removed from mesh.yaml: its peers drop it at the next `apply`, its own
    /// mesh configuration stays until `apply --prune` or `cmesh disconnect`.
    Left,
    /// Its mesh configuration was removed (`apply --prune`, `cmesh disconnect`).
    Removed,
}

impl State {
    /// The word in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Meshed => "meshed",
            State::Left => "left",
            State::Removed => "removed",
        }
    }

    fn parse(s: &str) -> Option<State> {
        match s {
            "meshed" => Some(State::Meshed),
            "left" => Some(State::Left),
            "removed" => Some(State::Removed),
            _ => None,
        }
    }
}

/// One cluster in the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    /// `cluster.name`.
    pub name: String,
    /// `cluster.id`.
    pub id: u16,
    /// The kubeconfig it was reached with, as mesh.yaml wrote it (relative to mesh.yaml).
    pub kubeconfig: Option<String>,
    /// Its context.
    pub context: Option<String>,
    /// The Cilium version its last successful apply installed (`None` in records written
    /// before cmesh recorded it).
    pub version: Option<String>,
    /// Where it stands.
    pub state: State,
    /// When it entered that state (RFC 3339).
    pub since: String,
}

/// The record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Record {
    /// By name.
    pub members: Vec<Member>,
}

/// A record that cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{MEMBERSHIP}: {reason}")]
pub struct RecordError {
    /// What is wrong, naming the entry and field.
    pub reason: String,
}

impl Record {
    /// Reads a record written by [`Record::to_text`].
    ///
    /// # Errors
    /// [`RecordError`] naming the entry and field that is missing or wrong.
    pub fn parse(text: &str) -> Result<Record, RecordError> {
        let bad = |reason: String| RecordError { reason };
        let json = crate::yaml::parse_to_json(text).map_err(|e| bad(format!("not YAML: {e}")))?;
        let mut members = Vec::new();
        let items = match json.get("clusters") {
            None | Some(serde_json::Value::Null) => Vec::new(),
            Some(serde_json::Value::Array(a)) => a.clone(),
            Some(_) => return Err(bad("`clusters` must be a list".into())),
        };
        for (i, item) in items.iter().enumerate() {
            let text = |k: &str| item.get(k).and_then(serde_json::Value::as_str);
            let name = text("name")
                .ok_or_else(|| bad(format!("clusters[{i}].name is missing")))?
                .to_owned();
            let id = item
                .get("id")
                .and_then(serde_json::Value::as_u64)
                .and_then(|n| u16::try_from(n).ok())
                .ok_or_else(|| bad(format!("clusters[{i}].id must be a number 0–65535")))?;
            let state_word = text("state").unwrap_or_default();
            let state = State::parse(state_word).ok_or_else(|| {
                bad(format!(
                    "clusters[{i}].state `{state_word}` is not one of meshed, left, removed"
                ))
            })?;
            members.push(Member {
                name,
                id,
                kubeconfig: text("kubeconfig").map(str::to_owned),
                context: text("context").map(str::to_owned),
                version: text("version").map(str::to_owned),
                state,
                since: text("since").unwrap_or_default().to_owned(),
            });
        }
        members.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Record { members })
    }

    /// The file's text: a comment saying what it is, then one entry per cluster by name.
    pub fn to_text(&self) -> String {
        let mut s = String::from(
            "# The clusters cmesh has meshed (written by apply, apply --prune and disconnect).\n\
             # Keep it with ca.crt: it is how a cluster removed from mesh.yaml is noticed.\n\
             clusters:\n",
        );
        let q = |t: &str| serde_json::Value::from(t).to_string();
        for m in &self.members {
            s.push_str(&format!("  - name: {}\n    id: {}\n", q(&m.name), m.id));
            if let Some(k) = &m.kubeconfig {
                s.push_str(&format!("    kubeconfig: {}\n", q(k)));
            }
            if let Some(c) = &m.context {
                s.push_str(&format!("    context: {}\n", q(c)));
            }
            if let Some(v) = &m.version {
                s.push_str(&format!("    version: {}\n", q(v)));
            }
            s.push_str(&format!(
                "    state: {}\n    since: {}\n",
                m.state.as_str(),
                q(&m.since)
            ));
        }
        s
    }

    /// The entry named `name`.
    pub fn get(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }

    /// Whether `name` is recorded as meshed (or left with its mesh configuration).
    pub fn meshed(&self, name: &str) -> bool {
        self.get(name)
            .is_some_and(|m| matches!(m.state, State::Meshed | State::Left))
    }

    /// Clusters whose mesh configuration is still on them although mesh.yaml no longer lists
    /// them: what `apply --prune` disconnects.
    pub fn leaving<'a>(&'a self, spec: &MeshSpec) -> Vec<&'a Member> {
        self.members
            .iter()
            .filter(|m| matches!(m.state, State::Meshed | State::Left))
            .filter(|m| !spec.clusters.iter().any(|c| c.name == m.name))
            .collect()
    }

    /// The record after an `apply`: clusters of mesh.yaml whose mesh phase succeeded are
    /// meshed (with the name, ID and kubeconfig mesh.yaml gives now); meshed clusters mesh.yaml
    /// no longer lists have left, or are removed when `removed` names them (pruned).
    pub fn after_apply(
        &self,
        spec: &MeshSpec,
        meshed: &[String],
        removed: &[String],
        now: OffsetDateTime,
    ) -> Record {
        let now = rfc3339(now);
        let mut members: Vec<Member> = Vec::new();
        for old in &self.members {
            let in_spec = spec.clusters.iter().any(|c| c.name == old.name);
            let mut m = old.clone();
            let state = if removed.contains(&old.name) {
                State::Removed
            } else if !in_spec && old.state == State::Meshed {
                State::Left
            } else {
                old.state
            };
            if state != m.state {
                m.state = state;
                m.since.clone_from(&now);
            }
            members.push(m);
        }
        for c in spec.clusters.iter().filter(|c| meshed.contains(&c.name)) {
            let fresh = Member {
                name: c.name.clone(),
                id: c.id,
                kubeconfig: c.kubeconfig.clone(),
                context: c.context.clone(),
                version: Some(spec.cilium.version.to_string()),
                state: State::Meshed,
                since: now.clone(),
            };
            match members.iter_mut().find(|m| m.name == c.name) {
                Some(m) if m.state == State::Meshed && m.id == c.id => {
                    m.kubeconfig.clone_from(&fresh.kubeconfig);
                    m.context.clone_from(&fresh.context);
                    m.version.clone_from(&fresh.version);
                }
                Some(m) => *m = fresh,
                None => members.push(fresh),
            }
        }
        members.sort_by(|a, b| a.name.cmp(&b.name));
        Record { members }
    }

    /// The record after `cmesh disconnect NAME` (a cluster maybe never recorded).
    pub fn after_disconnect(&self, name: &str, id: Option<u16>, now: OffsetDateTime) -> Record {
        let mut r = self.clone();
        match r.members.iter_mut().find(|m| m.name == name) {
            Some(m) => {
                m.state = State::Removed;
                m.since = rfc3339(now);
            }
            None => {
                if let Some(id) = id {
                    r.members.push(Member {
                        name: name.to_owned(),
                        id,
                        kubeconfig: None,
                        context: None,
                        version: None,
                        state: State::Removed,
                        since: rfc3339(now),
                    });
                    r.members.sort_by(|a, b| a.name.cmp(&b.name));
                }
            }
        }
        r
    }
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn date(since: &str) -> &str {
    since.get(..10).unwrap_or(since)
}

/// `check`'s diagnostics from the record: warnings for a name or ID of a cluster that left or
/// was removed used again, a meshed cluster's ID changed, a meshed cluster missing from
/// mesh.yaml; an error for `cilium.version` more than one minor release from what a meshed
/// cluster runs.
pub fn diagnostics(record: &Record, spec: &MeshSpec) -> Vec<Diagnostic> {
    let src = &spec.source;
    let mut out = Vec::new();
    // Warnings, and the one error (a version step Cilium does not support).
    let mut warn = |rule: &Rule, msg: String, field: String, help: String| {
        out.push(
            Diagnostic::new(rule, msg)
                .at(field.clone(), src.nearest_span(&field))
                .help(help)
                .with_source(src.text()),
        );
    };
    for (i, c) in spec.clusters.iter().enumerate() {
        let at = source::item("clusters", i);
        if let Some(m) = record.get(&c.name) {
            match m.state {
                State::Meshed if m.id != c.id => warn(
                    &codes::MEMBER_ID_CHANGED,
                    format!(
                        "cluster `{}` was meshed with ID {} and mesh.yaml now gives it ID {}",
                        c.name, m.id, c.id
                    ),
                    source::child(&at, "id"),
                    format!(
                        "every identity carries the cluster ID: changing it on a live cluster strands its pods' identities and its peers' state; keep `id: {}`, or remove the cluster from the mesh (`apply --prune`) and reinstall it before it joins with the new ID",
                        m.id
                    ),
                ),
                State::Left | State::Removed => warn(
                    &codes::MEMBER_REUSED,
                    format!(
                        "cluster name `{}` belonged to a cluster that {} the mesh on {} (ID {})",
                        c.name,
                        if m.state == State::Left { "left" } else { "was removed from" },
                        date(&m.since),
                        m.id
                    ),
                    source::child(&at, "name"),
                    "if it is the same cluster rejoining, `apply` records it as meshed again; if it is another cluster, give it a name never used in this mesh: peers that kept the old cluster's state would take it for the old one".into(),
                ),
                State::Meshed => {}
            }
            // A version step Cilium does not support, from the version last applied.
            if m.state == State::Meshed
                && let Some(problem) = m
                    .version
                    .as_deref()
                    .and_then(|v| v.parse::<crate::version::CiliumVersion>().ok())
                    .and_then(|from| from.step_problem(&spec.cilium.version))
            {
                warn(
                    &codes::VERSION_STEP,
                    format!(
                        "cluster `{}` runs Cilium {}: {problem}",
                        c.name,
                        m.version.as_deref().unwrap_or_default()
                    ),
                    "cilium.version".into(),
                    "move `cilium.version` one minor release at a time, applying each (`cmesh plan` shows each step)".into(),
                );
            }
        }
        for m in record
            .members
            .iter()
            .filter(|m| m.id == c.id && m.name != c.name)
        {
            warn(
                &codes::MEMBER_REUSED,
                format!(
                    "cluster ID {} of `{}` was `{}`'s ({} since {})",
                    c.id,
                    c.name,
                    m.name,
                    m.state.as_str(),
                    date(&m.since)
                ),
                source::child(&at, "id"),
                format!(
                    "identities carry the cluster ID: a peer still holding `{}`'s endpoints and identities would take `{}`'s for them; pick an ID never used in this mesh",
                    m.name, c.name
                ),
            );
        }
    }
    for m in record.leaving(spec) {
        warn(
            &codes::MEMBER_LEAVING,
            format!(
                "cluster `{}` (ID {}) was meshed and is no longer in mesh.yaml",
                m.name, m.id
            ),
            "clusters".into(),
            format!(
                "the next `apply` drops it from its peers' lists; `apply --prune` then removes its own mesh configuration (or `cmesh disconnect {} --kubeconfig …`); put it back in mesh.yaml to keep it",
                m.name
            ),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(clusters: &[(&str, u16)]) -> MeshSpec {
        let mut y = String::from(
            "name: m\ncilium:\n  version: \"1.16.19\"\nclustermesh:\n  domain: mesh.test\nclusters:\n",
        );
        for (i, (n, id)) in clusters.iter().enumerate() {
            y.push_str(&format!(
                "  - name: {n}\n    id: {id}\n    kubeconfig: {n}.yaml\n    podCIDR: 10.{i}.0.0/16\n    serviceCIDR: 10.20{i}.0.0/16\n    clustermesh:\n      address: 192.0.2.{}\n      port: {}\n",
                i + 1,
                32379 + i
            ));
        }
        let c = crate::spec::check("mesh.yaml", &y);
        c.spec
            .unwrap_or_else(|| panic!("invalid test spec:\n{y}\n{:?}", c.diagnostics))
    }

    fn t(s: &str) -> OffsetDateTime {
        OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap()
    }

    fn names(ms: &[&Member]) -> Vec<String> {
        ms.iter().map(|m| m.name.clone()).collect()
    }

    #[test]
    fn the_record_round_trips_and_bad_entries_are_named() {
        let s = spec(&[("a", 1), ("b", 2)]);
        let r = Record::default().after_apply(
            &s,
            &["a".into(), "b".into()],
            &[],
            t("2026-12-05T10:00:00Z"),
        );
        let text = r.to_text();
        assert_eq!(Record::parse(&text).unwrap(), r);
        assert!(text.contains("state: meshed"), "{text}");
        assert_eq!(Record::parse("").unwrap(), Record::default());
        let e = Record::parse("clusters:\n  - name: a\n    id: 1\n    state: gone\n").unwrap_err();
        assert!(e.reason.contains("clusters[0].state `gone`"), "{e}");
        let e = Record::parse("clusters:\n  - name: a\n    state: meshed\n").unwrap_err();
        assert!(e.reason.contains("clusters[0].id"), "{e}");
        let e = Record::parse("clusters: 3\n").unwrap_err();
        assert!(e.reason.contains("must be a list"), "{e}");
    }

    #[test]
    fn a_cluster_leaves_then_is_removed_and_only_applied_clusters_are_recorded() {
        let three = spec(&[("a", 1), ("b", 2), ("c", 3)]);
        // b failed its mesh phase: not recorded.
        let r = Record::default().after_apply(
            &three,
            &["a".into(), "c".into()],
            &[],
            t("2026-12-01T00:00:00Z"),
        );
        assert_eq!(
            r.members
                .iter()
                .map(|m| m.name.as_str())
                .collect::<Vec<_>>(),
            ["a", "c"]
        );
        assert!(r.meshed("a") && !r.meshed("b"));
        let two = spec(&[("a", 1), ("b", 2)]);
        assert_eq!(names(&r.leaving(&two)), ["c"]);
        let r = r.after_apply(
            &two,
            &["a".into(), "b".into()],
            &[],
            t("2026-12-02T00:00:00Z"),
        );
        let c = r.get("c").unwrap();
        assert_eq!(
            (c.state, c.since.as_str()),
            (State::Left, "2026-12-02T00:00:00Z")
        );
        // Still leaving (its own configuration is on it) until pruned.
        assert_eq!(names(&r.leaving(&two)), ["c"]);
        let pruned = r.after_apply(&two, &[], &["c".into()], t("2026-12-03T00:00:00Z"));
        assert_eq!(pruned.get("c").unwrap().state, State::Removed);
        assert!(pruned.leaving(&two).is_empty());
        // A since that does not move when nothing changes.
        assert_eq!(
            pruned.get("a").unwrap().since,
            "2026-12-01T00:00:00Z",
            "a stays meshed since its first apply"
        );
        // Disconnecting a cluster never recorded records it as removed when its ID is known.
        let d = pruned.after_disconnect("z", Some(9), t("2026-12-04T00:00:00Z"));
        assert_eq!(d.get("z").unwrap().state, State::Removed);
        assert_eq!(
            pruned.after_disconnect("z", None, t("2026-12-04T00:00:00Z")),
            pruned
        );
    }

    #[test]
    fn check_warns_on_reused_names_and_ids_a_changed_id_and_a_missing_member() {
        let r = Record::default()
            .after_apply(
                &spec(&[("a", 1), ("b", 2), ("c", 3)]),
                &["a".into(), "b".into(), "c".into()],
                &[],
                t("2026-12-01T00:00:00Z"),
            )
            .after_apply(
                &spec(&[("a", 1), ("b", 2)]),
                &["a".into(), "b".into()],
                &["c".into()],
                t("2026-12-02T00:00:00Z"),
            );
        let codes_of = |s: &MeshSpec| -> Vec<(String, Option<String>)> {
            diagnostics(&r, s)
                .into_iter()
                .map(|d| (d.code.to_owned(), d.field))
                .collect()
        };
        assert!(codes_of(&spec(&[("a", 1), ("b", 2)])).is_empty());
        // c's ID for a new cluster d; c's name back with its ID (the same cluster rejoining
        // still warns once); a's ID changed; b missing.
        let d = diagnostics(&r, &spec(&[("a", 7), ("d", 3), ("c", 4)]));
        let got: Vec<(&str, Option<&str>)> =
            d.iter().map(|d| (d.code, d.field.as_deref())).collect();
        assert_eq!(
            got,
            [
                (codes::MEMBER_ID_CHANGED.code, Some("clusters[0].id")),
                (codes::MEMBER_REUSED.code, Some("clusters[1].id")),
                (codes::MEMBER_REUSED.code, Some("clusters[2].name")),
                (codes::MEMBER_LEAVING.code, Some("clusters")),
            ]
        );
        assert!(d.iter().all(|d| !d.is_error()), "warnings only");
        assert!(
            d[1].message
                .contains("was `c`'s (removed since 2026-12-02)"),
            "{}",
            d[1].message
        );
        assert!(d[3].message.contains("`b` (ID 2)"), "{}", d[3].message);
    }

    #[test]
    fn check_refuses_a_version_that_skips_a_minor_release_from_what_a_cluster_runs() {
        let on = |v: &str| {
            let mut s = spec(&[("a", 1), ("b", 2)]);
            s.cilium.version = v.parse().unwrap();
            s
        };
        // Meshed on 1.16.19 (the test spec's version).
        let r = Record::default().after_apply(
            &on("1.16.19"),
            &["a".into(), "b".into()],
            &[],
            t("2026-12-01T00:00:00Z"),
        );
        assert_eq!(r.get("a").unwrap().version.as_deref(), Some("1.16.19"));
        assert!(diagnostics(&r, &on("1.17.17")).is_empty());
        let d = diagnostics(&r, &on("1.18.11"));
        assert_eq!(d.len(), 2, "one per cluster: {d:?}");
        assert!(
            d.iter()
                .all(|d| d.code == codes::VERSION_STEP.code && d.is_error())
        );
        assert_eq!(d[0].field.as_deref(), Some("cilium.version"));
        assert!(
            d[0].message
                .contains("cluster `a` runs Cilium 1.16.19: 1.16.19 → 1.18.11 skips 1.17"),
            "{}",
            d[0].message
        );
        // Recorded as it was applied: 1.17.17 then makes 1.18 the next step.
        let r = r.after_apply(
            &on("1.17.17"),
            &["a".into(), "b".into()],
            &[],
            t("2026-12-02T00:00:00Z"),
        );
        assert!(diagnostics(&r, &on("1.18.11")).is_empty());
    }
}
