//! The host layer: the machine cmesh runs on, outside its own files and the clusters. The
//! lab's tools on PATH and its state file ([`lab`]), and the process's signals ([`signals`]).

pub(crate) mod lab;
pub(crate) mod signals;
