//! Test support for cmesh's end-to-end tests: running the real binary in a scratch directory
//! with a controlled environment, and redacting output for snapshots.

pub mod cli;
pub mod etcd;
pub mod kube_api;
pub mod lab;
pub mod live;
pub mod mesh;
pub mod tools;
