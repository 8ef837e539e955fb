//! `relink status`: runs (latest first), the checkpoint and progress of an
//! unfinished run, the ledger, rejects by reason, and who holds the lock.
//! Read-only; works before any run.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{Context as _, Result};
use serde::Serialize;
use serde_json::json;

use super::Context;
use crate::cli::OutputFormat;
use crate::config::StatusConfig;
use crate::db::preflight::{self, Access};
use crate::db::{self, lock, Session};
use crate::exit::Outcome;
use crate::plan::Counters;
use crate::source::{count_with_legacy, Order};
use crate::state::{self, Mode, Pause, RunRecord, RunStatus};

#[derive(Debug, Serialize)]
struct Unfinished {
    run_id: i64,
    mode: Mode,
    status: RunStatus,
    checkpoint: Option<String>,
    /// What the checkpoint's key names: `user` (its `"userId"`), or
    /// `profile` for a run an earlier release began in profile id order,
    /// or `plan record` for a run applying a plan (`run --plan`).
    checkpoint_of: &'static str,
    profiles_done: u64,
    /// Profiles with legacy links up to the checkpoint, of all of them.
    position: u64,
    total: u64,
    /// The command that resumes it.
    resume_with: String,
}

#[derive(Debug, Serialize)]
struct Ledger {
    profiles: i64,
    rows: i64,
    links: i64,
}

#[derive(Debug, Serialize)]
struct Status {
    state_schema: String,
    runs: Vec<RunRecord>,
    unfinished: Option<Unfinished>,
    ledger: Option<Ledger>,
    rejects: BTreeMap<String, i64>,
    lock_holder: Option<String>,
    /// `relink pause` in force (SPEC §13).
    pause: Option<Pause>,
}

/// # Errors
/// On a database error.
pub async fn status(cx: &Context, args: &StatusConfig) -> Result<Outcome> {
    let names = &cx.common.names;
    let session = Session::new("status", &cx.common, None, true);
    let client = db::connect(&cx.database, &session).await?;
    preflight::command_start(&client, &cx.database, names, &session, Access::Read).await?;
    let lock_holder = lock::holder(&client, names).await?;
    let mut status = Status {
        state_schema: names.state_raw.clone(),
        runs: Vec::new(),
        unfinished: None,
        ledger: None,
        rejects: BTreeMap::new(),
        lock_holder,
        pause: None,
    };
    if state::exists(&client, names).await? {
        status.pause = state::current_pause(&client, names).await?;
        status.runs = state::list_runs(&client, names, args.runs).await?;
        // A run recorded as running while nobody holds the lock was killed.
        if status.lock_holder.is_none() {
            for run in &mut status.runs {
                if run.status == RunStatus::Running {
                    run.status = RunStatus::Interrupted;
                    run.waiting = None;
                    run.waiting_since = None;
                    run.error.get_or_insert_with(|| {
                        "process gone (killed?); the next run resumes it".to_owned()
                    });
                }
            }
        }
        if let Some(run) = status.runs.iter().find(|r| r.status.is_unfinished()) {
            let order = Order::of_run(&run.options);
            // An apply's checkpoint is a plan record's number (see `apply`),
            // and its total the plan's records.
            let plan_records = run.options["plan"]["records"].as_u64();
            let total = match plan_records {
                Some(records) => records,
                None => count_with_legacy(&client, names, order, None, None).await?,
            };
            let position = match (&run.checkpoint, plan_records) {
                (Some(c), Some(_)) => c.parse().unwrap_or(0),
                (Some(c), None) => count_with_legacy(&client, names, order, None, Some(c)).await?,
                (None, _) => 0,
            };
            status.unfinished = Some(Unfinished {
                run_id: run.id,
                mode: run.mode,
                status: run.status,
                checkpoint: run.checkpoint.clone(),
                checkpoint_of: if plan_records.is_some() {
                    "plan record"
                } else {
                    order.noun()
                },
                profiles_done: Counters::from_flat(&run.counters).profiles_planned,
                position,
                total,
                resume_with: match run.options["plan"]["path"].as_str() {
                    Some(plan) => format!("relink run --plan {plan}"),
                    None => format!("relink {}", run.mode),
                },
            });
        }
        let row = client
            .query_one(
                &names.sql(
                    "SELECT count(DISTINCT profile_id), count(*), coalesce(sum(cardinality(link_keys)), 0)::bigint FROM {state}.ledger",
                ),
                &[],
            )
            .await
            .context("cannot read the ledger size")?;
        status.ledger = Some(Ledger {
            profiles: row.get(0),
            rows: row.get(1),
            links: row.get(2),
        });
        for row in client
            .query(
                &names.sql(
                    "SELECT reason, count(*) FROM {state}.rejects GROUP BY reason ORDER BY reason",
                ),
                &[],
            )
            .await
            .context("cannot count rejects")?
        {
            status.rejects.insert(row.get(0), row.get(1));
        }
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.format == OutputFormat::Json {
        serde_json::to_writer(&mut out, &status)?;
        writeln!(out)?;
    } else {
        print_text(&status, &mut out)?;
    }
    Ok(Outcome::Done)
}

fn print_text(s: &Status, out: &mut impl Write) -> std::io::Result<()> {
    match &s.lock_holder {
        Some(holder) => writeln!(out, "Lock: held by {holder}")?,
        None => writeln!(out, "Lock: free (no run or purge in progress)")?,
    }
    if let Some(p) = &s.pause {
        writeln!(
            out,
            "Paused: by {} since {}{}; every run and purge waits before its next chunk. `relink resume` lifts it.",
            p.paused_by,
            p.paused_at,
            p.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
        )?;
    }
    if s.ledger.is_none() {
        writeln!(
            out,
            "No runs yet (state schema {:?} does not exist).",
            s.state_schema
        )?;
        return Ok(());
    }
    if let Some(u) = &s.unfinished {
        let pct = if u.total == 0 {
            100.0
        } else {
            u.position as f64 * 100.0 / u.total as f64
        };
        writeln!(
            out,
            "Unfinished: {} {} is {}; checkpoint after {} {}; {} profiles done; {}/{} profiles with legacy links behind the checkpoint ({pct:.1}%). `{}` resumes it.",
            u.mode,
            u.run_id,
            u.status,
            u.checkpoint_of,
            u.checkpoint.as_deref().unwrap_or("(none yet)"),
            u.profiles_done,
            u.position,
            u.total,
            u.resume_with,
        )?;
    }
    writeln!(out, "Runs (latest first):")?;
    if s.runs.is_empty() {
        writeln!(out, "  none")?;
    }
    for r in &s.runs {
        let c = Counters::from_flat(&r.counters);
        writeln!(
            out,
            "  {:>4}  {:<5}  {:<11}  started {}  {}  profiles {}  links {}  rejects {}  ({}, pid {})",
            r.id,
            r.mode,
            r.status,
            r.started_at,
            r.finished_at.as_deref().map_or_else(|| "not finished".to_owned(), |f| format!("finished {f}")),
            c.profiles_planned,
            c.links_created,
            c.rejected(),
            r.host,
            r.pid
        )?;
        if let Some(err) = &r.error {
            writeln!(out, "        {err}")?;
        }
        if let Some(waiting) = &r.waiting {
            writeln!(
                out,
                "        waiting since {}: {waiting}",
                r.waiting_since.as_deref().unwrap_or("?")
            )?;
        }
        if r.mode == Mode::Purge {
            let removed = r.counters.get("links_deleted").cloned().unwrap_or(json!(0));
            writeln!(out, "        links deleted: {removed}")?;
        }
    }
    if let Some(l) = &s.ledger {
        writeln!(
            out,
            "Ledger: {} profiles, {} rows, {} links created by relink",
            l.profiles, l.rows, l.links
        )?;
    }
    if s.rejects.is_empty() {
        writeln!(out, "Rejects: none")?;
    } else {
        writeln!(out, "Rejects by reason:")?;
        for (reason, n) in &s.rejects {
            writeln!(out, "  {reason:<14} {n}")?;
        }
    }
    Ok(())
}
