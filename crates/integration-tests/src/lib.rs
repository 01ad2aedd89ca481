//! Test support for cmesh's end-to-end tests: running the real binary in a scratch directory
//! with a controlled environment, real etcd servers with TLS, and the lab (real Kubernetes
//! control planes with kwok, the real Cilium chart and Cilium's clustermesh components).

pub mod argocd;
pub mod browser;
pub mod cli;
pub mod etcd;
pub mod flux;
pub mod gitserver;
pub mod lab;
pub mod mesh;
pub mod platform;
pub mod tools;
