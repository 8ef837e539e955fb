//! The subcommands: each wires the edges (`source`, `chunk`, `sink`,
//! `removal`, `repair`, `state`, `db`) around the planning core; none
//! imports another (what two share, like [`confirm`], is here, [`Context`]
//! in `crate::context`, and in `walk`: the ledger walk of `purge` and `repair`).

pub mod dry_run;
pub mod generate;
pub mod pause;
pub mod purge;
pub mod repair;
pub mod run;
pub mod status;
pub mod verify;
mod walk;

use std::io::{IsTerminal, Write};

use anyhow::{bail, Result};

pub use crate::context::Context;

/// Asks `question` on a terminal before a destructive command (`purge`,
/// `repair`); refuses without one. `what` names the command's action
/// (`purge`, `repair`), `how` what `--dry-run` shows.
///
/// # Errors
/// When stdin is not a terminal, or the answer is not yes.
pub(crate) fn confirm(question: &str, what: &str, how: &str, untouched: &str) -> Result<()> {
    if !std::io::stdin().is_terminal() {
        bail!("refusing to {what} without confirmation: stdin is not a terminal; pass --yes to {what}, or --dry-run to see {how}");
    }
    eprint!("{question}");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    if !matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
        bail!("{what} cancelled; {untouched}");
    }
    Ok(())
}
