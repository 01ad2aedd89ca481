//! The cmesh binary, built inside this crate so its tests can run it as users do.

fn main() -> std::process::ExitCode {
    cmesh::main()
}
