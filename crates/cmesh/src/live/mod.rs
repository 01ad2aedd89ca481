//! The live layer: everything that talks to running clusters and their endpoints. It may open
//! sockets, run `helm` and exec into pods, always within a deadline; it never decides. What to
//! change, and what an observation means, comes from `cmesh_core` (`apply`, `status`, `probe`,
//! `meshtest`); these modules gather the observations and carry the plans out.
//!
//! - [`kube`]: connecting to one cluster's API server and the reads and writes the others need.
//! - [`helm`]: the helm binary (`upgrade --install`, `get values`, `list`).
//! - [`apply`], [`plan`], [`status`], [`meshtest`], [`probe`]: one per live command.

pub(crate) mod apply;
pub(crate) mod helm;
pub(crate) mod kube;
pub(crate) mod meshtest;
pub(crate) mod plan;
pub(crate) mod probe;
pub(crate) mod status;
