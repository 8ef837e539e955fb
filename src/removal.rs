//! The purging edge (SPEC §8): what relink created, as the ledger records
//! it, deleted chunk by chunk together with the ledger's bookkeeping; and
//! the preview of the same for `purge --dry-run`.
//!
//! The ledger records comparison keys; a row's id is UUID v5 of its
//! profile id and key (SPEC §5), computed here with the planner's own
//! `link_id`. Ledger bookkeeping per purged profile: deleted keys leave
//! their ledger row (a row left without keys is deleted); keys of rows kept
//! because edited, or already deleted by the user, stay, so `run` never
//! re-creates them; and the profile's remaining rows lose their
//! fingerprint, so the profile is pending again.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::time::SystemTime;

use anyhow::{Context as _, Result};
use serde::Serialize;
use tokio_postgres::GenericClient;

use crate::config::Names;
use crate::db::{Keyset, Pager};
use crate::plan::link_id;
use crate::state;

/// What a purge removes: the links of one run or of all, with or without
/// rows users edited since.
#[derive(Debug, Clone, Copy)]
pub struct Scope {
    pub run: Option<i64>,
    pub include_edited: bool,
}

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

/// Keyset pages of the profiles the ledger has in `scope` (`$3`: the run),
/// after profile `after`. A page walks the ledger's primary key: no
/// DISTINCT (a profile with rows of several runs appears once per run and
/// is deduplicated by the caller), which without statistics on a fresh
/// ledger was planned as a scan of the whole table per page. Purge and
/// repair walk the ledger this way.
pub fn profiles(names: &Names, after: Option<String>, page_size: usize) -> Pager {
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
        after,
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
                "SELECT coalesce(sum(cardinality(link_keys)), 0)::bigint FROM {state}.ledger
                  WHERE ($1::bigint IS NULL OR run_id = $1)",
            ),
            &[&scope.run],
        )
        .await
        .context("cannot count the links in the ledger")?
        .get(0);
    Ok(u64::try_from(n).unwrap_or(0))
}

/// A link relink created, as the ledger records it, in a purge's scope.
#[derive(Debug)]
pub struct Recorded {
    pub profile_id: String,
    pub run_id: i64,
    pub key: String,
    /// The row's id (derived from the profile and key: SPEC §5).
    pub id: String,
    /// The `"createdAt"`/`"updatedAt"` the row got: a row whose
    /// `"updatedAt"` is later was edited since.
    pub migrated_at: SystemTime,
}

/// The links the ledger records for a chunk's profiles, in scope. One query
/// with the ids passed as an array: every lookup an index probe.
///
/// # Errors
/// On a database error.
pub async fn recorded(
    client: &impl GenericClient,
    names: &Names,
    profiles: &[String],
    scope: &Scope,
) -> Result<Vec<Recorded>> {
    let rows = client
        .query(
            &names.sql(
                "SELECT l.profile_id, l.run_id, k.key, l.migrated_at
                   FROM {state}.ledger l CROSS JOIN LATERAL unnest(l.link_keys) AS k(key)
                  WHERE l.profile_id = ANY($1) AND ($2::bigint IS NULL OR l.run_id = $2)
                  ORDER BY l.profile_id, l.run_id",
            ),
            &[&profiles, &scope.run],
        )
        .await
        .context("cannot read the ledger")?;
    Ok(rows
        .iter()
        .map(|r| {
            let (profile_id, key): (String, String) = (r.get(0), r.get(2));
            Recorded {
                id: link_id(&profile_id, &key),
                profile_id,
                run_id: r.get(1),
                key,
                migrated_at: r.get(3),
            }
        })
        .collect())
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
    let links = recorded(tx, names, profiles, scope).await?;
    let ids: Vec<&str> = links.iter().map(|l| l.id.as_str()).collect();
    let owners: Vec<&str> = links.iter().map(|l| l.profile_id.as_str()).collect();
    let times: Vec<SystemTime> = links.iter().map(|l| l.migrated_at).collect();
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
    let deleted: HashSet<String> = row.get::<_, Vec<String>>(1).into_iter().collect();
    // The deleted links' keys leave their ledger rows: a row left without
    // keys goes (with any row that had none), a row that keeps some (edited
    // or already gone) is rewritten, one statement each: rare. Worked out
    // here rather than in SQL, where filtering every row's keys against the
    // chunk's deleted ones was quadratic in the chunk.
    let mut rows: Vec<(&str, i64, Vec<&str>, bool)> = Vec::new();
    for link in &links {
        let gone = deleted.contains(&link.id);
        match rows.last_mut() {
            Some((profile, run, kept, changed))
                if *profile == link.profile_id && *run == link.run_id =>
            {
                if gone {
                    *changed = true;
                } else {
                    kept.push(&link.key);
                }
            }
            _ => rows.push((
                &link.profile_id,
                link.run_id,
                if gone {
                    Vec::new()
                } else {
                    vec![link.key.as_str()]
                },
                gone,
            )),
        }
    }
    let (mut emptied_profiles, mut emptied_runs) = (Vec::new(), Vec::new());
    for (profile, run, kept, changed) in &rows {
        if !changed {
            continue;
        }
        if kept.is_empty() {
            emptied_profiles.push(*profile);
            emptied_runs.push(*run);
        } else {
            tx.execute(
                &names.sql(
                    "UPDATE {state}.ledger SET link_keys = $3 WHERE profile_id = $1 AND run_id = $2",
                ),
                &[profile, run, kept],
            )
            .await
            .context("cannot update the ledger")?;
        }
    }
    tx.execute(
        &names.sql(
            "DELETE FROM {state}.ledger
              WHERE profile_id = ANY($1) AND ($2::bigint IS NULL OR run_id = $2)
                AND (cardinality(link_keys) = 0
                     OR (profile_id, run_id) IN (SELECT * FROM unnest($3::text[], $4::bigint[])))",
        ),
        &[&profiles, &scope.run, &emptied_profiles, &emptied_runs],
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
    state::mark_pending(tx, names, &profiles)
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
    let links = recorded(client, names, profiles, scope).await?;
    let ids: Vec<&str> = links.iter().map(|l| l.id.as_str()).collect();
    let rows = client
        .query(
            &names.sql(
                "SELECT pl.id, pl.\"profileId\", pl.\"userId\", pl.label, pl.type, pl.url, pl.\"updatedAt\"
                   FROM {app}.profile_links pl WHERE pl.id = ANY($1)",
            ),
            &[&ids],
        )
        .await
        .context("cannot read the rows a purge would delete")?;
    let present: HashMap<String, &tokio_postgres::Row> =
        rows.iter().map(|r| (r.get::<_, String>(0), r)).collect();
    let mut c = PurgeCounters {
        profiles: profiles.len() as u64,
        ..PurgeCounters::default()
    };
    for link in &links {
        let row = present
            .get(&link.id)
            .filter(|r| r.get::<_, String>(1) == link.profile_id);
        let Some(row) = row else {
            c.already_gone += 1;
            continue;
        };
        let edited = row.get::<_, SystemTime>(6) > link.migrated_at;
        if edited && !scope.include_edited {
            c.kept_edited += 1;
            continue;
        }
        c.links_deleted += 1;
        if !quiet {
            writeln!(
                out,
                "[DRY RUN] Would delete {} (run {}) of user {}: {} ({}): {}",
                link.id,
                link.run_id,
                row.get::<_, String>(2),
                row.get::<_, String>(3),
                row.get::<_, String>(4),
                row.get::<_, String>(5)
            )?;
        }
    }
    Ok(c)
}
