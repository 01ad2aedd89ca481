//! The host layer: the machine cmesh runs on, outside its own files and the clusters. The
//! lab's tools on PATH and its state file ([`lab`]), the process's signals ([`signals`]), and
//! what git says of the user's work tree ([`git`]).

pub(crate) mod git;
pub(crate) mod lab;
pub(crate) mod signals;
