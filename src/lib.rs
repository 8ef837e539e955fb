//! relink: migrates `profiles."socialLinks"` into `profile_links`.
//!
//! Data flows one way: `source` (keyset pages, the feed) → `chunk` (context,
//! then the pure planning core in `plan`) → `sink` (COPY, ledger, checkpoint,
//! one transaction per chunk) or `report` (dry run). `throttle` is the seam
//! every chunk passes before it begins; `checkpoint` tracks what committed;
//! `removal` is purge's edge and `repair` repair's (both after the lock
//! phase of `lock_phase`, which every chunk that writes the application's
//! rows begins with); `db` holds the mechanics every command shares
//! (sessions, retry, pager, lock, preflight); `state` is relink's own schema;
//! `progress` and `metrics` (`--metrics-file`) show a run while it goes.

pub mod apply;
pub mod checkpoint;
pub mod chunk;
pub mod cli;
pub mod commands;
pub mod config;
pub mod context;
pub mod db;
pub mod drive;
pub mod exit;
pub mod forecast;
pub mod inflight;
pub mod lock_phase;
pub mod metrics;
pub mod plan;
pub mod plan_file;
pub mod progress;
pub mod removal;
pub mod repair;
pub mod report;
pub mod shutdown;
pub mod sink;
pub mod sizing;
pub mod source;
pub mod state;
pub mod test_hook;
pub mod text_enum;
pub mod throttle;

use std::process::ExitCode;

use anyhow::Result;

use crate::cli::{Cli, Command};
use crate::commands::Context;
use crate::config::{
    usage, Common, GenerateConfig, PurgeConfig, RepairConfig, RunConfig, StatusConfig, VerifyConfig,
};
use crate::exit::Outcome;

/// Runs a parsed command line and maps the result to the exit code.
pub async fn main(cli: Cli) -> ExitCode {
    exit::code(dispatch(cli).await)
}

/// Checks the whole configuration of the command (exit 2 when bad), then
/// runs it.
async fn dispatch(cli: Cli) -> Result<Outcome> {
    let shutdown = shutdown::Shutdown::install();
    let common = Common::from_args(&cli.global).map_err(usage)?;
    let cx = Context::new(common, cli.global.database_url.as_deref()).map_err(usage)?;
    match &cli.command {
        Command::Run(args) => {
            let cfg = RunConfig::from_args(args).map_err(usage)?;
            let cx = cx.with_replicas(&cfg.gates).map_err(usage)?;
            if cfg.dry_run {
                commands::dry_run::dry_run(&cx, &cfg, shutdown).await
            } else if let Some(plan) = &cfg.plan.apply {
                apply::apply(&cx, &cfg, plan, shutdown).await
            } else {
                commands::run::run(&cx, &cfg, shutdown).await
            }
        }
        Command::Purge(args) => {
            let cfg = PurgeConfig::from_args(args).map_err(usage)?;
            let cx = cx.with_replicas(&cfg.walk.gates).map_err(usage)?;
            commands::purge::purge(&cx, &cfg, shutdown).await
        }
        Command::Repair(args) => {
            let cfg = RepairConfig::from_args(args).map_err(usage)?;
            let cx = cx.with_replicas(&cfg.walk.gates).map_err(usage)?;
            commands::repair::repair(&cx, &cfg, shutdown).await
        }
        Command::Verify(args) => {
            let cfg = VerifyConfig::from_args(args).map_err(usage)?;
            match &cfg.plan {
                Some(plan) => apply::verify::verify_plan(&cx, &cfg, plan, shutdown).await,
                None => commands::verify::verify(&cx, &cfg, shutdown).await,
            }
        }
        Command::Status(args) => {
            let cfg = StatusConfig::from_args(args).map_err(usage)?;
            commands::status::status(&cx, &cfg).await
        }
        Command::Pause(args) => commands::pause::pause(&cx, args.reason.as_deref()).await,
        Command::Resume => commands::pause::resume(&cx).await,
        Command::Generate(args) => {
            let cfg = GenerateConfig::from_args(args).map_err(usage)?;
            commands::generate::generate(&cx, &cfg).await
        }
    }
}
