//! The lab's git host as a process ([`integration_tests::gitserver`]), for stories whose
//! clients run inside a network namespace: `lab-git ROOT ADDRESS` serves `ROOT/git` (smart
//! HTTP) and `ROOT/charts` on ADDRESS (e.g. 127.0.0.1:8090 in that namespace) until killed.

use std::sync::atomic::{AtomicBool, AtomicUsize};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, root, addr] = args.as_slice() else {
        eprintln!("usage: lab-git ROOT ADDRESS");
        std::process::exit(2);
    };
    let listener = std::net::TcpListener::bind(addr).unwrap_or_else(|e| {
        eprintln!("lab-git: bind {addr}: {e}");
        std::process::exit(1);
    });
    listener.set_nonblocking(true).expect("nonblocking");
    eprintln!("lab-git: serving {root} on http://{addr}");
    integration_tests::gitserver::accept_loop(
        &listener,
        std::path::Path::new(root),
        &AtomicBool::new(false),
        &AtomicUsize::new(0),
    );
}
