//! relink's own schema (SPEC §1): creation and numbered upgrades, and the
//! modes and statuses of run records as types matching the schema's
//! CHECKs. `runs` holds the run records and the checkpoint saved with each
//! chunk; `control` the operator's pauses and what a run waits for. The
//! ledger and rejects are written by `sink` and `removal`, read by the
//! reader (`source`), `verify` and `status`; `mark_pending` is shared by
//! both writers.

mod control;
mod runs;
pub mod stored;

use anyhow::{bail, Context as _, Result};
use serde::Serialize;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, GenericClient};

use crate::config::Names;
use crate::db;
use crate::text_enum::text_enum;

pub use control::{current_pause, pause, resume, set_waiting, Pause};
pub use runs::{
    abandon_unfinished, finish_run, last_success, list_runs, load_run, record_chunk, resumable,
    resume_run, start_run, RunRecord,
};
pub use stored::StoredId;

/// What a run record is for (`runs.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Run,
    Purge,
    Repair,
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

// Spelled exactly as the schema's CHECK constraints do.
text_enum!(Mode "run mode" {
    Run = "run",
    Purge = "purge",
    Repair = "repair",
});
text_enum!(RunStatus "run status" {
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

/// The state schema version this release writes and understands.
pub const SCHEMA_VERSION: i64 = 7;
/// Version 1, created idempotently.
const SCHEMA_SQL: &str = include_str!("../../sql/state/schema.sql");
/// Numbered upgrades from version 1, applied in order, each once.
const UPGRADES: &[(i64, &str)] = &[
    (2, include_str!("../../sql/state/upgrade/002_control.sql")),
    (
        3,
        include_str!("../../sql/state/upgrade/003_compact_ledger.sql"),
    ),
    (
        4,
        include_str!("../../sql/state/upgrade/004_user_order.sql"),
    ),
    (5, include_str!("../../sql/state/upgrade/005_repair.sql")),
    (
        6,
        include_str!("../../sql/state/upgrade/006_narrow_indexes.sql"),
    ),
    (
        7,
        include_str!("../../sql/state/upgrade/007_compact_rows.sql"),
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
        // A new schema is made at the current version in this transaction
        // (version 1, then every upgrade): nothing to tell the operator
        // about upgrades then, only that it was created.
        let existed: bool = tx
            .query_one(
                "SELECT to_regclass(format('%s.meta', $1::text)) IS NOT NULL",
                &[&names.state],
            )
            .await?
            .get(0);
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
        }
        tx.commit().await?;
        if !existed {
            tracing::info!(
                "created relink's state schema {:?} (version {SCHEMA_VERSION})",
                names.state_raw
            );
        } else if version < SCHEMA_VERSION {
            tracing::info!(
                "upgraded relink's state schema {:?} from version {version} to version {SCHEMA_VERSION}",
                names.state_raw
            );
        }
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

/// Whether the ledger has no row at all (read through its view, which a
/// role granted the views alone may read).
///
/// # Errors
/// On a database error.
pub async fn ledger_is_empty(client: &impl GenericClient, names: &Names) -> Result<bool> {
    let row = client
        .query_one(
            &names.sql("SELECT NOT EXISTS (SELECT 1 FROM {state}.ledger)"),
            &[],
        )
        .await
        .context("cannot read the ledger")?;
    Ok(row.get(0))
}

/// Marks profiles pending (`users` and `profiles`: text arrays of their
/// user ids and ids, pair by pair): their ledger rows lose the fingerprint,
/// so the next run plans them again. For a chunk whose plan superseded a
/// profile's older row, and for purged profiles.
///
/// # Errors
/// On a database error; the caller says what it was doing.
pub async fn mark_pending(
    client: &impl GenericClient,
    names: &Names,
    users: &(dyn ToSql + Sync),
    profiles: &(dyn ToSql + Sync),
) -> Result<u64, tokio_postgres::Error> {
    client
        .execute(
            &names.sql(
                "UPDATE {state}.ledger l SET fingerprint = NULL
                   FROM unnest($1::text[], $2::text[]) AS u(user_id, profile_id)
                  WHERE l.user_id = u.user_id AND l.profile_id = u.profile_id
                    AND l.fingerprint IS NOT NULL",
            ),
            &[users, profiles],
        )
        .await
}

/// Deletes the rejects of profiles (`users` and `profiles`, pair by pair,
/// as for [`mark_pending`]): replanned ones get new rejects, purged ones
/// theirs when replanned.
///
/// # Errors
/// On a database error; the caller says what it was doing.
pub async fn clear_rejects(
    client: &impl GenericClient,
    names: &Names,
    users: &(dyn ToSql + Sync),
    profiles: &(dyn ToSql + Sync),
) -> Result<u64, tokio_postgres::Error> {
    client
        .execute(
            &names.sql(
                "DELETE FROM {state}.rejects r
                  USING unnest($1::text[], $2::text[]) AS u(user_id, profile_id)
                  WHERE r.user_id = u.user_id AND r.profile_id = u.profile_id",
            ),
            &[users, profiles],
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The values a CHECK constraint of the schema allows for `column`, as
    /// the latest upgrade that sets one says.
    fn check_values(column: &str) -> Vec<String> {
        let pattern = format!("CHECK ({column} IN (");
        let sql = UPGRADES
            .iter()
            .rev()
            .map(|(_, sql)| *sql)
            .chain([SCHEMA_SQL])
            .find(|sql| sql.contains(&pattern))
            .expect("a CHECK for the column");
        let start = sql.rfind(&pattern).expect("a CHECK for the column") + pattern.len();
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
            assert_eq!(status.as_str().parse::<RunStatus>().ok(), Some(status));
        }
        assert!("paused".parse::<RunStatus>().is_err());
    }
}
