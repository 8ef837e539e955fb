//! relink's own schema (SPEC §1): creation and versioning, run records, their
//! modes and statuses (as types matching the schema's CHECKs) and the
//! checkpoint saved with each chunk. The ledger and rejects are written by
//! `sink` and read by `chunk`, `purge` and `verify`.

use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Context as _, Result};
use serde::Serialize;
use serde_json::Value;
use tokio_postgres::{Client, GenericClient};

use crate::config::Names;
use crate::db::{self, Owner};

/// What a run record is for (`runs.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Run,
    Purge,
}

/// Where a run record stands (`runs.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Running,
    Completed,
    /// Stopped at `--limit`; the next run continues it.
    Partial,
    /// Stopped by a signal (or killed: `running` with nobody holding the lock).
    Interrupted,
    Failed,
    /// Left behind by `--restart`.
    Abandoned,
}

/// Spells the enums exactly as the schema's CHECK constraints do.
macro_rules! text_enum {
    ($ty:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        impl $ty {
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl FromStr for $ty {
            type Err = anyhow::Error;

            fn from_str(text: &str) -> Result<Self> {
                match text {
                    $($text => Ok(Self::$variant),)+
                    other => bail!("unknown {} {other:?} in the state schema", stringify!($ty)),
                }
            }
        }
    };
}

text_enum!(Mode { Run = "run", Purge = "purge" });
text_enum!(RunStatus {
    Running = "running",
    Completed = "completed",
    Partial = "partial",
    Interrupted = "interrupted",
    Failed = "failed",
    Abandoned = "abandoned",
});

impl RunStatus {
    /// Statuses of a run the next `run`/`purge` of its mode resumes.
    pub const UNFINISHED: [Self; 4] = [
        Self::Running,
        Self::Interrupted,
        Self::Failed,
        Self::Partial,
    ];

    pub fn is_unfinished(self) -> bool {
        Self::UNFINISHED.contains(&self)
    }
}

fn unfinished_texts() -> Vec<&'static str> {
    RunStatus::UNFINISHED.iter().map(|s| s.as_str()).collect()
}

/// The state schema version this release writes and understands.
pub const SCHEMA_VERSION: i64 = 3;
/// Version 1, created idempotently.
const SCHEMA_SQL: &str = include_str!("../sql/state/schema.sql");
/// Numbered upgrades from version 1, applied in order, each once.
const UPGRADES: &[(i64, &str)] = &[
    (2, include_str!("../sql/state/upgrade/002_control.sql")),
    (
        3,
        include_str!("../sql/state/upgrade/003_compact_ledger.sql"),
    ),
];
/// Key of the transaction-level advisory lock that serializes schema
/// creation and upgrades ("RLNS"), so `pause` (which runs beside a live
/// run) and a starting run never create or upgrade at the same time.
const SCHEMA_LOCK: i64 = 0x524C_4E53;

/// Creates the state schema, or upgrades it to [`SCHEMA_VERSION`], in one
/// transaction: a failure leaves it as it was.
///
/// # Errors
/// When the role may not create it (with what to do), or it was written by
/// a newer release.
pub async fn ensure_schema(client: &mut Client, names: &Names) -> Result<()> {
    let result = async {
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
            .await?;
        tx.batch_execute(&names.sql(SCHEMA_SQL)).await?;
        let version: String = tx
            .query_one(
                &names.sql("SELECT value FROM {state}.meta WHERE key = 'schema_version'"),
                &[],
            )
            .await?
            .get(0);
        let version = version.parse::<i64>().unwrap_or(i64::MAX);
        if version > SCHEMA_VERSION {
            return Ok(Some(version));
        }
        for (to, sql) in UPGRADES.iter().filter(|(to, _)| *to > version) {
            tx.batch_execute(&names.sql(sql))
                .await
                .with_context(|| format!("cannot upgrade the state schema to version {to}"))?;
            tx.execute(
                &names.sql("UPDATE {state}.meta SET value = $1 WHERE key = 'schema_version'"),
                &[&to.to_string()],
            )
            .await?;
            tracing::info!(
                "upgraded relink's state schema {:?} to version {to}",
                names.state_raw
            );
        }
        tx.commit().await?;
        Ok::<_, anyhow::Error>(None)
    }
    .await;
    match result {
        Ok(None) => Ok(()),
        Ok(Some(version)) => bail!(
            "state schema {:?} has version {version}, newer than this relink understands ({SCHEMA_VERSION}): use a newer relink",
            names.state_raw
        ),
        Err(err) if db::is_permission_denied(&err) => Err(err.context(format!(
            "permission denied creating relink's state schema {:?}: a live run needs a role that may CREATE in the database and INSERT into the application's tables (a dry run needs only SELECT)",
            names.state_raw
        ))),
        Err(err) => Err(err.context(format!(
            "cannot create or upgrade relink's state schema {:?}",
            names.state_raw
        ))),
    }
}

/// Whether the state schema exists (dry run, verify and status only read it).
///
/// # Errors
/// On a database error.
pub async fn exists(client: &impl GenericClient, names: &Names) -> Result<bool> {
    // The catalog, not to_regclass: a role without USAGE on the schema may
    // still learn that it exists (and then gets a clear permission error).
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c
                              JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                             WHERE n.nspname = $1 AND c.relname = 'ledger')",
            &[&names.state_raw],
        )
        .await
        .context("cannot look for relink's state schema")?;
    Ok(row.get(0))
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
/// killed; interrupted; failed; or stopped by --limit), to be resumed.
///
/// # Errors
/// On a database error.
pub async fn resumable(client: &Client, names: &Names, mode: Mode) -> Result<Option<RunRecord>> {
    let sql = names.sql(&format!(
        "SELECT {RUN_COLUMNS} FROM {{state}}.runs r
          WHERE mode = $1 AND status = ANY($2)
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
    tx.execute(
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
        &[&run_id, &checkpoint, counters],
    )
    .await
    .context("cannot save the checkpoint")?;
    Ok(())
}

/// A pause in force (SPEC §13): who holds every run and purge, since when, why.
#[derive(Debug, Clone, Serialize)]
pub struct Pause {
    pub id: i64,
    pub paused_at: String,
    pub paused_by: String,
    pub reason: Option<String>,
}

const PAUSE_COLUMNS: &str =
    "id, to_char(paused_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS \"UTC\"'), paused_by, reason";

fn pause_record(row: &tokio_postgres::Row) -> Pause {
    Pause {
        id: row.get(0),
        paused_at: row.get(1),
        paused_by: row.get(2),
        reason: row.get(3),
    }
}

/// The pause in force, if any (none before the schema has a pauses table).
///
/// # Errors
/// On a database error.
pub async fn current_pause(client: &impl GenericClient, names: &Names) -> Result<Option<Pause>> {
    let has_table: bool = client
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[&format!("{}.pauses", names.state)],
        )
        .await
        .context("cannot look for relink's pauses table")?
        .get(0);
    if !has_table {
        return Ok(None);
    }
    let row = client
        .query_opt(
            &names.sql(&format!(
                "SELECT {PAUSE_COLUMNS} FROM {{state}}.pauses WHERE resumed_at IS NULL"
            )),
            &[],
        )
        .await
        .context("cannot read the pause flag")?;
    Ok(row.as_ref().map(pause_record))
}

/// Records a pause by `who`, unless one is in force already: the pause in
/// force, and whether it is the one just recorded.
///
/// # Errors
/// On a database error.
pub async fn pause(
    client: &impl GenericClient,
    names: &Names,
    who: &str,
    reason: Option<&str>,
) -> Result<(Pause, bool)> {
    let row = client
        .query_opt(
            &names.sql(&format!(
                "INSERT INTO {{state}}.pauses (paused_by, reason) VALUES ($1, $2)
                 ON CONFLICT ((true)) WHERE resumed_at IS NULL DO NOTHING
                 RETURNING {PAUSE_COLUMNS}"
            )),
            &[&who, &reason],
        )
        .await
        .context("cannot record the pause")?;
    if let Some(row) = row {
        return Ok((pause_record(&row), true));
    }
    let current = current_pause(client, names)
        .await?
        .context("the pause in force was lifted meanwhile; run `relink pause` again")?;
    Ok((current, false))
}

/// Lifts the pause in force, by `who`: the pause lifted, if there was one.
///
/// # Errors
/// On a database error.
pub async fn resume(
    client: &impl GenericClient,
    names: &Names,
    who: &str,
) -> Result<Option<Pause>> {
    let row = client
        .query_opt(
            &names.sql(&format!(
                "UPDATE {{state}}.pauses SET resumed_at = now(), resumed_by = $1
                  WHERE resumed_at IS NULL RETURNING {PAUSE_COLUMNS}"
            )),
            &[&who],
        )
        .await
        .context("cannot lift the pause")?;
    Ok(row.as_ref().map(pause_record))
}

/// Records what run `id` is waiting for (`None`: it is not waiting).
///
/// # Errors
/// On a database error.
pub async fn set_waiting(
    client: &impl GenericClient,
    names: &Names,
    id: i64,
    waiting: Option<&str>,
) -> Result<()> {
    client
        .execute(
            &names.sql(
                "UPDATE {state}.runs SET waiting = $2,
                        waiting_since = CASE WHEN $2::text IS NULL THEN NULL
                                             WHEN waiting IS NULL THEN now() ELSE waiting_since END
                  WHERE id = $1",
            ),
            &[&id, &waiting],
        )
        .await
        .with_context(|| format!("cannot record what run {id} waits for"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The values a CHECK constraint of the schema allows for `column`.
    fn check_values(column: &str) -> Vec<String> {
        let sql = include_str!("../sql/state/schema.sql");
        let pattern = format!("CHECK ({column} IN (");
        let start = sql.find(&pattern).expect("a CHECK for the column") + pattern.len();
        let list = &sql[start..start + sql[start..].find(')').expect("closing parenthesis")];
        list.split(',')
            .map(|v| v.trim().trim_matches('\'').to_owned())
            .collect()
    }

    #[test]
    fn enums_match_the_schema_checks() {
        let modes: Vec<_> = Mode::ALL.iter().map(|m| m.as_str().to_owned()).collect();
        assert_eq!(modes, check_values("mode"));
        let statuses: Vec<_> = RunStatus::ALL
            .iter()
            .map(|s| s.as_str().to_owned())
            .collect();
        assert_eq!(statuses, check_values("status"));
        for status in RunStatus::ALL {
            assert_eq!(status.as_str().parse::<RunStatus>().ok(), Some(*status));
        }
        assert!("paused".parse::<RunStatus>().is_err());
    }
}
