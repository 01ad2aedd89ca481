//! Each peering as one cluster's agents see it (`k8s01 → k8s02: ready`), for pictures of the
//! mesh's state (`status -o mermaid|dot`). A peering is ready when every agent of the cluster
//! reports the peer ready, not ready when one reports it not ready or lacks it, and unknown when
//! the agents could not be asked or did not say.

use serde::Serialize;

use super::{Observed, parse};
use crate::spec::{Cluster, MeshSpec};

/// The state of one directed peering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum PeerState {
    /// Every agent reports the peer ready.
    Ready,
    /// An agent reports the peer not ready, or does not know it.
    NotReady,
    /// Nothing to judge by: the API server or the agents did not answer.
    Unknown,
}

/// One directed peering: what `from`'s agents report about `to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Peering {
    /// The cluster whose agents report.
    pub from: String,
    /// The peer.
    pub to: String,
    /// The state.
    pub state: PeerState,
    /// Why, in the agents' words where they gave any.
    pub reason: String,
}

/// The peerings of `cluster` to every other cluster of `spec`, from its observations.
pub fn peerings(spec: &MeshSpec, cluster: &Cluster, obs: &Observed) -> Vec<Peering> {
    let peers = super::peer_names(spec, cluster);
    let peering = |to: &str, state, reason: String| Peering {
        from: cluster.name.clone(),
        to: to.to_owned(),
        state,
        reason,
    };
    if let Err(e) = &obs.api {
        return peers
            .iter()
            .map(|p| {
                peering(
                    p,
                    PeerState::Unknown,
                    format!("API server unreachable: {e}"),
                )
            })
            .collect();
    }
    if obs.agent_reports.is_empty() {
        return peers
            .iter()
            .map(|p| peering(p, PeerState::Unknown, "no cilium agent pods found".into()))
            .collect();
    }
    peers
        .iter()
        .map(|p| {
            // The worst of what the agents say: not ready over unknown over ready.
            let mut state = PeerState::Ready;
            let mut reason = format!("{} agent(s) report it ready", obs.agent_reports.len());
            for a in &obs.agent_reports {
                let (s, why) = agent_view(a, p, peers.len());
                let worse = matches!(
                    (state, s),
                    (PeerState::Ready, PeerState::Unknown | PeerState::NotReady)
                        | (PeerState::Unknown, PeerState::NotReady)
                );
                if worse {
                    state = s;
                    reason = format!("{}: {why}", a.pod);
                }
            }
            peering(p, state, reason)
        })
        .collect()
}

/// What one agent says about `peer`.
fn agent_view(a: &super::AgentObs, peer: &str, peers: usize) -> (PeerState, String) {
    let text = match &a.status {
        Err(e) => return (PeerState::Unknown, e.clone()),
        Ok(t) => t,
    };
    let Some(s) = parse::cilium_status_any(text) else {
        return (
            PeerState::NotReady,
            "no ClusterMesh line in cilium status".into(),
        );
    };
    if let Some(c) = s.clusters.iter().find(|c| c.name == peer) {
        return if c.ready {
            (PeerState::Ready, c.state.clone())
        } else {
            (
                PeerState::NotReady,
                format!("{} {}", c.state, c.detail).trim().to_owned(),
            )
        };
    }
    if !s.clusters.is_empty() {
        // The agent lists clusters and this one is not among them.
        return (PeerState::NotReady, "not configured".into());
    }
    if s.ready == s.total && s.total as usize == peers {
        (
            PeerState::Ready,
            format!("{}/{} clusters ready", s.ready, s.total),
        )
    } else {
        // A summary without per-cluster lines cannot say which peer is not ready.
        (
            PeerState::Unknown,
            format!("{}/{} clusters ready, not said which", s.ready, s.total),
        )
    }
}
