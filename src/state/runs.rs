//! Run records (`runs`): started, resumed, finished, listed; and the
//! counters and checkpoint each chunk adds inside its own transaction.

use anyhow::{Context as _, Result};
use serde::Serialize;
use serde_json::Value;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, GenericClient};

use super::{Mode, RunStatus};
use crate::config::Names;
use crate::db::Owner;

fn unfinished_texts() -> Vec<&'static str> {
    RunStatus::UNFINISHED.iter().map(|s| s.as_str()).collect()
}

/// A row of `runs`.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub id: i64,
    pub mode: Mode,
    pub status: RunStatus,
    pub checkpoint: Option<String>,
    pub counters: Value,
    pub options: Value,
    pub host: String,
    pub pid: i32,
    pub started_at: String,
    pub updated_at: String,
    pub finished_at: Option<String>,
    pub error: Option<String>,
    /// What the run is waiting for right now (SPEC §13), and since when.
    pub waiting: Option<String>,
    pub waiting_since: Option<String>,
}

/// Columns of a [`RunRecord`] from `{state}.runs r`. The columns of later
/// schema versions are read through `to_jsonb(r)`, so a read-only command
/// works on a schema a live run has not upgraded yet.
const RUN_COLUMNS: &str = "id, mode, status, checkpoint, counters, options, host, pid,
    to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS \"UTC\"'),
    to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS \"UTC\"'),
    to_char(finished_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS \"UTC\"'), error,
    to_jsonb(r)->>'waiting',
    to_char((to_jsonb(r)->>'waiting_since')::timestamptz AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS \"UTC\"')";

fn run_record(row: &tokio_postgres::Row) -> Result<RunRecord> {
    Ok(RunRecord {
        id: row.get(0),
        mode: row.get::<_, String>(1).parse()?,
        status: row.get::<_, String>(2).parse()?,
        checkpoint: row.get(3),
        counters: row.get(4),
        options: row.get(5),
        host: row.get(6),
        pid: row.get(7),
        started_at: row.get(8),
        updated_at: row.get(9),
        finished_at: row.get(10),
        error: row.get(11),
        waiting: row.get(12),
        waiting_since: row.get(13),
    })
}

/// Runs, latest first.
///
/// # Errors
/// On a database error.
pub async fn list_runs(
    client: &impl GenericClient,
    names: &Names,
    limit: i64,
) -> Result<Vec<RunRecord>> {
    let sql = names.sql(&format!(
        "SELECT {RUN_COLUMNS} FROM {{state}}.runs r ORDER BY id DESC LIMIT $1"
    ));
    let rows = client
        .query(&sql, &[&limit])
        .await
        .context("cannot list runs")?;
    rows.iter().map(run_record).collect()
}

/// One run by id.
///
/// # Errors
/// On a database error.
pub async fn load_run(
    client: &impl GenericClient,
    names: &Names,
    id: i64,
) -> Result<Option<RunRecord>> {
    let sql = names.sql(&format!(
        "SELECT {RUN_COLUMNS} FROM {{state}}.runs r WHERE id = $1"
    ));
    let row = client
        .query_opt(&sql, &[&id])
        .await
        .with_context(|| format!("cannot load run {id}"))?;
    row.as_ref().map(run_record).transpose()
}

/// The latest unfinished run of `mode` (running with no live process, i.e.
/// killed; interrupted; failed; or stopped by --limit), to be resumed. Runs
/// applying a plan (`options.plan`) are resumed by applying that plan
/// again, never by a plain run (see `apply`).
///
/// # Errors
/// On a database error.
pub async fn resumable(client: &Client, names: &Names, mode: Mode) -> Result<Option<RunRecord>> {
    let sql = names.sql(&format!(
        "SELECT {RUN_COLUMNS} FROM {{state}}.runs r
          WHERE mode = $1 AND status = ANY($2) AND NOT (options ? 'plan')
          ORDER BY id DESC LIMIT 1"
    ));
    let row = client
        .query_opt(&sql, &[&mode.as_str(), &unfinished_texts()])
        .await
        .context("cannot look for an unfinished run")?;
    row.as_ref().map(run_record).transpose()
}

/// Marks unfinished runs of `mode` abandoned (`--restart`).
///
/// # Errors
/// On a database error.
pub async fn abandon_unfinished(client: &Client, names: &Names, mode: Mode) -> Result<u64> {
    client
        .execute(
            &names.sql(
                "UPDATE {state}.runs SET status = $2, finished_at = now(), updated_at = now()
                  WHERE mode = $1 AND status = ANY($3)",
            ),
            &[
                &mode.as_str(),
                &RunStatus::Abandoned.as_str(),
                &unfinished_texts(),
            ],
        )
        .await
        .context("cannot mark unfinished runs abandoned")
}

/// Starts a new run record.
///
/// # Errors
/// On a database error.
pub async fn start_run(
    client: &Client,
    names: &Names,
    mode: Mode,
    options: &Value,
    owner: &Owner,
) -> Result<i64> {
    let row = client
        .query_one(
            &names.sql(
                "INSERT INTO {state}.runs (mode, status, options, host, pid)
                 VALUES ($1, $2, $3, $4, $5) RETURNING id",
            ),
            &[
                &mode.as_str(),
                &RunStatus::Running.as_str(),
                options,
                &owner.host,
                &owner.pid,
            ],
        )
        .await
        .context("cannot record the new run")?;
    Ok(row.get(0))
}

/// Takes over an unfinished run for this process.
///
/// # Errors
/// On a database error.
pub async fn resume_run(client: &Client, names: &Names, id: i64, owner: &Owner) -> Result<()> {
    client
        .execute(
            &names.sql(
                "UPDATE {state}.runs SET status = $4, host = $2, pid = $3, updated_at = now(),
                        finished_at = NULL, error = NULL
                  WHERE id = $1",
            ),
            &[&id, &owner.host, &owner.pid, &RunStatus::Running.as_str()],
        )
        .await
        .with_context(|| format!("cannot resume run {id}"))?;
    Ok(())
}

/// Records how a run ended.
///
/// # Errors
/// On a database error.
pub async fn finish_run(
    client: &Client,
    names: &Names,
    id: i64,
    status: RunStatus,
    error: Option<&str>,
) -> Result<()> {
    client
        .execute(
            &names.sql(
                "UPDATE {state}.runs SET status = $2, error = $3, updated_at = now(), finished_at = now(),
                        waiting = NULL, waiting_since = NULL
                  WHERE id = $1",
            ),
            &[&id, &status.as_str(), &error],
        )
        .await
        .with_context(|| format!("cannot record the end of run {id}"))?;
    Ok(())
}

/// When the most recent `completed` run of `mode` finished, as Unix time
/// (for the metrics' last success, SPEC §14).
///
/// # Errors
/// On a database error.
pub async fn last_success(
    client: &impl GenericClient,
    names: &Names,
    mode: Mode,
) -> Result<Option<f64>> {
    let row = client
        .query_one(
            &names.sql(
                "SELECT extract(epoch FROM max(finished_at))::float8 FROM {state}.runs
                  WHERE mode = $1 AND status = $2",
            ),
            &[&mode.as_str(), &RunStatus::Completed.as_str()],
        )
        .await
        .context("cannot read when the last completed run finished")?;
    Ok(row.get(0))
}

/// Adds a chunk's counters to its run and moves the checkpoint forward (never
/// back: parallel writers may commit out of order), inside the chunk's
/// transaction. Counters are a flat JSON object of integers, summed
/// key by key in SQL so concurrent writers never lose an update.
///
/// # Errors
/// On a database error.
pub async fn record_chunk(
    tx: &impl GenericClient,
    names: &Names,
    run_id: i64,
    checkpoint: Option<&str>,
    counters: &Value,
) -> Result<()> {
    tx.execute_typed(
        &names.sql(
            "UPDATE {state}.runs r
                SET checkpoint = CASE WHEN r.checkpoint IS NULL OR $2 > r.checkpoint THEN $2 ELSE r.checkpoint END,
                    updated_at = now(),
                    counters = (SELECT coalesce(jsonb_object_agg(k, total), '{}'::jsonb)
                                  FROM (SELECT k, sum(v) AS total
                                          FROM (SELECT key AS k, value::numeric AS v FROM jsonb_each_text(r.counters)
                                                UNION ALL
                                                SELECT key, value::numeric FROM jsonb_each_text($3::jsonb)) s
                                         GROUP BY k) t)
              WHERE r.id = $1",
        ),
        &[
            (&run_id, Type::INT8),
            (&checkpoint, Type::TEXT),
            (counters, Type::JSONB),
        ],
    )
    .await
    .context("cannot save the checkpoint")?;
    Ok(())
}
