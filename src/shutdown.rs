//! SIGINT/SIGTERM: the first asks the work to stop after the chunk in flight
//! (checkpoint saved, exit 130) and wakes every throttle that is waiting; a
//! second aborts at once (the open transaction rolls back on the server,
//! the next run resumes).

use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

/// Exit code after a signal (SPEC §10).
pub const EXIT_INTERRUPTED: u8 = 130;

#[derive(Clone)]
pub struct Shutdown {
    requested: watch::Receiver<bool>,
}

impl Shutdown {
    /// Installs the signal handlers.
    pub fn install() -> Self {
        let (sender, requested) = watch::channel(false);
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
                if sender.send_replace(true) {
                    eprintln!("relink: second signal, aborting now; the open chunk rolls back and the next run resumes");
                    std::process::exit(i32::from(EXIT_INTERRUPTED));
                }
                eprintln!(
                    "relink: stopping after the current chunk (signal again to abort at once)"
                );
            }
        });
        Self { requested }
    }

    /// A handle that is never signalled (tests, library callers).
    pub fn never() -> Self {
        let (sender, requested) = watch::channel(false);
        // Dropping the sender freezes the value at false.
        drop(sender);
        Self { requested }
    }

    pub fn requested(&self) -> bool {
        *self.requested.borrow()
    }

    /// Sleeps `duration`, or less if a signal arrives: whether it slept the
    /// whole time.
    pub async fn sleep(&self, duration: Duration) -> bool {
        let mut requested = self.requested.clone();
        tokio::select! {
            () = tokio::time::sleep(duration) => !self.requested(),
            // Err: the sender is gone (no handlers), so no signal can come.
            Ok(_) = requested.wait_for(|stop| *stop) => false,
        }
    }
}
