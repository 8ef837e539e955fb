//! The repairing edge (SPEC §9 `relink repair`): what an application that
//! does not keep the locking contract (docs/application-contract.md) can
//! leave beside relink's rows — the same link twice, two rows at one
//! position — mended chunk by chunk, touching only rows relink created and
//! no one edited since.
//!
//! The rules, per user ([`plan_user`], pure): of a comparison key held
//! twice, relink's row goes (the application's row stays; the ledger keeps
//! the key, so no run creates it again); if relink's rows share a position
//! with the application's, relink's rows move, in their order, after the
//! user's last other row, so they stay contiguous. What only a change to
//! the application's rows could mend (two of its own rows with one key or
//! one position) is reported, not touched.
//!
//! A chunk walks the ledger's users like purge (`removal`, whose ledger
//! rows also give relink's rows' ids), takes the same lock phase as a run
//! (`lock_phase`: relink yields to the application), reads the users' rows
//! and the ledger's links under it, and changes rows only where the row is
//! still as relink wrote it. A
//! moved row keeps its `"updatedAt"`: it stays relink's unedited row, which
//! purge can still remove.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::time::SystemTime;

use anyhow::{Context as _, Result};
use serde::Serialize;
use tokio_postgres::GenericClient;

use crate::config::Names;
use crate::lock_phase::{self, LockWaits, ToLock};
use crate::plan::classify::stored_url_key;
use crate::removal::{self, Scope};
use crate::state;

/// A row of a user's `profile_links`, as repair reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    pub id: String,
    pub user_id: String,
    pub profile_id: String,
    pub url: String,
    pub position: i32,
    pub updated_at: SystemTime,
}

/// A change to one of relink's rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// relink's row holds a link the user already has in row `kept`.
    Delete {
        row: UserRow,
        kept: String,
        /// As the ledger records it: the row is deleted only if its
        /// `"updatedAt"` is not later.
        migrated_at: SystemTime,
    },
    /// relink's row moves to position `to`.
    Move {
        row: UserRow,
        to: i32,
        migrated_at: SystemTime,
    },
}

/// What repair leaves because only a change to the application's rows
/// (or rows users edited) would mend it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unmendable {
    /// Rows of one user holding one link (comparison key).
    Key {
        user_id: String,
        key: String,
        rows: Vec<String>,
    },
    /// Rows of one user at one position.
    Position {
        user_id: String,
        position: i32,
        rows: Vec<String>,
    },
}

/// What repair does for one user.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UserPlan {
    pub changes: Vec<Change>,
    pub unmendable: Vec<Unmendable>,
}

/// A row relink created, as its ledger row records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Created<'a> {
    pub profile_id: &'a str,
    /// The `"createdAt"`/`"updatedAt"` it got: later, it was edited since.
    pub migrated_at: SystemTime,
}

/// Plans the repair of one user's rows. `created`: the rows relink created
/// for the user's profile, by row id, as the ledger records them. Pure.
pub fn plan_user(rows: &[UserRow], created: &HashMap<&str, Created<'_>>) -> UserPlan {
    let mut rows: Vec<&UserRow> = rows.iter().collect();
    rows.sort_by(|a, b| (a.position, &a.id).cmp(&(b.position, &b.id)));
    // relink's rows no one edited since: the only ones repair changes.
    let ours = |row: &UserRow| {
        created
            .get(row.id.as_str())
            .filter(|c| c.profile_id == row.profile_id && row.updated_at <= c.migrated_at)
            .map(|c| c.migrated_at)
    };
    let mut plan = UserPlan::default();

    let mut by_key: BTreeMap<String, Vec<&UserRow>> = BTreeMap::new();
    for row in &rows {
        by_key
            .entry(stored_url_key(&row.url))
            .or_default()
            .push(row);
    }
    let mut deleted = HashSet::new();
    for (key, held) in by_key.into_iter().filter(|(_, held)| held.len() > 1) {
        let (mine, theirs): (Vec<&UserRow>, Vec<&UserRow>) =
            held.iter().partition(|r| ours(r).is_some());
        if theirs.len() > 1 {
            plan.unmendable.push(Unmendable::Key {
                user_id: theirs[0].user_id.clone(),
                key,
                rows: theirs.iter().map(|r| r.id.clone()).collect(),
            });
        }
        // The application's row stays, else relink's first.
        let kept = theirs.first().or(mine.first()).map(|r| r.id.clone());
        for row in mine {
            if Some(&row.id) == kept.as_ref() {
                continue;
            }
            deleted.insert(row.id.as_str());
            plan.changes.push(Change::Delete {
                row: row.clone(),
                kept: kept.clone().unwrap_or_default(),
                migrated_at: ours(row).unwrap_or(row.updated_at),
            });
        }
    }

    let left: Vec<&UserRow> = rows
        .into_iter()
        .filter(|r| !deleted.contains(r.id.as_str()))
        .collect();
    let (mine, theirs): (Vec<&UserRow>, Vec<&UserRow>) =
        left.iter().partition(|r| ours(r).is_some());
    let mut held: BTreeMap<i32, Vec<&UserRow>> = BTreeMap::new();
    for row in &theirs {
        held.entry(row.position).or_default().push(row);
    }
    for (position, rows) in held.iter().filter(|(_, rows)| rows.len() > 1) {
        plan.unmendable.push(Unmendable::Position {
            user_id: rows[0].user_id.clone(),
            position: *position,
            rows: rows.iter().map(|r| r.id.clone()).collect(),
        });
    }
    let mut positions = HashSet::new();
    let collides = mine
        .iter()
        .any(|r| held.contains_key(&r.position) || !positions.insert(r.position));
    if collides {
        // After the user's last other row, in relink's order.
        let start = held
            .keys()
            .next_back()
            .map_or_else(|| mine[0].position, |last| last + 1);
        for (to, row) in (start..).zip(&mine) {
            if row.position != to {
                plan.changes.push(Change::Move {
                    row: (*row).clone(),
                    to,
                    migrated_at: ours(row).unwrap_or(row.updated_at),
                });
            }
        }
    }
    plan
}

/// Figures of a repair.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RepairCounters {
    /// Users the ledger has, looked at.
    pub users: u64,
    /// relink's rows deleted: duplicates of a link the user had.
    pub duplicates_deleted: u64,
    /// relink's rows moved off a position the application's row holds.
    pub rows_moved: u64,
    /// Planned changes not made because the row was edited meanwhile.
    pub edited_meanwhile: u64,
    /// Problems left for the application's rows (listed).
    pub unmendable: u64,
}

impl RepairCounters {
    pub fn merge(&mut self, o: &Self) {
        self.users += o.users;
        self.duplicates_deleted += o.duplicates_deleted;
        self.rows_moved += o.rows_moved;
        self.edited_meanwhile += o.edited_meanwhile;
        self.unmendable += o.unmendable;
    }
}

/// A chunk's users' rows and relink's links of its profiles, planned.
struct Chunk {
    plans: Vec<UserPlan>,
    users: u64,
}

/// Reads and plans a chunk of the ledger's users. With `waits`, in a live
/// repair's transaction: the lock phase first, then every read under it.
/// Without, a dry run's plain reads.
async fn read_and_plan(
    client: &impl GenericClient,
    names: &Names,
    chunk: &[String],
    waits: Option<LockWaits>,
) -> Result<Chunk> {
    let owners = client
        .query(
            &names.sql(
                "SELECT p.id, p.\"userId\"
                   FROM unnest($1::text[]) WITH ORDINALITY AS u(id, ord)
                  CROSS JOIN LATERAL (SELECT id, \"userId\" FROM {app}.profiles p
                                       WHERE p.\"userId\" = u.id OFFSET 0) p
                  ORDER BY u.ord",
            ),
            &[&chunk],
        )
        .await
        .context("cannot read the chunk's profiles")?;
    let mut users: Vec<String> = owners.iter().map(|r| r.get(1)).collect();
    if let Some(waits) = waits {
        let owners: Vec<(String, String)> = owners.iter().map(|r| (r.get(0), r.get(1))).collect();
        let to_lock: Vec<ToLock<'_>> = owners
            .iter()
            .map(|(id, user_id)| ToLock {
                id,
                user_id,
                fingerprint: None,
                xmin: None,
            })
            .collect();
        let locked = lock_phase::lock(client, names, waits, &to_lock).await?;
        users = to_lock
            .iter()
            .filter(|p| locked.find(p).is_ok())
            .map(|p| p.user_id.to_owned())
            .collect();
    }
    let rows = client
        .query(
            &names.sql(
                "SELECT pl.id, u.id, pl.\"profileId\", pl.url, pl.position, pl.\"updatedAt\"
                   FROM unnest($1::text[]) AS u(id)
                  CROSS JOIN LATERAL (SELECT id, \"profileId\", url, position, \"updatedAt\"
                                        FROM {app}.profile_links pl
                                       WHERE pl.\"userId\" = u.id OFFSET 0) pl",
            ),
            &[&users],
        )
        .await
        .context("cannot read the users' profile links")?;
    let scope = Scope {
        run: None,
        include_edited: false,
    };
    let ledger = removal::ledger_rows(client, names, chunk, &scope).await?;
    // Each id a row of a recorded link can have; a key recorded by two
    // runs (created again after a purge): the latest.
    let mut created: HashMap<&str, Created<'_>> = HashMap::new();
    let links = removal::recorded(&ledger);
    for link in &links {
        let row = link.row;
        for id in &link.ids {
            let newer = created
                .get(id.as_str())
                .map_or(true, |c| c.migrated_at < row.migrated_at);
            if newer {
                created.insert(
                    id,
                    Created {
                        profile_id: &row.profile_id,
                        migrated_at: row.migrated_at,
                    },
                );
            }
        }
    }
    let mut by_user: BTreeMap<String, Vec<UserRow>> = BTreeMap::new();
    for r in &rows {
        let row = UserRow {
            id: r.get(0),
            user_id: r.get(1),
            profile_id: r.get(2),
            url: r.get(3),
            position: r.get(4),
            updated_at: r.get(5),
        };
        by_user.entry(row.user_id.clone()).or_default().push(row);
    }
    Ok(Chunk {
        plans: by_user
            .values()
            .map(|rows| plan_user(rows, &created))
            .filter(|plan| !plan.changes.is_empty() || !plan.unmendable.is_empty())
            .collect(),
        users: chunk.len() as u64,
    })
}

/// Repairs a chunk of the ledger's users in the caller's transaction,
/// lock phase first (every wait of the transaction as short as the
/// phase's: relink yields), and records it on the repair's run; each
/// change is a line on `out`.
///
/// # Errors
/// On a database error (the caller rolls back and may retry), or when
/// `out` cannot be written.
pub async fn repair_chunk(
    tx: &impl GenericClient,
    names: &Names,
    users: &[String],
    waits: LockWaits,
    run_id: i64,
    out: &mut impl Write,
    quiet: bool,
) -> Result<RepairCounters> {
    let waits = LockWaits {
        after: waits.phase,
        ..waits
    };
    let chunk = read_and_plan(tx, names, users, Some(waits)).await?;
    let (mut deletes, mut moves) = (Vec::new(), Vec::new());
    for change in chunk.plans.iter().flat_map(|p| &p.changes) {
        match change {
            Change::Delete { .. } => deletes.push(change),
            Change::Move { .. } => moves.push(change),
        }
    }
    let deleted = delete_rows(tx, names, &deletes).await?;
    let moved = move_rows(tx, names, &moves).await?;
    let mut counters = RepairCounters {
        users: chunk.users,
        duplicates_deleted: deleted.len() as u64,
        rows_moved: moved.len() as u64,
        edited_meanwhile: (deletes.len() + moves.len() - deleted.len() - moved.len()) as u64,
        unmendable: 0,
    };
    for plan in &chunk.plans {
        for change in &plan.changes {
            let id = change_row(change).id.as_str();
            if !quiet && (deleted.contains(id) || moved.contains(id)) {
                describe(change, "", out)?;
            }
        }
        counters.unmendable += plan.unmendable.len() as u64;
        for problem in &plan.unmendable {
            report_unmendable(problem, out)?;
        }
    }
    let flat = serde_json::to_value(&counters)?;
    state::record_chunk(tx, names, run_id, users.last().map(String::as_str), &flat).await?;
    Ok(counters)
}

/// `--dry-run`: lists what repairing the chunk would change; changes nothing.
///
/// # Errors
/// On a database error, or when `out` cannot be written.
pub async fn preview_chunk(
    client: &impl GenericClient,
    names: &Names,
    users: &[String],
    out: &mut impl Write,
    quiet: bool,
) -> Result<RepairCounters> {
    let chunk = read_and_plan(client, names, users, None).await?;
    let mut counters = RepairCounters {
        users: chunk.users,
        ..RepairCounters::default()
    };
    for plan in &chunk.plans {
        for change in &plan.changes {
            match change {
                Change::Delete { .. } => counters.duplicates_deleted += 1,
                Change::Move { .. } => counters.rows_moved += 1,
            }
            if !quiet {
                describe(change, "[DRY RUN] Would ", out)?;
            }
        }
        counters.unmendable += plan.unmendable.len() as u64;
        for problem in &plan.unmendable {
            report_unmendable(problem, out)?;
        }
    }
    Ok(counters)
}

fn change_row(change: &Change) -> &UserRow {
    match change {
        Change::Delete { row, .. } | Change::Move { row, .. } => row,
    }
}

/// Deletes relink's duplicate rows that are still as relink wrote them;
/// returns the ids deleted.
async fn delete_rows(
    tx: &impl GenericClient,
    names: &Names,
    changes: &[&Change],
) -> Result<HashSet<String>> {
    if changes.is_empty() {
        return Ok(HashSet::new());
    }
    let ids: Vec<&str> = changes.iter().map(|c| change_row(c).id.as_str()).collect();
    let times: Vec<SystemTime> = changes
        .iter()
        .map(|c| match c {
            Change::Delete { migrated_at, .. } | Change::Move { migrated_at, .. } => *migrated_at,
        })
        .collect();
    let rows = tx
        .query(
            &names.sql(
                "DELETE FROM {app}.profile_links pl
                  USING unnest($1::text[], $2::timestamp[]) AS d(id, migrated_at)
                  WHERE pl.id = d.id AND pl.\"updatedAt\" <= d.migrated_at
                 RETURNING pl.id",
            ),
            &[&ids, &times],
        )
        .await
        .context("cannot delete relink's duplicate rows")?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Moves relink's rows that are still where and as relink wrote them;
/// returns the ids moved. `"updatedAt"` stays (see the module's doc).
async fn move_rows(
    tx: &impl GenericClient,
    names: &Names,
    changes: &[&Change],
) -> Result<HashSet<String>> {
    if changes.is_empty() {
        return Ok(HashSet::new());
    }
    let (mut ids, mut from, mut to, mut times) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for change in changes {
        if let Change::Move {
            row,
            to: position,
            migrated_at,
        } = change
        {
            ids.push(row.id.as_str());
            from.push(row.position);
            to.push(*position);
            times.push(*migrated_at);
        }
    }
    let rows = tx
        .query(
            &names.sql(
                "UPDATE {app}.profile_links pl SET position = m.to_position
                   FROM unnest($1::text[], $2::int[], $3::int[], $4::timestamp[])
                        AS m(id, from_position, to_position, migrated_at)
                  WHERE pl.id = m.id AND pl.position = m.from_position
                    AND pl.\"updatedAt\" <= m.migrated_at
                 RETURNING pl.id",
            ),
            &[&ids, &from, &to, &times],
        )
        .await
        .context("cannot move relink's rows")?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// One line per change: `Deleted …` / `Moved …` (after `prefix`).
fn describe(change: &Change, prefix: &str, out: &mut impl Write) -> std::io::Result<()> {
    let verb = |done: &str, would: &str| {
        if prefix.is_empty() {
            done.to_owned()
        } else {
            format!("{prefix}{would}")
        }
    };
    match change {
        Change::Delete { row, kept, .. } => writeln!(
            out,
            "{} relink's row {} of user {} at position {}: {} (a duplicate of row {kept})",
            verb("Deleted", "delete"),
            row.id,
            row.user_id,
            row.position,
            row.url
        ),
        Change::Move { row, to, .. } => writeln!(
            out,
            "{} relink's row {} of user {} from position {} to {to}: {}",
            verb("Moved", "move"),
            row.id,
            row.user_id,
            row.position,
            row.url
        ),
    }
}

fn report_unmendable(problem: &Unmendable, out: &mut impl Write) -> std::io::Result<()> {
    match problem {
        Unmendable::Key { user_id, key, rows } => writeln!(
            out,
            "! user {user_id}: rows {} hold one link ({key}); not relink's to change",
            rows.join(", ")
        ),
        Unmendable::Position {
            user_id,
            position,
            rows,
        } => writeln!(
            out,
            "! user {user_id}: rows {} share position {position}; not relink's to change",
            rows.join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn row(id: &str, url: &str, position: i32, updated: u64) -> UserRow {
        UserRow {
            id: id.into(),
            user_id: "u1".into(),
            profile_id: "p1".into(),
            url: url.into(),
            position,
            updated_at: at(updated),
        }
    }

    fn plan(rows: &[UserRow], ours: &[&str]) -> UserPlan {
        let created: HashMap<&str, Created<'_>> = ours
            .iter()
            .map(|id| {
                (
                    *id,
                    Created {
                        profile_id: "p1",
                        migrated_at: at(10),
                    },
                )
            })
            .collect();
        plan_user(rows, &created)
    }

    fn moves(plan: &UserPlan) -> Vec<(String, i32, i32)> {
        plan.changes
            .iter()
            .filter_map(|c| match c {
                Change::Move { row, to, .. } => Some((row.id.clone(), row.position, *to)),
                Change::Delete { .. } => None,
            })
            .collect()
    }

    fn deletes(plan: &UserPlan) -> Vec<(String, String)> {
        plan.changes
            .iter()
            .filter_map(|c| match c {
                Change::Delete { row, kept, .. } => Some((row.id.clone(), kept.clone())),
                Change::Move { .. } => None,
            })
            .collect()
    }

    #[test]
    fn rows_without_a_race_are_left_alone() {
        let rows = [
            row("app1", "https://a.example/", 0, 1),
            row("r1", "https://b.example/", 1, 10),
            row("r2", "https://c.example/", 2, 10),
        ];
        assert_eq!(plan(&rows, &["r1", "r2"]), UserPlan::default());
    }

    #[test]
    fn relinks_duplicate_of_an_application_row_goes() {
        // The application added the link relink was about to create, as
        // `www.` and without the scheme: one comparison key.
        let rows = [
            row("r1", "https://b.example/x", 1, 10),
            row("app1", "www.b.example/x", 3, 12),
            row("r2", "https://c.example/", 2, 10),
        ];
        let plan = plan(&rows, &["r1", "r2"]);
        assert_eq!(deletes(&plan), [("r1".to_owned(), "app1".to_owned())]);
        assert!(moves(&plan).is_empty(), "{plan:?}");
        assert!(plan.unmendable.is_empty());
    }

    #[test]
    fn relinks_rows_at_an_application_rows_position_move_after_the_last_row_in_order() {
        // The application read max = 1 before relink's chunk committed, and
        // added at 2; later at 5 (max + 1 after relink's rows).
        let rows = [
            row("app0", "https://a.example/", 0, 1),
            row("app1", "https://b.example/", 1, 1),
            row("r1", "https://c.example/", 2, 10),
            row("r2", "https://d.example/", 3, 10),
            row("r3", "https://e.example/", 4, 10),
            row("app2", "https://f.example/", 2, 11),
            row("app3", "https://g.example/", 5, 12),
        ];
        let plan = plan(&rows, &["r1", "r2", "r3"]);
        assert_eq!(
            moves(&plan),
            [
                ("r1".to_owned(), 2, 6),
                ("r2".to_owned(), 3, 7),
                ("r3".to_owned(), 4, 8)
            ]
        );
        assert!(deletes(&plan).is_empty());
    }

    #[test]
    fn rows_users_edited_are_not_relinks_to_change() {
        // r1 was edited after migration (updatedAt later): it is the
        // user's now, like the application's rows.
        let rows = [
            row("r1", "https://b.example/", 1, 20),
            row("app1", "https://b.example/", 2, 12),
            row("app2", "https://c.example/", 2, 12),
        ];
        let plan = plan(&rows, &["r1"]);
        assert!(plan.changes.is_empty(), "{plan:?}");
        assert_eq!(
            plan.unmendable,
            [
                Unmendable::Key {
                    user_id: "u1".into(),
                    key: "b.example".into(),
                    rows: vec!["r1".into(), "app1".into()],
                },
                Unmendable::Position {
                    user_id: "u1".into(),
                    position: 2,
                    rows: vec!["app1".into(), "app2".into()],
                },
            ]
        );
    }

    #[test]
    fn a_deleted_duplicate_frees_its_position() {
        // r1 duplicates app1 and shares its position: deleting r1 mends both.
        let rows = [
            row("app1", "https://b.example/", 1, 12),
            row("r1", "https://b.example/", 1, 10),
            row("r2", "https://c.example/", 2, 10),
        ];
        let plan = plan(&rows, &["r1", "r2"]);
        assert_eq!(deletes(&plan), [("r1".to_owned(), "app1".to_owned())]);
        assert!(moves(&plan).is_empty(), "{plan:?}");
    }

    #[test]
    fn a_repaired_user_needs_nothing_more() {
        let rows = [
            row("app0", "https://a.example/", 0, 1),
            row("r1", "https://c.example/", 1, 10),
            row("app2", "https://f.example/", 1, 11),
            row("r2", "https://a.example/", 2, 10),
        ];
        let first = plan(&rows, &["r1", "r2"]);
        let mut after: Vec<UserRow> = rows.to_vec();
        for change in &first.changes {
            match change {
                Change::Delete { row, .. } => after.retain(|r| r.id != row.id),
                Change::Move { row, to, .. } => {
                    after
                        .iter_mut()
                        .filter(|r| r.id == row.id)
                        .for_each(|r| r.position = *to);
                }
            }
        }
        assert_eq!(deletes(&first), [("r2".to_owned(), "app0".to_owned())]);
        assert_eq!(moves(&first), [("r1".to_owned(), 1, 2)]);
        assert_eq!(plan(&after, &["r1", "r2"]), UserPlan::default());
    }
}
