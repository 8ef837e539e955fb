//! The purging edge (SPEC §8): what relink created, as the ledger records
//! it, deleted chunk by chunk together with the ledger's bookkeeping; and
//! the preview of the same for `purge --dry-run`.
//!
//! Ledger bookkeeping per purged profile: deleted ids leave their ledger row
//! (a row left empty is deleted); ids of rows kept because edited, or
//! already deleted by the user, stay, so `run` never re-creates them; and
//! every remaining ledger row of the profile gets a blank fingerprint, so
//! the profile is pending again.

use std::io::Write;

use anyhow::{Context as _, Result};
use serde::Serialize;
use tokio_postgres::GenericClient;

use crate::config::Names;
use crate::db::{Keyset, Pager};
use crate::state;

/// What a purge removes: the links of one run or of all, with or without
/// rows users edited since.
#[derive(Debug, Clone, Copy)]
pub struct Scope {
    pub run: Option<i64>,
    pub include_edited: bool,
}

/// Scope of a purge: `$1` the chunk's profile ids, `$2` the run id or NULL.
/// `x` is each link id the ledger row records.
const SCOPE: &str = "SELECT l.profile_id, l.run_id, x.id, l.migrated_at
                       FROM {state}.ledger l CROSS JOIN LATERAL unnest(l.link_ids) AS x(id)
                      WHERE l.profile_id = ANY($1) AND ($2::bigint IS NULL OR l.run_id = $2)";

/// Figures of a purge.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PurgeCounters {
    pub profiles: u64,
    pub links_deleted: u64,
    pub kept_edited: u64,
    pub already_gone: u64,
}

impl PurgeCounters {
    pub fn merge(&mut self, o: &Self) {
        self.profiles += o.profiles;
        self.links_deleted += o.links_deleted;
        self.kept_edited += o.kept_edited;
        self.already_gone += o.already_gone;
    }
}

/// Keyset pages of the profiles the ledger has in `scope` (`$3`: the run).
/// A page walks the ledger's primary key: no DISTINCT (a profile with rows
/// of several runs appears once per run and is deduplicated by the caller),
/// which without statistics on a fresh ledger was planned as a scan of the
/// whole table per page.
pub fn profiles(names: &Names, page_size: usize) -> Pager {
    Pager::new(
        "the ledger",
        |keyset: Keyset| {
            names.sql(&format!(
                "SELECT profile_id FROM {{state}}.ledger
                  WHERE {} AND ($3::bigint IS NULL OR run_id = $3)
                  ORDER BY profile_id LIMIT $2",
                keyset.condition("profile_id")
            ))
        },
        None,
        page_size,
    )
}

/// Links the ledger records in `scope`.
///
/// # Errors
/// On a database error.
pub async fn links_in_scope(
    client: &impl GenericClient,
    names: &Names,
    scope: &Scope,
) -> Result<u64> {
    let n: i64 = client
        .query_one(
            &names.sql(
                "SELECT coalesce(sum(cardinality(link_ids)), 0)::bigint FROM {state}.ledger
                  WHERE ($1::bigint IS NULL OR run_id = $1)",
            ),
            &[&scope.run],
        )
        .await
        .context("cannot count the links in the ledger")?
        .get(0);
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Deletes a chunk's unedited migrated rows and updates the ledger, in the
/// caller's transaction. The purge's progress is recorded on its run.
///
/// # Errors
/// On a database error (the caller rolls back and may retry).
pub async fn purge_chunk(
    tx: &impl GenericClient,
    names: &Names,
    profiles: &[String],
    scope: &Scope,
    run_id: i64,
) -> Result<PurgeCounters> {
    // The chunk's recorded links, then one statement over them passed as
    // arrays: its row estimate is small, so every lookup is an index probe
    // (a join against the ledger could be planned as a scan of the table).
    let rows = tx
        .query(
            &names.sql(
                "SELECT x.id, l.profile_id, l.migrated_at
                   FROM {state}.ledger l CROSS JOIN LATERAL unnest(l.link_ids) AS x(id)
                  WHERE l.profile_id = ANY($1) AND ($2::bigint IS NULL OR l.run_id = $2)",
            ),
            &[&profiles, &scope.run],
        )
        .await
        .context("cannot read the ledger")?;
    let ids: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    let owners: Vec<String> = rows.iter().map(|r| r.get(1)).collect();
    let times: Vec<std::time::SystemTime> = rows.iter().map(|r| r.get(2)).collect();
    // One statement, one snapshot: what is kept because edited (compared at
    // the column's millisecond precision: both are TIMESTAMP(3)), and the
    // delete itself.
    let row = tx
        .query_one(
            &names.sql(
                "WITH scope AS (SELECT * FROM unnest($1::text[], $2::text[], $3::timestamp[]) AS s(id, profile_id, migrated_at)),
                      edited AS (SELECT count(*) AS n FROM scope s JOIN {app}.profile_links pl
                                   ON pl.id = s.id AND pl.\"profileId\" = s.profile_id
                                WHERE NOT $4 AND pl.\"updatedAt\" > s.migrated_at),
                      deleted AS (DELETE FROM {app}.profile_links pl USING scope s
                                   WHERE pl.id = s.id AND pl.\"profileId\" = s.profile_id
                                     AND ($4 OR pl.\"updatedAt\" <= s.migrated_at)
                                  RETURNING pl.id)
                 SELECT (SELECT n FROM edited), coalesce((SELECT array_agg(id) FROM deleted), '{}'::text[])",
            ),
            &[&ids, &owners, &times, &scope.include_edited],
        )
        .await
        .context("cannot delete migrated rows")?;
    let in_scope = i64::try_from(ids.len()).unwrap_or(i64::MAX);
    let edited: i64 = row.get(0);
    let deleted: Vec<String> = row.get(1);
    tx.execute(
        &names.sql(
            "UPDATE {state}.ledger l
                SET link_ids = k.ids, link_keys = k.keys
               FROM (SELECT l.profile_id, l.run_id,
                            coalesce(array_agg(x.id ORDER BY x.n) FILTER (WHERE x.id <> ALL($3)), '{}') AS ids,
                            coalesce(array_agg(x.key ORDER BY x.n) FILTER (WHERE x.id <> ALL($3)), '{}') AS keys
                       FROM {state}.ledger l
                       LEFT JOIN LATERAL unnest(l.link_ids, l.link_keys) WITH ORDINALITY AS x(id, key, n) ON true
                      WHERE l.profile_id = ANY($1) AND ($2::bigint IS NULL OR l.run_id = $2)
                      GROUP BY l.profile_id, l.run_id) k
              WHERE l.profile_id = k.profile_id AND l.run_id = k.run_id",
        ),
        &[&profiles, &scope.run, &deleted],
    )
    .await
    .context("cannot update the ledger")?;
    tx.execute(
        &names.sql(
            "DELETE FROM {state}.ledger
              WHERE profile_id = ANY($1) AND ($2::bigint IS NULL OR run_id = $2) AND cardinality(link_ids) = 0",
        ),
        &[&profiles, &scope.run],
    )
    .await
    .context("cannot delete ledger rows")?;
    // The profiles are pending again; their rejects come back when replanned.
    tx.execute(
        &names.sql("DELETE FROM {state}.rejects WHERE profile_id = ANY($1)"),
        &[&profiles],
    )
    .await
    .context("cannot clear the rejects of purged profiles")?;
    tx.execute(
        &names.sql("UPDATE {state}.ledger SET fingerprint = '' WHERE profile_id = ANY($1) AND fingerprint <> ''"),
        &[&profiles],
    )
    .await
    .context("cannot mark purged profiles pending")?;
    let counters = PurgeCounters {
        profiles: profiles.len() as u64,
        links_deleted: deleted.len() as u64,
        kept_edited: u64::try_from(edited).unwrap_or(0),
        already_gone: u64::try_from(in_scope - edited)
            .unwrap_or(0)
            .saturating_sub(deleted.len() as u64),
    };
    let last = profiles.last().map(String::as_str);
    let flat = serde_json::to_value(&counters)?;
    state::record_chunk(tx, names, run_id, last, &flat).await?;
    Ok(counters)
}

/// `--dry-run`: lists what a purge of the chunk would delete; writes nothing.
///
/// # Errors
/// On a database error, or when `out` cannot be written.
pub async fn preview_chunk(
    client: &impl GenericClient,
    names: &Names,
    profiles: &[String],
    scope: &Scope,
    out: &mut impl Write,
    quiet: bool,
) -> Result<PurgeCounters> {
    let rows = client
        .query(
            &names.sql(&format!(
                "WITH scope AS ({SCOPE})
                 SELECT s.id, s.run_id, pl.\"userId\", pl.label, pl.type, pl.url,
                        pl.id IS NOT NULL AS present, coalesce(pl.\"updatedAt\" > s.migrated_at, false) AS edited
                   FROM scope s LEFT JOIN {{app}}.profile_links pl ON pl.id = s.id AND pl.\"profileId\" = s.profile_id
                  ORDER BY s.profile_id, s.run_id"
            )),
            &[&profiles, &scope.run],
        )
        .await
        .context("cannot read the rows a purge would delete")?;
    let mut c = PurgeCounters {
        profiles: profiles.len() as u64,
        ..PurgeCounters::default()
    };
    for r in &rows {
        let present: bool = r.get(6);
        let edited: bool = r.get(7);
        if !present {
            c.already_gone += 1;
        } else if edited && !scope.include_edited {
            c.kept_edited += 1;
        } else {
            c.links_deleted += 1;
            if !quiet {
                writeln!(
                    out,
                    "[DRY RUN] Would delete {} (run {}) of user {}: {} ({}): {}",
                    r.get::<_, String>(0),
                    r.get::<_, i64>(1),
                    r.get::<_, String>(2),
                    r.get::<_, String>(3),
                    r.get::<_, String>(4),
                    r.get::<_, String>(5)
                )?;
            }
        }
    }
    Ok(c)
}
