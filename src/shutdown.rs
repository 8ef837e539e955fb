//! SIGINT/SIGTERM: the first asks the work to stop after the chunk in flight
//! (checkpoint saved, exit 130); a second aborts at once (the open
//! transaction rolls back on the server, the next run resumes).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::signal::unix::{signal, SignalKind};

/// Exit code after a signal (SPEC §10).
pub const EXIT_INTERRUPTED: u8 = 130;

#[derive(Clone, Default)]
pub struct Shutdown {
    requested: Arc<AtomicBool>,
}

impl Shutdown {
    /// Installs the signal handlers.
    pub fn install() -> Self {
        let shutdown = Self::default();
        let flag = shutdown.requested.clone();
        tokio::spawn(async move {
            let (Ok(mut int), Ok(mut term)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) else {
                tracing::warn!("cannot install signal handlers; Ctrl-C will abort without saving");
                return;
            };
            loop {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
                if flag.swap(true, Ordering::SeqCst) {
                    eprintln!("relink: second signal, aborting now; the open chunk rolls back and the next run resumes");
                    std::process::exit(i32::from(EXIT_INTERRUPTED));
                }
                eprintln!(
                    "relink: stopping after the current chunk (signal again to abort at once)"
                );
            }
        });
        shutdown
    }

    pub fn requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }
}
