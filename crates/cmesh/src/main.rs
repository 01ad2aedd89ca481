//! The `cmesh` binary: everything lives in the library so tests can drive the same code.

fn main() -> std::process::ExitCode {
    cmesh::main()
}
