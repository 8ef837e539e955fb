//! The subcommands: each wires the edges (`source`, `chunk`, `sink`,
//! `removal`, `repair`, `state`, `db`) around the planning core; none
//! imports another (what two share, like [`Context`] and [`confirm`], is
//! here, and in `walk`: the ledger walk of `purge` and `repair`).

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

use anyhow::{bail, Context as _, Result};

use crate::config::{Common, GateConfig};
use crate::db::Database;

/// What every command is given: the settings all commands share, and the
/// databases the command line names, resolved (with libpq's rules) before
/// anything connects.
#[derive(Debug, Clone)]
pub struct Context {
    pub common: Common,
    /// Where to connect.
    pub database: Database,
    /// Each `--replica` of the command's gates (none for a command
    /// without gates).
    pub replicas: Vec<Database>,
}

impl Context {
    /// Resolves `url` (`--database-url`, `DATABASE_URL`; without one,
    /// libpq's environment).
    ///
    /// # Errors
    /// When the connection parameters cannot be used.
    pub fn new(common: Common, url: Option<&str>) -> Result<Self> {
        let database = Database::resolve(url, common.connect_timeout)?;
        Ok(Self {
            common,
            database,
            replicas: Vec::new(),
        })
    }

    /// With the gates' `--replica`s resolved.
    ///
    /// # Errors
    /// When one cannot be used.
    pub fn with_replicas(mut self, gates: &GateConfig) -> Result<Self> {
        self.replicas = gates
            .replicas
            .iter()
            .map(|url| {
                Database::resolve(Some(url), self.common.connect_timeout)
                    .context("invalid --replica")
            })
            .collect::<Result<_>>()?;
        Ok(self)
    }
}

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
