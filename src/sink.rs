//! The writing edge of a live run: one chunk's rows, ledger, rejects and
//! checkpoint in ONE transaction, so a crash leaves all of a chunk or none.
//! Rows go in with binary COPY: one round trip per table, not per row.

use std::time::SystemTime;

use anyhow::{Context as _, Result};
use futures_util::pin_mut;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Transaction;

use crate::config::Names;
use crate::pipeline::Planned;
use crate::plan::SkipReason;

/// Longest raw value kept in the rejects table, in bytes; the full value
/// stays untouched in `"socialLinks"`.
const MAX_RAW_BYTES: usize = 4096;

/// The transaction timestamp as `TIMESTAMP(3)` in UTC (see `db::Session`):
/// what the rows get as `"createdAt"`/`"updatedAt"` and the ledger as
/// `migrated_at`, so purge can compare them exactly.
///
/// # Errors
/// On a database error.
pub async fn transaction_time(tx: &Transaction<'_>) -> Result<SystemTime> {
    Ok(tx
        .query_one("SELECT localtimestamp(3)", &[])
        .await
        .context("cannot read the transaction time")?
        .get(0))
}

/// Inserts a chunk's planned rows, ledger rows and rejects.
///
/// # Errors
/// On a database error (the caller rolls back and may retry).
pub async fn write_chunk(
    tx: &Transaction<'_>,
    names: &Names,
    run_id: i64,
    now: SystemTime,
    chunk: &[Planned<'_>],
) -> Result<()> {
    copy_links(tx, names, now, chunk).await?;
    copy_ledger(tx, names, run_id, now, chunk).await?;
    replace_rejects(tx, names, run_id, chunk).await
}

async fn copy_links(
    tx: &Transaction<'_>,
    names: &Names,
    now: SystemTime,
    chunk: &[Planned<'_>],
) -> Result<()> {
    if chunk.iter().all(|p| p.plan.links.is_empty()) {
        return Ok(());
    }
    let types = [
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::INT4,
        Type::TIMESTAMP,
        Type::TIMESTAMP,
    ];
    let writer = copy_in(tx, names, "{app}.profile_links (id, \"userId\", \"profileId\", label, url, type, position, \"createdAt\", \"updatedAt\")", &types).await?;
    pin_mut!(writer);
    for planned in chunk {
        for link in &planned.plan.links {
            let row: [&(dyn ToSql + Sync); 9] = [
                &link.id,
                &planned.profile.user_id,
                &planned.profile.id,
                &link.label,
                &link.url,
                &link.link_type.as_str(),
                &link.position,
                &now,
                &now,
            ];
            writer
                .as_mut()
                .write(&row)
                .await
                .context("cannot COPY into profile_links")?;
        }
    }
    writer
        .finish()
        .await
        .context("cannot finish COPY into profile_links")?;
    Ok(())
}

async fn copy_ledger(
    tx: &Transaction<'_>,
    names: &Names,
    run_id: i64,
    now: SystemTime,
    chunk: &[Planned<'_>],
) -> Result<()> {
    let types = [
        Type::TEXT,
        Type::INT8,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT_ARRAY,
        Type::TEXT_ARRAY,
        Type::TEXT_ARRAY,
        Type::TIMESTAMP,
    ];
    let writer = copy_in(tx, names, "{state}.ledger (profile_id, run_id, user_id, fingerprint, link_ids, link_keys, existing_keys, migrated_at)", &types).await?;
    pin_mut!(writer);
    for planned in chunk {
        let ids: Vec<&str> = planned.plan.links.iter().map(|l| l.id.as_str()).collect();
        let keys: Vec<&str> = planned.plan.links.iter().map(|l| l.key.as_str()).collect();
        let existing: Vec<&str> = planned
            .plan
            .skipped
            .iter()
            .filter(|s| s.reason == SkipReason::Existing)
            .filter_map(|s| s.link_key.as_deref())
            .collect();
        let row: [&(dyn ToSql + Sync); 8] = [
            &planned.profile.id,
            &run_id,
            &planned.profile.user_id,
            &planned.profile.fingerprint,
            &ids,
            &keys,
            &existing,
            &now,
        ];
        writer
            .as_mut()
            .write(&row)
            .await
            .context("cannot COPY into the ledger")?;
    }
    writer
        .finish()
        .await
        .context("cannot finish COPY into the ledger")?;
    Ok(())
}

/// Rejects hold the latest planning of each profile: older rows of the
/// chunk's replanned profiles are replaced (purge removes those of the
/// profiles it makes pending).
async fn replace_rejects(
    tx: &Transaction<'_>,
    names: &Names,
    run_id: i64,
    chunk: &[Planned<'_>],
) -> Result<()> {
    let replanned: Vec<&str> = chunk
        .iter()
        .filter(|p| p.replanned)
        .map(|p| p.profile.id.as_str())
        .collect();
    if !replanned.is_empty() {
        tx.execute(
            &names.sql("DELETE FROM {state}.rejects WHERE profile_id = ANY($1)"),
            &[&replanned],
        )
        .await
        .context("cannot clear earlier rejects")?;
    }
    if chunk.iter().all(|p| p.plan.rejects().next().is_none()) {
        return Ok(());
    }
    let types = [Type::INT8, Type::TEXT, Type::TEXT, Type::TEXT, Type::TEXT];
    let writer = copy_in(
        tx,
        names,
        "{state}.rejects (run_id, profile_id, source_key, raw_value, reason)",
        &types,
    )
    .await?;
    pin_mut!(writer);
    for planned in chunk {
        for reject in planned.plan.rejects() {
            let key = reject.key.as_deref().map(storable);
            let raw = storable(truncate(&reject.raw, MAX_RAW_BYTES));
            let row: [&(dyn ToSql + Sync); 5] = [
                &run_id,
                &planned.profile.id,
                &key,
                &raw,
                &reject.reason.as_str(),
            ];
            writer
                .as_mut()
                .write(&row)
                .await
                .context("cannot COPY into rejects")?;
        }
    }
    writer
        .finish()
        .await
        .context("cannot finish COPY into rejects")?;
    Ok(())
}

/// Starts a binary COPY into `target` (`table (columns)`, with `{app}` /
/// `{state}` placeholders) whose columns have `types`.
async fn copy_in(
    tx: &Transaction<'_>,
    names: &Names,
    target: &str,
    types: &[Type],
) -> Result<BinaryCopyInWriter> {
    let sql = names.sql(&format!("COPY {target} FROM STDIN (FORMAT binary)"));
    let sink = tx
        .copy_in(&sql)
        .await
        .with_context(|| format!("cannot start COPY into {target}"))?;
    Ok(BinaryCopyInWriter::new(sink, types))
}

/// PostgreSQL text cannot hold NUL (a double-encoded value can): replace it.
fn storable(text: &str) -> String {
    text.replace('\0', "\u{FFFD}")
}

/// At most `max` bytes, cut on a character boundary.
pub fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
