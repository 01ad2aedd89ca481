//! Smoke test of the lab (temporary while the live tests move onto it).

use std::path::Path;

use integration_tests::mesh::{Mesh, MeshOptions};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_cmesh-under-test"))
}

#[test]
fn two_clusters_apply_then_status() {
    let Some(m) = Mesh::start(&MeshOptions::new(2, "1.20.0")) else {
        return;
    };
    let r = m.apply(bin(), &[]);
    eprintln!("{}\n{}", r.stdout, r.stderr);
    for i in 0..2 {
        m.lab
            .kubelet(i)
            .wait_running(
                &["etcd", "apiserver", "kvstoremesh"],
                std::time::Duration::from_secs(60),
            )
            .unwrap_or_else(|e| panic!("{e}\n{}", m.lab.logs(40)));
    }
    std::thread::sleep(std::time::Duration::from_secs(
        std::env::var("LAB_HOLD")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(10),
    ));
    let r = m.cmesh(bin(), &["status"]);
    eprintln!("{}\n{}", r.stdout, r.stderr);
    eprintln!("{}", m.lab.logs(25));
    panic!("look");
}
