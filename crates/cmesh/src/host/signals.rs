//! Ctrl-C and SIGTERM for the commands that write files (render, pki, init): the first signal
//! is recorded and the command stops at its next safe point (between two files, before the
//! tree swap), cleans up its temporaries and exits 130 (SIGINT) or 143 (SIGTERM), as shells
//! expect; a second signal exits at once (what is half-written is a temporary that the next
//! run removes). Live commands handle signals themselves (`test` cleans up the clusters).

use std::sync::atomic::{AtomicI32, Ordering};

/// The first signal received (0: none).
static RECEIVED: AtomicI32 = AtomicI32::new(0);

const SIGINT: i32 = 2;
const SIGTERM: i32 = 15;

/// Starts listening. Signals that arrive before this returns have their default effect.
pub(crate) fn install() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    // Registering inside the runtime's context installs the handlers now, on this thread, so
    // no signal is missed between here and the listener thread's start.
    let streams = {
        let _guard = rt.enter();
        match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(i), Ok(t)) => (i, t),
            _ => return,
        }
    };
    std::thread::spawn(move || {
        let (mut int, mut term) = streams;
        rt.block_on(async move {
            loop {
                let sig = tokio::select! {
                    _ = int.recv() => SIGINT,
                    _ = term.recv() => SIGTERM,
                };
                if RECEIVED
                    .compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst)
                    .is_err()
                {
                    std::process::exit(128 + sig);
                }
            }
        });
    });
}

/// True once a signal was received.
pub(crate) fn interrupted() -> bool {
    RECEIVED.load(Ordering::SeqCst) != 0
}

/// The exit code for the signal received: 130 for SIGINT, 143 for SIGTERM.
pub(crate) fn exit_code() -> u8 {
    match RECEIVED.load(Ordering::SeqCst) {
        SIGTERM => crate::errors::exit::TERMINATED,
        _ => crate::errors::exit::INTERRUPTED,
    }
}
