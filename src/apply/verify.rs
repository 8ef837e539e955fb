//! `relink verify --plan FILE` (SPEC §15): how the database stands against
//! a plan, record by record, with the apply's own rules (`judge`): applied
//! (done by an apply of this plan, or settled as it would have), drifted
//! (an apply would not write it now, and why), or pending (an apply would
//! write it as planned). Read-only, streaming, chunks of `--page-size`
//! records. The plan's integrity is checked first, as an apply does; its
//! database and age are shown, not enforced (verifying an old plan is
//! allowed: it is how one reviews what became of it).

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{Context as _, Result};
use serde_json::json;

use super::commit::{judge_all, replan};
use super::current;
use super::judge::{Drift, Verdict};
use crate::cli::OutputFormat;
use crate::config::VerifyConfig;
use crate::context::Context;
use crate::db::preflight::{self, Access};
use crate::db::{self, Session};
use crate::exit::Outcome;
use crate::plan_file::{self, PlanReader, Stamp};
use crate::shutdown::Shutdown;
use crate::state;

/// How many drifted profiles are listed.
const EXAMPLES: usize = 20;

/// # Errors
/// On a database error, or a plan that cannot be read or is damaged.
pub async fn verify_plan(
    cx: &Context,
    cfg: &VerifyConfig,
    path: &std::path::Path,
    shutdown: Shutdown,
) -> Result<Outcome> {
    let names = &cx.common.names;
    let session = Session::new("verify", &cx.common, None, true);
    let client = db::connect(&cx.database, &session).await?;
    preflight::command_start(&client, &cx.database, names, &session, Access::Read).await?;
    let owned = path.to_owned();
    let plan = tokio::task::spawn_blocking(move || plan_file::open(&owned))
        .await
        .context("the plan check failed")??;
    let here = Stamp::of(&client).await?;
    let with_ledger = state::exists(&client, names).await?;
    let plan_runs: Vec<i64> = if with_ledger {
        client
            .query(
                &names.sql(
                    "SELECT id FROM {state}.runs WHERE mode = 'run' AND options->'plan'->>'id' = $1",
                ),
                &[&plan.id],
            )
            .await
            .context("cannot list the runs that applied this plan")?
            .iter()
            .map(|r| r.get(0))
            .collect()
    } else {
        Vec::new()
    };
    let (mut applied, mut pending) = (0u64, 0u64);
    let mut drifted: BTreeMap<Drift, u64> = BTreeMap::new();
    let mut examples = Vec::new();
    let mut reader = PlanReader::new(&plan)?;
    let mut chunk = Vec::with_capacity(cfg.page_size);
    loop {
        if shutdown.requested() {
            return Ok(Outcome::Interrupted);
        }
        chunk.clear();
        while chunk.len() < cfg.page_size {
            match reader.next_record()? {
                Some(record) => chunk.push(record),
                None => break,
            }
        }
        if chunk.is_empty() {
            break;
        }
        let locked = current::peek(&client, names, &chunk).await?;
        let now = current::read(&client, names, &chunk, with_ledger).await?;
        let mut judged = judge_all(&chunk, &locked, &now, &plan_runs);
        drop(replan(&mut judged, &chunk, &now.rows));
        for (record, verdict) in chunk.iter().zip(&judged.verdicts) {
            match verdict {
                Verdict::Applied => applied += 1,
                Verdict::Apply => pending += 1,
                Verdict::Drifted(drift) => {
                    *drifted.entry(*drift).or_default() += 1;
                    if examples.len() < EXAMPLES {
                        examples.push(
                            json!({"record": record.index, "profile_id": record.profile_id,
                                             "user_id": record.user_id, "drift": drift}),
                        );
                    }
                }
            }
        }
    }
    let drifted_total: u64 = drifted.values().sum();
    let other_database = plan.header.database != here.origin;
    let failed = cfg.strict && (drifted_total > 0 || pending > 0);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if cfg.format == OutputFormat::Json {
        serde_json::to_writer(
            &mut out,
            &json!({
                "plan": path.display().to_string(),
                "created_at": plan.header.created_at,
                "database": plan.header.database,
                "other_database": other_database,
                "records": plan.header.records,
                "applied": applied,
                "drifted": drifted_total,
                "drift": drifted.iter().map(|(d, n)| (d.as_str(), *n)).collect::<BTreeMap<_, _>>(),
                "pending": pending,
                "examples": examples,
                "ok": !failed,
            }),
        )?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "Plan {} (made {} on {:?}, {} profiles)",
            path.display(),
            plan.header.created_at,
            plan.header.database.name,
            plan.header.records
        )?;
        if other_database {
            writeln!(
                out,
                "  note: the plan was made on another database than this one ({:?})",
                here.origin.name
            )?;
        }
        writeln!(out, "  {:<40} {applied:>12}", "applied")?;
        writeln!(
            out,
            "  {:<40} {drifted_total:>12}",
            "drifted (not applied as planned)"
        )?;
        for (drift, n) in &drifted {
            writeln!(out, "    {:<38} {n:>12}", drift.describe())?;
        }
        writeln!(
            out,
            "  {:<40} {pending:>12}",
            "pending (`relink run --plan` applies them)"
        )?;
        for e in &examples {
            writeln!(
                out,
                "  - profile of user {} (record {}): {}",
                e["user_id"].as_str().unwrap_or_default(),
                e["record"],
                e["drift"].as_str().unwrap_or_default()
            )?;
        }
        writeln!(out, "{}", if failed { "FAILED" } else { "OK" })?;
    }
    out.flush()?;
    Ok(if failed {
        Outcome::Invariant
    } else {
        Outcome::Done
    })
}
