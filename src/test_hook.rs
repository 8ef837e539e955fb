//! A hook for the test suite, inert in production: with
//! `RELINK_TEST_STOP_AT=<point>` (e.g. `ledger`, or `ledger@3` for the
//! third time that point is reached) relink stops itself (SIGSTOP) just
//! before that statement of a chunk's transaction, once (or, at `exit`,
//! once it gave its lock back, before it exits; at `census`, before a
//! rerun's census query). The test then
//! ends relink's session the way production does — `pg_terminate_backend`,
//! or the server's `idle_in_transaction_session_timeout` while relink is
//! stopped — and continues it (SIGCONT): the statement meets a session the
//! server ended, and the chunk must be retried (SPEC §6 "Sessions the
//! server ends are replaced"). A stop rather than a sleep: it is what an
//! operator's Ctrl-Z or a paused VM does.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use crate::text_enum::text_enum;

/// The environment variable naming the point (hidden from `--help`: it is
/// for tests).
pub const STOP_AT: &str = "RELINK_TEST_STOP_AT";

/// The statements of a chunk's transaction, in order, and the command's
/// exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// The chunk's set-up (its timestamp, `synchronous_commit`), after BEGIN.
    SetUp,
    /// The lock phase (`lock_phase`).
    LockPhase,
    /// The users' rows, read under the lock.
    ContextRead,
    /// COPY into `profile_links` (purge and repair: their change).
    CopyLinks,
    Ledger,
    Rejects,
    /// The run's counters and checkpoint.
    Checkpoint,
    Commit,
    /// Not a chunk's: the command is about to give its lock back.
    Release,
    /// Not a chunk's: the command gave its lock back and is about to exit.
    Exit,
    /// Not a chunk's: a rerun's census query, on the reader's connection
    /// (`source::Reader::expect`).
    Census,
}

text_enum!(Point "stop point" {
    SetUp = "set-up",
    LockPhase = "lock-phase",
    ContextRead = "context-read",
    CopyLinks = "copy-links",
    Ledger = "ledger",
    Rejects = "rejects",
    Checkpoint = "checkpoint",
    Commit = "commit",
    Release = "release",
    Exit = "exit",
    Census = "census",
});

/// The point and on which visit to stop, from the environment.
fn target() -> Option<(Point, u32)> {
    static TARGET: OnceLock<Option<(Point, u32)>> = OnceLock::new();
    *TARGET.get_or_init(|| {
        let text = std::env::var(STOP_AT).ok()?;
        let (point, nth) = text.split_once('@').unwrap_or((&text, "1"));
        match (point.parse::<Point>(), nth.parse::<u32>()) {
            (Ok(point), Ok(nth)) if nth > 0 => Some((point, nth)),
            _ => {
                tracing::warn!("ignoring {STOP_AT}={text:?}: expected <point>[@<n>]");
                None
            }
        }
    })
}

/// Relink is about to run the statement at `point`: stops the process if
/// the test asked for it here (it goes on at SIGCONT).
pub fn reached(point: Point) {
    static VISITS: AtomicU32 = AtomicU32::new(0);
    let Some((target, nth)) = target() else {
        return;
    };
    if point != target || VISITS.fetch_add(1, Ordering::SeqCst) + 1 != nth {
        return;
    }
    eprintln!("relink: test hook: stopping before {point}");
    // kill(1): the crate forbids `unsafe`, so no `libc::raise`. Sent to
    // this thread's id: the kernel then has this very thread (waiting for
    // kill to exit) take the signal and stop the process before it goes
    // on; sent to the process, another thread may take it, and on a busy
    // machine this one would run on for a few milliseconds first.
    let target = std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|link| link.file_name().map(|t| t.to_string_lossy().into_owned()))
        .unwrap_or_else(|| std::process::id().to_string());
    let stopped = std::process::Command::new("kill")
        .args(["-STOP", &target])
        .status();
    if let Err(e) = stopped {
        tracing::warn!("test hook: cannot stop: {e}");
    }
}

/// The environment variable that caps a census (see
/// `source::Reader::expect`) below its production size, so that a test can
/// run the same rerun down both reading paths (hidden from `--help`: it is
/// for tests).
pub const CENSUS_MOST: &str = "RELINK_TEST_CENSUS_MOST";

/// `default`, or the test's cap from [`CENSUS_MOST`].
pub fn census_most(default: u64) -> u64 {
    static MOST: OnceLock<Option<u64>> = OnceLock::new();
    MOST.get_or_init(|| std::env::var(CENSUS_MOST).ok()?.parse().ok())
        .unwrap_or(default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_round_trip() {
        for point in Point::ALL {
            assert_eq!(point.as_str().parse::<Point>(), Ok(point));
        }
        assert!("nowhere".parse::<Point>().is_err());
    }
}
