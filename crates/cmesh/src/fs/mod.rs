//! The file system: every file cmesh reads or writes goes through here. Reading mesh.yaml
//! (`spec`) and pki.dir (`pki`), writing and comparing the output tree (`tree`), atomic writes
//! and safe removal (`atomic`), bounded reads of files cmesh did not write (`bounded`), the
//! locks that serialise runs (`lock`) and the named points where tests kill a run (`fault`).
//! The guarantees are listed in docs/ARCHITECTURE.md ("Guarantees").

pub(crate) mod atomic;
pub(crate) mod bounded;
pub(crate) mod fault;
pub(crate) mod lock;
pub(crate) mod pki;
pub(crate) mod spec;
pub(crate) mod tree;
