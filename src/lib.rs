//! relink: migrates `profiles."socialLinks"` into `profile_links`.
//!
//! Data flows one way: `source` (keyset pages) → `legacy` (JSON shapes) →
//! `classify` (URL rules) → `plan` (dedupe, order, ids) → `sink` (COPY,
//! ledger, checkpoint) or `report` (dry run). The middle three are pure and
//! shared by every command through `pipeline`.

pub mod cli;
pub mod commands;
pub mod config;
pub mod db;
pub mod lock;
pub mod pipeline;
pub mod plan;
pub mod preflight;
pub mod progress;
pub mod report;
pub mod shutdown;
pub mod sink;
pub mod source;
pub mod state;

use std::process::ExitCode;

use anyhow::Result;

use crate::cli::{Cli, Command};
use crate::config::{Common, PurgeConfig, RunConfig};

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

/// Exit codes (SPEC §10).
pub mod exit {
    pub const FATAL: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const INVARIANT: u8 = 3;
    pub const LOCKED: u8 = 4;
    pub const INTERRUPTED: u8 = crate::shutdown::EXIT_INTERRUPTED;
}

/// Runs a parsed command line and maps the result to the exit code.
pub async fn main(cli: Cli) -> ExitCode {
    match dispatch(cli).await {
        Ok(Outcome::Done) => ExitCode::SUCCESS,
        Ok(Outcome::Invariant) => ExitCode::from(exit::INVARIANT),
        Ok(Outcome::Interrupted) => ExitCode::from(exit::INTERRUPTED),
        Err(err) if is_broken_pipe(&err) => {
            // `relink run --dry-run | head`: the reader went away; not an error.
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("relink: error: {err:#}");
            if err.downcast_ref::<lock::LockHeld>().is_some() {
                ExitCode::from(exit::LOCKED)
            } else if err.downcast_ref::<config::UsageError>().is_some() {
                ExitCode::from(exit::USAGE)
            } else {
                ExitCode::from(exit::FATAL)
            }
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain()
        .filter_map(|e| e.downcast_ref::<std::io::Error>())
        .any(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}

async fn dispatch(cli: Cli) -> Result<Outcome> {
    let shutdown = shutdown::Shutdown::install();
    let common = Common::from_args(&cli.global).map_err(config::usage)?;
    match &cli.command {
        Command::Run(args) => {
            let cfg = RunConfig::from_args(args).map_err(config::usage)?;
            commands::run::run(&common, &cfg, shutdown).await
        }
        Command::Purge(args) => {
            let cfg = PurgeConfig::from_args(args).map_err(config::usage)?;
            commands::purge::purge(&common, &cfg, shutdown).await
        }
        Command::Verify(args) => commands::verify::verify(&common, args, shutdown).await,
        Command::Status(args) => commands::status::status(&common, args).await,
        Command::Generate(args) => commands::generate::generate(&common, args).await,
    }
}
