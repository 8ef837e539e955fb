//! Every way a command ends (SPEC §10): the [`Outcome`] of a command that did
//! not fail, and the exit code of each outcome and error.

use std::process::ExitCode;

use crate::config::UsageError;
use crate::db::LockHeld;

/// How a command ended, when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Exit 0.
    Done,
    /// `verify` found a violated invariant: exit 3.
    Invariant,
    /// Stopped by a signal after saving the checkpoint: exit 130.
    Interrupted,
}

/// Done (rejected legacy values are reported, not errors).
pub const DONE: u8 = 0;
/// A fatal error (message on stderr, checkpoint saved where one applies).
pub const FATAL: u8 = 1;
/// A bad command line.
pub const USAGE: u8 = 2;
/// `verify` found a violated invariant.
pub const INVARIANT: u8 = 3;
/// Another run or purge holds the lock.
pub const LOCKED: u8 = 4;
/// Interrupted by a signal after saving the checkpoint.
pub const INTERRUPTED: u8 = crate::shutdown::EXIT_INTERRUPTED;

/// The exit code of a command's result; prints a fatal error on stderr.
pub fn code(result: anyhow::Result<Outcome>) -> ExitCode {
    let code = match result {
        Ok(Outcome::Done) => DONE,
        Ok(Outcome::Invariant) => INVARIANT,
        Ok(Outcome::Interrupted) => INTERRUPTED,
        // `relink run --dry-run | head`: the reader went away; not an error.
        Err(err) if is_broken_pipe(&err) => DONE,
        Err(err) => {
            eprintln!("relink: error: {err:#}");
            if err.downcast_ref::<LockHeld>().is_some() {
                LOCKED
            } else if err.downcast_ref::<UsageError>().is_some() {
                USAGE
            } else {
                FATAL
            }
        }
    };
    ExitCode::from(code)
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain()
        .filter_map(|e| e.downcast_ref::<std::io::Error>())
        .any(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}
