//! A staged rotation of the mesh CA, recorded in pki.dir so that every later render knows the
//! stage (docs/rotation.md):
//!
//! | stage       | trusted by every cluster | issues the leaves |
//! |-------------|--------------------------|-------------------|
//! | (none)      | current CA               | current CA        |
//! | `begun`     | current + incoming CA    | current CA        |
//! | `reissued`  | current + incoming CA    | incoming CA       |
//! | `reverting` | current + incoming CA    | current CA        |
//!
//! `finish` (from `reissued`) makes the incoming CA the mesh CA and retires the current one;
//! `abort` from `begun` or `reverting` retires the incoming CA; `abort` from `reissued` goes to
//! `reverting` first, because a cluster that dropped the incoming CA from its trust while a
//! peer still holds certificates it issued would cut the mesh. Every step between two stages
//! changes either the trust or the issuer, never both, so clusters that have applied a stage
//! and clusters that have not yet still trust each other.
//!
//! The incoming CA lives in `rotation/` (`ca.crt`, `ca.key`, `state.yaml`); the certificate
//! and the state are public and belong in git with `ca.crt`, the key never. Pure: the edge
//! reads pki.dir into [`PkiFiles`] and carries out the returned [`Transition`].

use std::collections::BTreeMap;

use serde::Serialize;
use time::OffsetDateTime;

use super::PkiError;
use super::ca::{Ca, normalize_pem};
use super::cert::CertInfo;
use super::store::PkiFiles;
use crate::spec::{CertMethod, MeshSpec};

/// The directory of a rotation in progress, relative to pki.dir.
pub const ROTATION_DIR: &str = "rotation";
/// The incoming CA's certificate.
pub const ROTATION_CA_CERT: &str = "rotation/ca.crt";
/// The incoming CA's key.
pub const ROTATION_CA_KEY: &str = "rotation/ca.key";
/// The recorded stage.
pub const ROTATION_STATE: &str = "rotation/state.yaml";

/// Where a rotation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Both CAs trusted; leaves from the current CA.
    Begun,
    /// Both CAs trusted; leaves from the incoming CA.
    Reissued,
    /// Both CAs trusted; leaves back to the current CA (an abort after `reissued`).
    Reverting,
}

impl Stage {
    /// The word in state.yaml and in output.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Begun => "begun",
            Stage::Reissued => "reissued",
            Stage::Reverting => "reverting",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "begun" => Some(Stage::Begun),
            "reissued" => Some(Stage::Reissued),
            "reverting" => Some(Stage::Reverting),
            _ => None,
        }
    }

    /// What the user runs next, after rendering and applying this stage.
    pub fn next_step(self) -> &'static str {
        match self {
            Stage::Begun => {
                "render and apply (every cluster then trusts both CAs), then `cmesh pki rotate reissue`"
            }
            Stage::Reissued => {
                "render and apply (every certificate then comes from the new CA), then `cmesh pki rotate finish`"
            }
            Stage::Reverting => {
                "render and apply (every certificate then comes from the current CA again), then `cmesh pki rotate abort` to drop the new CA from the trust"
            }
        }
    }
}

/// The recorded state of a rotation (`rotation/state.yaml`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RotationState {
    /// The stage.
    pub stage: Stage,
    /// SHA-256 fingerprint of the CA being replaced (pki.dir's `ca.crt`).
    pub from: String,
    /// SHA-256 fingerprint of the incoming CA (`rotation/ca.crt`).
    pub to: String,
    /// When each stage was entered, in order (`begun` first).
    #[serde(skip)]
    pub history: Vec<(Stage, OffsetDateTime)>,
}

impl RotationState {
    /// The state file's text: a comment saying what to commit, then the fields.
    pub fn to_text(&self) -> String {
        let mut s = String::from(
            "# A CA rotation in progress (cmesh pki rotate status). Commit this file and\n\
             # rotation/ca.crt with ca.crt; never rotation/ca.key.\n",
        );
        s.push_str(&format!(
            "stage: {}\nfrom: \"{}\"\nto: \"{}\"\nhistory:\n",
            self.stage.as_str(),
            self.from,
            self.to
        ));
        for (stage, at) in &self.history {
            s.push_str(&format!("  - {}: {}\n", stage.as_str(), rfc3339(*at)));
        }
        s
    }

    /// Reads a state file written by [`Self::to_text`].
    ///
    /// # Errors
    /// [`PkiError::InFile`] naming the field that is missing or wrong.
    pub fn parse(text: &str) -> Result<Self, PkiError> {
        let bad = |why: String| PkiError::InFile {
            file: ROTATION_STATE.into(),
            source: Box::new(PkiError::InvalidState { reason: why }),
        };
        let json = crate::yaml::parse_to_json(text).map_err(|e| bad(format!("not YAML: {e}")))?;
        let field = |k: &str| {
            json.get(k)
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| bad(format!("`{k}` is missing")))
        };
        let stage_word = field("stage")?;
        let stage = Stage::parse(&stage_word).ok_or_else(|| {
            bad(format!(
                "`stage: {stage_word}` is not one of begun, reissued, reverting"
            ))
        })?;
        let mut history = Vec::new();
        for item in json
            .get("history")
            .and_then(serde_json::Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some((k, v)) = item.as_object().and_then(|o| o.iter().next()) else {
                return Err(bad("`history` entries are `- <stage>: <time>`".into()));
            };
            let s = Stage::parse(k).ok_or_else(|| bad(format!("history: unknown stage `{k}`")))?;
            let at = v
                .as_str()
                .and_then(|t| {
                    OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
                })
                .ok_or_else(|| bad(format!("history: `{k}` needs an RFC 3339 time")))?;
            history.push((s, at));
        }
        Ok(Self {
            stage,
            from: field("from")?,
            to: field("to")?,
            history,
        })
    }

    /// When the rotation began.
    pub fn began(&self) -> Option<OffsetDateTime> {
        self.history
            .iter()
            .find(|(s, _)| *s == Stage::Begun)
            .map(|(_, t)| *t)
    }
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The PKI as the clusters see it: which CA issues the leaves and which CAs they trust, from
/// the public files alone (a plain clone of the GitOps repository has them).
#[derive(Debug, Clone)]
pub struct TrustView {
    /// The CA whose certificate issues (or, keyless, issued) the leaves, PEM.
    pub issuer_pem: String,
    /// Every CA certificate the clusters trust, PEM, the current CA first: its concatenation
    /// is the trust bundle.
    pub trusted_pem: Vec<String>,
    /// The rotation in progress.
    pub rotation: Option<RotationState>,
}

impl TrustView {
    /// The trust bundle: every trusted CA's PEM, concatenated.
    pub fn bundle(&self) -> String {
        self.trusted_pem.concat()
    }
}

use super::store::text as text_of;

/// The rotation recorded in pki.dir, checked against the CA certificates it names.
///
/// # Errors
/// [`PkiError::InFile`] for a state without its certificate (or the reverse), an unreadable
/// state, or fingerprints that do not match the certificates.
pub fn read_state(files: &PkiFiles) -> Result<Option<RotationState>, PkiError> {
    let state = text_of(files, ROTATION_STATE)?;
    let cert = text_of(files, ROTATION_CA_CERT)?;
    let (state, cert) = match (state, cert) {
        (None, None) => return Ok(None),
        (Some(_), None) => {
            return Err(PkiError::IncompleteCa {
                present: ROTATION_STATE,
                missing: ROTATION_CA_CERT,
            });
        }
        (None, Some(_)) => {
            return Err(PkiError::IncompleteCa {
                present: ROTATION_CA_CERT,
                missing: ROTATION_STATE,
            });
        }
        (Some(s), Some(c)) => (s, c),
    };
    let state = RotationState::parse(&state)?;
    let incoming = CertInfo::from_pem(&cert).map_err(|e| PkiError::InFile {
        file: ROTATION_CA_CERT.into(),
        source: Box::new(e),
    })?;
    if incoming.sha256 != state.to {
        return Err(PkiError::InFile {
            file: ROTATION_STATE.into(),
            source: Box::new(PkiError::InvalidState {
                reason: format!(
                    "`to` is {}, but rotation/ca.crt is {}",
                    state.to, incoming.sha256
                ),
            }),
        });
    }
    Ok(Some(state))
}

/// Which CA issues leaves and which CAs are trusted, from the certificates in `files`
/// (`ca.crt`, and `rotation/` during a rotation). `current_pem` is pki.dir's `ca.crt`.
///
/// # Errors
/// See [`read_state`]; also a state whose `from` is not the current CA.
pub fn trust_view(files: &PkiFiles, current_pem: &str) -> Result<TrustView, PkiError> {
    let current_pem = normalize_pem(current_pem);
    let Some(state) = read_state(files)? else {
        return Ok(TrustView {
            issuer_pem: current_pem.clone(),
            trusted_pem: vec![current_pem],
            rotation: None,
        });
    };
    let current = CertInfo::from_pem(&current_pem)?;
    if current.sha256 == state.to {
        // A finish killed after the new CA was placed: the rotation is over; `finish` (or
        // `status`) removes what is left of rotation/.
        return Ok(TrustView {
            issuer_pem: current_pem.clone(),
            trusted_pem: vec![current_pem],
            rotation: None,
        });
    }
    if current.sha256 != state.from {
        return Err(PkiError::InFile {
            file: ROTATION_STATE.into(),
            source: Box::new(PkiError::InvalidState {
                reason: format!(
                    "`from` is {}, but ca.crt is {} (was the CA replaced during the rotation?)",
                    state.from, current.sha256
                ),
            }),
        });
    }
    let incoming_pem = normalize_pem(&text_of(files, ROTATION_CA_CERT)?.unwrap_or_default());
    let issuer_pem = match state.stage {
        Stage::Reissued => incoming_pem.clone(),
        Stage::Begun | Stage::Reverting => current_pem.clone(),
    };
    Ok(TrustView {
        issuer_pem,
        trusted_pem: vec![current_pem, incoming_pem],
        rotation: Some(state),
    })
}

/// Loads the issuing CA (certificate and key) for the stage: the incoming CA in `reissued`.
///
/// # Errors
/// [`PkiError`] when its key is missing or does not match.
pub fn load_issuer(files: &PkiFiles, current: Ca, now: OffsetDateTime) -> Result<Ca, PkiError> {
    match read_state(files)? {
        Some(s) if s.stage == Stage::Reissued && s.to != current.info().sha256 => {
            let cert = text_of(files, ROTATION_CA_CERT)?.unwrap_or_default();
            let key = text_of(files, ROTATION_CA_KEY)?.ok_or(PkiError::IncompleteCa {
                present: ROTATION_CA_CERT,
                missing: ROTATION_CA_KEY,
            })?;
            Ca::load(&cert, &key, now).map_err(|e| PkiError::InFile {
                file: ROTATION_CA_KEY.into(),
                source: Box::new(e),
            })
        }
        _ => Ok(current),
    }
}

/// What a rotation command does to pki.dir, for the edge to carry out.
#[derive(Debug)]
pub enum Transition {
    /// Create `rotation/` with the incoming CA and the state (begin).
    Begin {
        /// The incoming CA.
        incoming: Box<Ca>,
        /// The state to record.
        state: RotationState,
    },
    /// Rewrite the state file (reissue; abort from `reissued`).
    Record(RotationState),
    /// Make the incoming CA the mesh CA; the current pair goes to `retired/` (finish).
    Promote {
        /// The incoming CA's certificate, PEM.
        cert_pem: String,
        /// Its key, PEM. Never print it.
        key_pem: String,
        /// The fingerprint of the CA that retires.
        retiring: String,
    },
    /// Move `rotation/` as a whole to `retired/` (abort from `begun` or `reverting`).
    Discard {
        /// The incoming CA's fingerprint, which names the retired directory.
        incoming: String,
    },
}

impl Transition {
    /// What the edge does to pki.dir for this transition, on the in-memory files (the disk
    /// version adds crash safety and `retired/`): for tests, and to preview a stage.
    pub fn apply_in_memory(self, files: &mut PkiFiles) {
        match self {
            Transition::Begin { incoming, state } => {
                files.insert(
                    ROTATION_CA_CERT.into(),
                    normalize_pem(incoming.cert_pem()).into_bytes(),
                );
                files.insert(
                    ROTATION_CA_KEY.into(),
                    incoming.key().pem().as_bytes().to_vec(),
                );
                files.insert(ROTATION_STATE.into(), state.to_text().into_bytes());
            }
            Transition::Record(state) => {
                files.insert(ROTATION_STATE.into(), state.to_text().into_bytes());
            }
            Transition::Promote {
                cert_pem, key_pem, ..
            } => {
                files.insert(super::store::CA_CERT.into(), cert_pem.into_bytes());
                files.insert(super::store::CA_KEY.into(), key_pem.into_bytes());
                files.retain(|p, _| !p.starts_with("rotation/"));
            }
            Transition::Discard { .. } => files.retain(|p, _| !p.starts_with("rotation/")),
        }
    }
}

/// Why a rotation command cannot run now; each says what to do instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RotationRefused {
    /// Only `certificates: cmesh` is rotated by cmesh.
    #[error("{reason}")]
    Method {
        /// Why this method cannot.
        reason: String,
    },
    /// The step does not follow from the current stage.
    #[error("{message}")]
    Stage {
        /// What is wrong.
        message: String,
        /// What to run instead.
        hint: String,
    },
}

/// Whether cmesh can rotate the CA for `spec`'s certificate method, and why not.
pub fn method_supports_rotation(spec: &MeshSpec) -> Result<(), RotationRefused> {
    let reason = match spec.clustermesh.certificates {
        CertMethod::Cmesh => return Ok(()),
        CertMethod::Helm => {
            "certificates: helm has the chart generate new certificates at every render from the CA in values, so no stage can hold the leaves on one CA while the trust changes; switch to `certificates: cmesh` (a normal render and apply), then rotate"
        }
        CertMethod::CronJob => {
            "certificates: cronJob has certgen issue the leaves inside each cluster from the cilium-ca Secret, whose ca.crt is also the only CA certgen writes into them; cmesh cannot hold both CAs in their trust. Switch to `certificates: cmesh` for the rotation, or rotate the cilium-ca Secret by hand as Cilium documents"
        }
        CertMethod::CertManager => {
            "certificates: certManager: cert-manager owns the CA and the leaves; rotate the Issuer's CA there (trust-manager can distribute a bundle of both CAs)"
        }
    };
    Err(RotationRefused::Method {
        reason: reason.into(),
    })
}

fn stage_error(state: Option<&RotationState>, wanted: &str) -> RotationRefused {
    match state {
        None => RotationRefused::Stage {
            message: format!("no CA rotation is in progress; `{wanted}` needs one"),
            hint: "start one with `cmesh pki rotate begin`".into(),
        },
        Some(s) => RotationRefused::Stage {
            message: format!(
                "the CA rotation is at stage `{}`; `{wanted}` does not follow from it",
                s.stage.as_str()
            ),
            hint: format!("next: {}", s.stage.next_step()),
        },
    }
}

/// `begin`: `incoming` (created or imported by the edge) joins the trust.
///
/// # Errors
/// [`RotationRefused`] when a rotation is in progress, the method cannot rotate, or the
/// incoming CA is the current one.
pub fn begin(
    spec: &MeshSpec,
    current: &CertInfo,
    state: Option<&RotationState>,
    incoming: Ca,
    now: OffsetDateTime,
) -> Result<Transition, RotationRefused> {
    method_supports_rotation(spec)?;
    if let Some(s) = state {
        return Err(RotationRefused::Stage {
            message: format!(
                "a CA rotation is already in progress (stage `{}`, to {})",
                s.stage.as_str(),
                s.to
            ),
            hint: format!("next: {}; or `cmesh pki rotate abort`", s.stage.next_step()),
        });
    }
    if incoming.info().sha256 == current.sha256 {
        return Err(RotationRefused::Stage {
            message: "the new CA is the mesh CA already".into(),
            hint: "give another CA with --cert/--key, or none to have cmesh create one".into(),
        });
    }
    let state = RotationState {
        stage: Stage::Begun,
        from: current.sha256.clone(),
        to: incoming.info().sha256.clone(),
        history: vec![(Stage::Begun, now)],
    };
    Ok(Transition::Begin {
        incoming: Box::new(incoming),
        state,
    })
}

/// `reissue`: the incoming CA issues every leaf from now on (from `begun`, or back from
/// `reverting`).
///
/// # Errors
/// [`RotationRefused`] from any other stage.
pub fn reissue(
    state: Option<&RotationState>,
    now: OffsetDateTime,
) -> Result<Transition, RotationRefused> {
    match state {
        Some(s) if matches!(s.stage, Stage::Begun | Stage::Reverting) => {
            let mut next = s.clone();
            next.stage = Stage::Reissued;
            next.history.push((Stage::Reissued, now));
            Ok(Transition::Record(next))
        }
        other => Err(stage_error(other, "reissue")),
    }
}

/// `finish`: the incoming CA becomes the mesh CA, the current one retires. Refused unless
/// every leaf in pki.dir already comes from the incoming CA (`leaves`: the leaf certificates
/// of pki.dir; a render after `reissue` issues them).
///
/// # Errors
/// [`RotationRefused`] outside `reissued`, or with leaves of the old CA left.
pub fn finish(
    files: &PkiFiles,
    state: Option<&RotationState>,
    leaves: &[(String, CertInfo)],
) -> Result<Transition, RotationRefused> {
    let s = match state {
        Some(s) if s.stage == Stage::Reissued => s,
        other => return Err(stage_error(other, "finish")),
    };
    let incoming = files
        .get(ROTATION_CA_CERT)
        .and_then(|b| CertInfo::from_pem(&String::from_utf8_lossy(b)).ok());
    let Some(incoming) = incoming else {
        return Err(stage_error(Some(s), "finish"));
    };
    let stale: Vec<&str> = leaves
        .iter()
        .filter(|(_, c)| !c.is_signed_by(&incoming))
        .map(|(p, _)| p.as_str())
        .collect();
    if !stale.is_empty() {
        return Err(RotationRefused::Stage {
            message: format!(
                "{} certificate(s) in pki.dir still come from the old CA ({}{})",
                stale.len(),
                stale.iter().take(3).copied().collect::<Vec<_>>().join(", "),
                if stale.len() > 3 { ", …" } else { "" }
            ),
            hint: "run `cmesh render` and `cmesh apply` first: finishing now would leave clusters holding certificates no peer trusts any more".into(),
        });
    }
    let key = files
        .get(ROTATION_CA_KEY)
        .map(|b| String::from_utf8_lossy(b).into_owned());
    let Some(key_pem) = key else {
        return Err(RotationRefused::Stage {
            message: format!("{ROTATION_CA_KEY} is missing"),
            hint: "restore the new CA's key from where it was kept; without it the new CA cannot become the mesh CA".into(),
        });
    };
    Ok(Transition::Promote {
        cert_pem: normalize_pem(&String::from_utf8_lossy(&files[ROTATION_CA_CERT])),
        key_pem,
        retiring: s.from.clone(),
    })
}

/// `abort`: from `begun` or `reverting` the incoming CA leaves the trust; from `reissued` the
/// leaves go back to the current CA first (stage `reverting`).
///
/// # Errors
/// [`RotationRefused`] without a rotation.
pub fn abort(
    state: Option<&RotationState>,
    now: OffsetDateTime,
) -> Result<Transition, RotationRefused> {
    match state {
        Some(s) if s.stage == Stage::Reissued => {
            let mut next = s.clone();
            next.stage = Stage::Reverting;
            next.history.push((Stage::Reverting, now));
            Ok(Transition::Record(next))
        }
        Some(s) => Ok(Transition::Discard {
            incoming: s.to.clone(),
        }),
        None => Err(stage_error(None, "abort")),
    }
}

/// The name of a retired CA's directory under `retired/`: when, whose fingerprint, and why.
pub fn retired_name(now: OffsetDateTime, sha256: &str, why: &str) -> String {
    let t = now.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z-{}-{why}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        sha256
            .replace(':', "")
            .to_lowercase()
            .chars()
            .take(12)
            .collect::<String>()
    )
}

/// The subject of an incoming CA: the mesh's CA name with the time, so that the two CAs a
/// rotation trusts side by side are told apart by name as well as by key.
pub fn incoming_ca_name(spec: &MeshSpec, now: OffsetDateTime) -> String {
    let t = now.to_offset(time::UtcOffset::UTC);
    format!(
        "cmesh {} CA {:04}-{:02}-{:02}T{:02}{:02}Z",
        spec.name,
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute()
    )
}

/// Where the rotation stands, for `pki rotate status` (and every rotate command's summary).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RotationReport {
    /// The rotation in progress (`None`: none).
    pub rotation: Option<RotationState>,
    /// When each stage was entered.
    pub history: Vec<StageTime>,
    /// The mesh CA (pki.dir's `ca.crt`).
    pub current: CertInfo,
    /// The incoming CA.
    pub incoming: Option<CertInfo>,
    /// Which issues the leaves now: `current` or `incoming`.
    pub issuer: &'static str,
    /// The leaf certificates of pki.dir by the CA that signed them: `current`, `incoming`,
    /// `other`.
    pub leaves: BTreeMap<&'static str, usize>,
    /// What to run next.
    pub next: String,
}

/// A stage and when it was entered.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StageTime {
    /// The stage.
    pub stage: Stage,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// The report for `files` (pki.dir, keys unread).
///
/// # Errors
/// [`PkiError`] for a missing or unreadable CA certificate or rotation state.
pub fn report(files: &PkiFiles) -> Result<RotationReport, PkiError> {
    let current_pem = text_of(files, super::store::CA_CERT)?.ok_or(PkiError::NoCa)?;
    let current = CertInfo::from_pem(&current_pem).map_err(|e| PkiError::InFile {
        file: super::store::CA_CERT.into(),
        source: Box::new(e),
    })?;
    let view = trust_view(files, &current_pem)?;
    let incoming = match &view.rotation {
        Some(_) => Some(CertInfo::from_pem(&view.trusted_pem[1])?),
        None => None,
    };
    let mut leaves = BTreeMap::new();
    for (path, bytes) in files {
        if !(path.starts_with("clusters/") && path.ends_with(".crt")) {
            continue;
        }
        let Ok(info) = CertInfo::from_pem(&String::from_utf8_lossy(bytes)) else {
            continue;
        };
        let by = if info.is_signed_by(&current) {
            "current"
        } else if incoming.as_ref().is_some_and(|i| info.is_signed_by(i)) {
            "incoming"
        } else {
            "other"
        };
        *leaves.entry(by).or_insert(0) += 1;
    }
    let issuer = match view.rotation.as_ref().map(|r| r.stage) {
        Some(Stage::Reissued) => "incoming",
        _ => "current",
    };
    let next = match &view.rotation {
        Some(r) => r.stage.next_step().to_owned(),
        None => "no rotation in progress; start one with `cmesh pki rotate begin`".to_owned(),
    };
    Ok(RotationReport {
        history: view
            .rotation
            .iter()
            .flat_map(|r| r.history.iter())
            .map(|(stage, at)| StageTime {
                stage: *stage,
                at: *at,
            })
            .collect(),
        rotation: view.rotation,
        current,
        incoming,
        issuer,
        leaves,
        next,
    })
}
