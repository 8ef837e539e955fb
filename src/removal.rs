//! The purging edge (SPEC §8): what relink created, as the ledger records
//! it, deleted chunk by chunk together with the ledger's bookkeeping; and
//! the preview of the same for `purge --dry-run`.
//!
//! The ledger records comparison keys; a row's id derives from its
//! profile id, user id and key (SPEC §5), computed here with the planner's
//! own `link_ids` (both the current rule's id and the plain v5 id of
//! releases before it, so their rows are purged too). Ledger bookkeeping per purged profile: deleted keys leave
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
use crate::plan::link_ids;
use crate::state::{self, stored};

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

/// Keyset pages of the users the ledger has in `scope` (`$3`: the run), in
/// the ledger's key order. A page walks the ledger's primary key: no
/// DISTINCT (a user with rows of several runs appears once per run and is
/// deduplicated by the caller), which without statistics on a fresh ledger
/// was planned as a scan of the whole table per page. A chunk then takes
/// every ledger row of its users, so a user's rows split by a page's LIMIT
/// are not skipped by the next page. `after`: resume after that user.
/// Purge and repair walk the ledger this way.
pub fn users(names: &Names, after: Option<String>, page_size: usize) -> Pager {
    Pager::new(
        "the ledger",
        |keyset: Keyset| {
            names.sql(&format!(
                "SELECT user_id FROM {{state}}.ledger
                  WHERE {} AND ($3::bigint IS NULL OR run_id = $3)
                  ORDER BY user_id LIMIT $2",
                keyset.condition("user_id")
            ))
        },
        after,
        page_size,
    )
}

/// The next page of [`users`]' pager, each user once; `run`: only the
/// ledger rows of that run (all with `None`).
///
/// # Errors
/// When the page cannot be read.
pub async fn next_users(
    pages: &mut Pager,
    client: &impl GenericClient,
    run: Option<i64>,
) -> Result<Vec<String>> {
    let mut users: Vec<String> = pages
        .next(client, &[&run])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    users.dedup();
    Ok(users)
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

/// A ledger row in a purge's scope.
#[derive(Debug)]
pub struct LedgerRow {
    pub user_id: String,
    pub profile_id: String,
    pub run_id: i64,
    pub keys: Vec<String>,
    /// The `"createdAt"`/`"updatedAt"` its rows got: a row whose
    /// `"updatedAt"` is later was edited since.
    pub migrated_at: SystemTime,
}

/// A link relink created, as the ledger records it: its row and key, and
/// the ids it can have (SPEC §5: the current rule's, and the plain v5 id
/// of releases before it).
#[derive(Debug)]
pub struct Recorded<'a> {
    pub row: &'a LedgerRow,
    pub key: &'a str,
    pub ids: Vec<String>,
}

impl Recorded<'_> {
    fn is_in(&self, ids: &HashSet<String>) -> bool {
        self.ids.iter().any(|id| ids.contains(id))
    }
}

/// The ledger rows of a chunk's users, in scope, in key order. One query
/// with the users passed as an array: every lookup an index probe.
///
/// # Errors
/// On a database error.
pub async fn ledger_rows(
    client: &impl GenericClient,
    names: &Names,
    users: &[String],
    scope: &Scope,
) -> Result<Vec<LedgerRow>> {
    let rows = client
        .query(
            &names.sql(
                "SELECT l.user_id, l.profile_id, l.run_id, l.link_keys, l.migrated_at
                   FROM {state}.ledger l
                  WHERE l.user_id = ANY($1) AND ($2::bigint IS NULL OR l.run_id = $2)
                  ORDER BY l.user_id, l.profile_id, l.run_id",
            ),
            &[&users, &scope.run],
        )
        .await
        .context("cannot read the ledger")?;
    Ok(rows
        .iter()
        .map(|r| LedgerRow {
            user_id: r.get(0),
            profile_id: r.get(1),
            run_id: r.get(2),
            keys: r.get(3),
            migrated_at: r.get(4),
        })
        .collect())
}

/// Every link the rows record.
pub fn recorded(rows: &[LedgerRow]) -> Vec<Recorded<'_>> {
    rows.iter()
        .flat_map(|row| {
            row.keys.iter().map(move |key| Recorded {
                row,
                key,
                ids: link_ids(&row.profile_id, &row.user_id, key).collect(),
            })
        })
        .collect()
}

/// The distinct profiles of the rows, as (user ids, profile ids).
fn profiles_of(rows: &[LedgerRow]) -> (Vec<&str>, Vec<&str>) {
    let mut pairs: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r.user_id.as_str(), r.profile_id.as_str()))
        .collect();
    pairs.dedup();
    pairs.into_iter().unzip()
}

/// Deletes a chunk's unedited migrated rows and updates the ledger, in the
/// caller's transaction. The purge's progress is recorded on its run.
///
/// # Errors
/// On a database error (the caller rolls back and may retry).
pub async fn purge_chunk(
    tx: &impl GenericClient,
    names: &Names,
    users: &[String],
    scope: &Scope,
    run_id: i64,
) -> Result<PurgeCounters> {
    let rows = ledger_rows(tx, names, users, scope).await?;
    let links = recorded(&rows);
    // A scope row per id a link can have (at most one of them exists).
    let (mut ids, mut owners, mut times) = (Vec::new(), Vec::new(), Vec::new());
    for link in &links {
        for id in &link.ids {
            ids.push(id.as_str());
            owners.push(link.row.profile_id.as_str());
            times.push(link.row.migrated_at);
        }
    }
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
    let in_scope = i64::try_from(links.len()).unwrap_or(i64::MAX);
    let edited: i64 = row.get(0);
    let deleted: HashSet<String> = row.get::<_, Vec<String>>(1).into_iter().collect();
    let deleted_links = links.iter().filter(|l| l.is_in(&deleted)).count() as u64;
    // The deleted links' keys leave their ledger rows: a row left without
    // keys goes (with any row that had none), a row that keeps some (edited
    // or already gone) is rewritten, one statement each: rare. Worked out
    // here rather than in SQL, where filtering every row's keys against the
    // chunk's deleted ones was quadratic in the chunk.
    let mut emptied: (Vec<&str>, Vec<&str>, Vec<i64>) = Default::default();
    // `recorded` gives each row's links together.
    for of_row in links.chunk_by(|a, b| std::ptr::eq(a.row, b.row)) {
        let row = of_row[0].row;
        let (gone, kept): (Vec<&Recorded<'_>>, Vec<&Recorded<'_>>) =
            of_row.iter().partition(|l| l.is_in(&deleted));
        if gone.is_empty() {
            continue;
        }
        if kept.is_empty() {
            emptied.0.push(&row.user_id);
            emptied.1.push(&row.profile_id);
            emptied.2.push(row.run_id);
        } else {
            let kept: Vec<&str> = kept.iter().map(|l| l.key).collect();
            // The view's keys are computed: the rows' own column is set.
            tx.execute(
                &names.sql(&format!(
                    "UPDATE {} SET link_keys = $4
                      WHERE {} = $1 AND {} = $2 AND run_id = $3",
                    stored::LEDGER_ROWS,
                    stored::USER_ID,
                    stored::PROFILE_ID
                )),
                &[
                    &row.user_id,
                    &row.profile_id,
                    &row.run_id,
                    &stored::joined_keys(&kept),
                ],
            )
            .await
            .context("cannot update the ledger")?;
        }
    }
    tx.execute(
        &names.sql(
            "DELETE FROM {state}.ledger
              WHERE user_id = ANY($1) AND ($2::bigint IS NULL OR run_id = $2)
                AND (cardinality(link_keys) = 0
                     OR (user_id, profile_id, run_id) IN
                        (SELECT * FROM unnest($3::text[], $4::text[], $5::bigint[])))",
        ),
        &[&users, &scope.run, &emptied.0, &emptied.1, &emptied.2],
    )
    .await
    .context("cannot delete ledger rows")?;
    // The profiles are pending again; their rejects come back when replanned.
    let (profile_users, profiles) = profiles_of(&rows);
    state::clear_rejects(tx, names, &profile_users, &profiles)
        .await
        .context("cannot clear the rejects of purged profiles")?;
    state::mark_pending(tx, names, &profile_users, &profiles)
        .await
        .context("cannot mark purged profiles pending")?;
    let counters = PurgeCounters {
        profiles: profiles.len() as u64,
        links_deleted: deleted_links,
        kept_edited: u64::try_from(edited).unwrap_or(0),
        already_gone: u64::try_from(in_scope - edited)
            .unwrap_or(0)
            .saturating_sub(deleted_links),
    };
    let last = users.last().map(String::as_str);
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
    users: &[String],
    scope: &Scope,
    out: &mut impl Write,
    quiet: bool,
) -> Result<PurgeCounters> {
    let ledger = ledger_rows(client, names, users, scope).await?;
    let links = recorded(&ledger);
    let ids: Vec<&str> = links
        .iter()
        .flat_map(|l| l.ids.iter().map(String::as_str))
        .collect();
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
        profiles: profiles_of(&ledger).1.len() as u64,
        ..PurgeCounters::default()
    };
    for link in &links {
        let row = link
            .ids
            .iter()
            .find_map(|id| present.get(id))
            .filter(|r| r.get::<_, String>(1) == link.row.profile_id);
        let Some(row) = row else {
            c.already_gone += 1;
            continue;
        };
        let edited = row.get::<_, SystemTime>(6) > link.row.migrated_at;
        if edited && !scope.include_edited {
            c.kept_edited += 1;
            continue;
        }
        c.links_deleted += 1;
        if !quiet {
            writeln!(
                out,
                "[DRY RUN] Would delete {} (run {}) of user {}: {} ({}): {}",
                row.get::<_, String>(0),
                link.row.run_id,
                row.get::<_, String>(2),
                row.get::<_, String>(3),
                row.get::<_, String>(4),
                row.get::<_, String>(5)
            )?;
        }
    }
    Ok(c)
}
