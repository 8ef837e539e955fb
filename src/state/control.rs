//! Operator control (SPEC §13): `relink pause` and `resume` as rows of
//! `pauses`, and what a run is waiting for, for `status`.

use anyhow::{Context as _, Result};
use serde::Serialize;
use tokio_postgres::types::Type;
use tokio_postgres::GenericClient;

use crate::config::Names;

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
    // Checked before every chunk: typed queries, one round trip each.
    let has_table: bool = client
        .query_typed_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[(&format!("{}.pauses", names.state), Type::TEXT)],
        )
        .await
        .context("cannot look for relink's pauses table")?
        .get(0);
    if !has_table {
        return Ok(None);
    }
    let row = client
        .query_typed_opt(
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
