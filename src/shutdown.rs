//! SIGINT/SIGTERM: the first asks the work to stop after the chunk in flight
//! (checkpoint saved, exit 130) and wakes every throttle that is waiting; a
//! second aborts at once (the open transaction rolls back on the server,
//! the next run resumes).
//!
//! The process's one cancellation mechanism is a [`CancellationToken`]: the
//! signal cancels the root, and a command that must also stop for its own
//! reasons (a failed writer) cancels a [`Shutdown::child`] of it, which a
//! signal cancels too.

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// Exit code after a signal (SPEC §10).
pub const EXIT_INTERRUPTED: u8 = 130;

#[derive(Clone)]
pub struct Shutdown {
    requested: CancellationToken,
}

impl Shutdown {
    /// Installs the signal handlers.
    pub fn install() -> Self {
        let requested = CancellationToken::new();
        let token = requested.clone();
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
                if token.is_cancelled() {
                    eprintln!("relink: second signal, aborting now; the open chunk rolls back and the next run resumes");
                    std::process::exit(i32::from(EXIT_INTERRUPTED));
                }
                token.cancel();
                eprintln!(
                    "relink: stopping after the current chunk (signal again to abort at once)"
                );
            }
        });
        Self { requested }
    }

    /// A handle that is never signalled (tests, library callers).
    pub fn never() -> Self {
        Self {
            requested: CancellationToken::new(),
        }
    }

    /// Whether a signal asked the work to stop.
    pub fn requested(&self) -> bool {
        self.requested.is_cancelled()
    }

    /// A token cancelled by a signal, and by whoever holds it: how one
    /// command stops all its tasks for a reason of its own.
    pub fn child(&self) -> CancellationToken {
        self.requested.child_token()
    }
}
