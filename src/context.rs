//! What every command is given: the settings all commands share and the
//! databases the command line names. Above `config` and `db`, below the
//! commands and the phases they share (`drive`, `apply`).

use anyhow::{Context as _, Result};

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
