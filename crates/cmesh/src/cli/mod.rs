//! The command line's grammar: clap's types for every command and flag, and nothing that runs
//! them (that is `commands`, which reads these types).

mod args;

pub(crate) use args::*;
