//! The writing edge of a live run: one chunk's lock phase, rows, ledger,
//! rejects and checkpoint in ONE transaction, so a crash leaves all of a
//! chunk or none.
//! Rows go in with binary COPY through one helper: one round trip per
//! table, not per row.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashSet};
use std::time::SystemTime;

use anyhow::{Context as _, Result};
use deadpool_postgres::Transaction;
use futures_util::pin_mut;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::GenericClient;

use crate::chunk::{self, Planned};
use crate::config::Names;
use crate::lock_phase::{self, Gone, LockWaits, Locked, LockedProfile, ToLock};
use crate::plan::{self, legacy, Counters, LinkType, SkipReason};
use crate::source::SourceProfile;
use crate::state::{self, stored, StoredId};
use crate::test_hook::{self, Point};

/// Longest raw value kept in the rejects table, in bytes; the full value
/// stays untouched in `"socialLinks"`.
const MAX_RAW_BYTES: usize = 4096;

/// Plans and writes one chunk in one transaction on `client`: the lock
/// phase (see `lock_phase`; relink yields to the application), the users'
/// rows read under it, then the rows, the ledger, the rejects, the run's
/// counters and the checkpoint that `checkpoint()` gives at commit time.
/// Profiles are planned as they are under the lock: one the application
/// deleted since it was read is skipped (counted), one it edited is planned
/// from its new value, whose fingerprint the ledger records. `retry`: an
/// earlier attempt failed, perhaps after its COMMIT went through (a lost
/// connection); what it recorded is left out this time.
///
/// # Errors
/// On a database error (rolled back; the caller may retry).
pub async fn commit_chunk(
    client: &mut crate::db::PooledClient,
    names: &Names,
    run_id: i64,
    waits: LockWaits,
    profiles: &[SourceProfile],
    retry: bool,
    checkpoint: impl FnOnce() -> Option<String>,
) -> Result<Counters> {
    let tx = client
        .transaction()
        .await
        .context("cannot begin a chunk transaction")?;
    // A profile this very run recorded before (a resumed run meets a profile
    // that changed after an earlier attempt committed it out of order) is
    // left for the next run: its ledger row is this run's, and a second one
    // cannot be told apart.
    let mut profiles: Cow<'_, [SourceProfile]> = if profiles.iter().any(|p| recorded_by(p, run_id))
    {
        Cow::Owned(
            profiles
                .iter()
                .filter(|p| !recorded_by(p, run_id))
                .cloned()
                .collect(),
        )
    } else {
        Cow::Borrowed(profiles)
    };
    test_hook::reached(Point::SetUp);
    let now = set_up(&tx).await?;
    if retry {
        profiles = Cow::Owned(not_recorded(&*tx, names, run_id, &profiles).await?);
    }
    test_hook::reached(Point::LockPhase);
    // Only profiles whose value holds a valid link are locked, and only
    // their users' rows read: a value without one gives rejects alone,
    // whatever the user's rows (`plan::has_valid_link`), so relink changes
    // none of that user's links and the locking contract has nothing to
    // guard. Such a profile's ledger row holds the fingerprint of the value
    // read: one edited meanwhile is migrated by the next run, as any edit
    // after the chunk. Its lock would cost a row lock and, after each
    // checkpoint, a full-page image of a scattered page.
    let linking: Vec<bool> = profiles
        .iter()
        .map(|p| plan::has_valid_link(&p.social))
        .collect();
    let to_lock: Vec<ToLock<'_>> = profiles
        .iter()
        .zip(&linking)
        .filter(|(_, linking)| **linking)
        .map(|(p, _)| to_lock(p))
        .collect();
    let locked = lock_phase::lock(&*tx, names, waits, &to_lock).await?;
    let (current, gone) = as_locked(&profiles, &linking, &locked);
    if let Some(current) = current {
        profiles = Cow::Owned(current);
    }
    test_hook::reached(Point::ContextRead);
    let users: Vec<&str> = profiles
        .iter()
        .filter(|p| locked.profiles.contains_key(&p.id))
        .map(|p| p.user_id.as_str())
        .collect();
    let existing = chunk::rows_of_users(&*tx, names, &users).await?;
    let planned = chunk::plan_with(&profiles, &existing);
    write_chunk(&tx, names, run_id, now, &planned).await?;
    let mut counters = chunk::counters(&planned);
    counters.profiles_gone = gone;
    record_and_commit(tx, names, run_id, checkpoint(), &counters).await?;
    Ok(counters)
}

/// Ends a chunk's transaction `tx`: records its counters and `checkpoint`
/// in the run record `run_id`, then commits.
///
/// # Errors
/// On a database error (rolled back; the caller may retry).
pub async fn record_and_commit(
    tx: Transaction<'_>,
    names: &Names,
    run_id: i64,
    checkpoint: Option<String>,
    counters: &Counters,
) -> Result<()> {
    test_hook::reached(Point::Checkpoint);
    let flat = counters.to_flat();
    state::record_chunk(&*tx, names, run_id, checkpoint.as_deref(), &flat).await?;
    test_hook::reached(Point::Commit);
    tx.commit().await.context("cannot commit the chunk")
}

fn recorded_by(profile: &SourceProfile, run_id: i64) -> bool {
    profile
        .ledger
        .as_ref()
        .is_some_and(|l| l.latest_run == run_id)
}

fn to_lock(profile: &SourceProfile) -> ToLock<'_> {
    ToLock {
        id: &profile.id,
        user_id: &profile.user_id,
        fingerprint: Some(&profile.fingerprint),
        xmin: profile.xmin,
    }
}

/// The chunk's profiles as the lock phase found them (`linking`: which of
/// them it locked), and how many are gone: a locked profile deleted since it
/// was read (or whose user is, or whose legacy value was removed) is left
/// out, and nothing about it is recorded; one edited since is planned from
/// its new value and fingerprint. A profile not locked is taken as read.
/// `None` when nothing changed (nearly always).
fn as_locked(
    profiles: &[SourceProfile],
    linking: &[bool],
    locked: &Locked,
) -> (Option<Vec<SourceProfile>>, u64) {
    let found: Vec<Option<Result<&LockedProfile, Gone>>> = profiles
        .iter()
        .zip(linking)
        .map(|(p, linking)| linking.then(|| locked.find(&to_lock(p))))
        .collect();
    let unchanged = found
        .iter()
        .flatten()
        .all(|f| f.as_ref().is_ok_and(|l| l.edited.is_none()));
    if unchanged {
        return (None, 0);
    }
    let mut gone = 0;
    let mut current = Vec::with_capacity(profiles.len());
    for (profile, found) in profiles.iter().zip(found) {
        match found {
            Some(Ok(LockedProfile {
                edited: Some(value),
                fingerprint: Some(fingerprint),
                ..
            })) => current.push(SourceProfile {
                social: legacy::parse(value),
                fingerprint: fingerprint.clone(),
                ..profile.clone()
            }),
            None | Some(Ok(_)) => current.push(profile.clone()),
            Some(Err(why)) => {
                tracing::debug!("profile {} skipped: {why:?} since read", profile.id);
                gone += 1;
            }
        }
    }
    (Some(current), gone)
}

/// The chunk's profiles that an earlier attempt of this chunk did not
/// record: one whose COMMIT went through though its connection was lost
/// wrote a ledger row of this run for them (the reader saw none: such
/// profiles were left out above).
async fn not_recorded(
    tx: &impl GenericClient,
    names: &Names,
    run_id: i64,
    profiles: &[SourceProfile],
) -> Result<Vec<SourceProfile>> {
    let users: Vec<&str> = profiles.iter().map(|p| p.user_id.as_str()).collect();
    let ids: Vec<&str> = profiles.iter().map(|p| p.id.as_str()).collect();
    let rows = tx
        .query(
            &names.sql(
                "SELECT l.profile_id FROM {state}.ledger l
                   JOIN unnest($1::text[], $2::text[]) AS u(user_id, id)
                     ON l.user_id = u.user_id AND l.profile_id = u.id
                  WHERE l.run_id = $3",
            ),
            &[&users, &ids, &run_id],
        )
        .await
        .context("cannot check which profiles of the chunk already committed")?;
    let done: BTreeSet<String> = rows.iter().map(|r| r.get(0)).collect();
    Ok(profiles
        .iter()
        .filter(|p| !done.contains(&p.id))
        .cloned()
        .collect())
}

/// Sets the chunk's transaction up, and returns its timestamp as
/// `TIMESTAMP(3)` in UTC (see `db::Session`): what the rows get as
/// `"createdAt"`/`"updatedAt"` and the ledger as `migrated_at`, so purge can
/// compare them exactly.
///
/// The commit does not wait for the WAL flush: a server crash can then lose
/// the last chunks whole (rows, ledger and checkpoint together, never part
/// of one), which the next run simply redoes; it spares the server an fsync
/// per chunk.
///
/// # Errors
/// On a database error.
pub async fn set_up(tx: &Transaction<'_>) -> Result<SystemTime> {
    Ok(tx
        .query_typed_one(
            "SELECT localtimestamp(3), set_config('synchronous_commit', 'off', true)",
            &[],
        )
        .await
        .context("cannot set up the chunk transaction")?
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
    test_hook::reached(Point::CopyLinks);
    copy_links(tx, names, now, chunk).await?;
    test_hook::reached(Point::Ledger);
    record_ledger(tx, names, run_id, now, chunk).await?;
    test_hook::reached(Point::Rejects);
    replace_rejects(tx, names, run_id, chunk).await
}

async fn copy_links(
    tx: &Transaction<'_>,
    names: &Names,
    now: SystemTime,
    chunk: &[Planned<'_>],
) -> Result<()> {
    let now = &now;
    // In the chunk's order: profiles by "userId" (SPEC §6 "Write order"),
    // each profile's links together. Every index keyed by user, and the
    // primary key (whose ids begin with the user's, SPEC §5), then take
    // the chunk's rows at its right edge, next to the previous chunk's: few
    // pages dirtied between two checkpoints, few full-page images in the
    // WAL. Only "profileId" stays scattered when profile ids are random.
    let links: Vec<_> = chunk
        .iter()
        .flat_map(|planned| planned.plan.links.iter().map(move |link| (planned, link)))
        .collect();
    copy_rows(
        tx,
        names,
        "{app}.profile_links (id, \"userId\", \"profileId\", label, url, type, position, \"createdAt\", \"updatedAt\")",
        &[
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::INT4,
            Type::TIMESTAMP,
            Type::TIMESTAMP,
        ],
        &links,
        |(planned, link)| {
            [
                &link.id,
                &planned.profile.user_id,
                &planned.profile.id,
                &link.label,
                &link.url,
                type_value(link.link_type),
                &link.position,
                now,
                now,
            ]
        },
    )
    .await
}

/// `profile_links.type` as a COPY value that outlives the rows borrowing it.
fn type_value(link_type: LinkType) -> &'static (dyn ToSql + Sync) {
    static TEXTS: [&str; 4] = [
        LinkType::Website.as_str(),
        LinkType::Imdb.as_str(),
        LinkType::Showreel.as_str(),
        LinkType::Other.as_str(),
    ];
    &TEXTS[link_type as usize]
}

/// A new ledger row in its stored form (`state::ledger`), gathered before
/// the COPY borrows it.
struct LedgerRow<'a> {
    planned: &'a Planned<'a>,
    user: StoredId<'a>,
    profile: StoredId<'a>,
    keys: String,
    /// NULL when empty: most profiles have none.
    kept: Option<String>,
}

/// The ledger (see `sql/state/upgrade/003_compact_ledger.sql`): a new row
/// for a profile never recorded, or that now created links or found some
/// among the user's rows; otherwise the latest row takes the new
/// fingerprint. A new row of a replanned profile supersedes the older
/// rows' fingerprints.
async fn record_ledger(
    tx: &Transaction<'_>,
    names: &Names,
    run_id: i64,
    now: SystemTime,
    chunk: &[Planned<'_>],
) -> Result<()> {
    let mut rows = Vec::new();
    let mut superseded: (Vec<&str>, Vec<&str>) = Default::default();
    // Profiles whose latest row (of that run) takes the new fingerprint.
    let mut refreshed: Vec<(&SourceProfile, i64)> = Vec::new();
    for planned in chunk {
        let keys: Vec<&str> = planned.plan.links.iter().map(|l| l.key.as_str()).collect();
        // Keys the ledger already holds are no news: on a replan, the rows
        // relink created earlier are among the user's rows too.
        let known: HashSet<&str> = planned
            .profile
            .ledger
            .iter()
            .flat_map(|l| l.keys.iter().map(String::as_str))
            .collect();
        let kept: Vec<&str> = planned
            .plan
            .skipped
            .iter()
            .filter(|s| s.reason == SkipReason::Existing)
            .filter_map(|s| s.link_key.as_deref())
            .filter(|k| !known.contains(k))
            .collect();
        match &planned.profile.ledger {
            Some(ledger) if keys.is_empty() && kept.is_empty() => {
                refreshed.push((planned.profile, ledger.latest_run));
                continue;
            }
            Some(_) => {
                superseded.0.push(&planned.profile.user_id);
                superseded.1.push(&planned.profile.id);
            }
            None => {}
        }
        rows.push(LedgerRow {
            planned,
            user: StoredId::of(&planned.profile.user_id),
            profile: StoredId::of(&planned.profile.id),
            keys: stored::joined_keys(&keys),
            kept: (!kept.is_empty()).then(|| stored::joined_keys(&kept)),
        });
    }
    if !superseded.0.is_empty() {
        state::mark_pending(&**tx, names, &superseded.0, &superseded.1)
            .await
            .context("cannot update the ledger")?;
    }
    if !refreshed.is_empty() {
        let users: Vec<&str> = refreshed.iter().map(|(p, _)| p.user_id.as_str()).collect();
        let ids: Vec<&str> = refreshed.iter().map(|(p, _)| p.id.as_str()).collect();
        let runs: Vec<i64> = refreshed.iter().map(|(_, run)| *run).collect();
        let fingerprints: Vec<&[u8]> = refreshed
            .iter()
            .map(|(p, _)| p.fingerprint.as_slice())
            .collect();
        tx.execute(
            &names.sql(
                "UPDATE {state}.ledger l SET fingerprint = u.fingerprint
                   FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bytea[])
                        AS u(user_id, id, run_id, fingerprint)
                  WHERE l.user_id = u.user_id AND l.profile_id = u.id AND l.run_id = u.run_id",
            ),
            &[&users, &ids, &runs, &fingerprints],
        )
        .await
        .context("cannot update the ledger")?;
    }
    let (run_id, now) = (&run_id, &now);
    copy_rows(
        tx,
        names,
        &format!("{} {}", stored::LEDGER_ROWS, stored::LEDGER_COLUMNS),
        &[
            Type::INT8,
            Type::TIMESTAMP,
            Type::UUID,
            Type::UUID,
            Type::BYTEA,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
        ],
        &rows,
        |r| {
            [
                run_id,
                now,
                &r.user.uuid,
                &r.profile.uuid,
                &r.planned.profile.fingerprint,
                &r.user.text,
                &r.profile.text,
                &r.keys,
                &r.kept,
            ]
        },
    )
    .await
}

/// A reject row's texts, made storable before the COPY borrows them.
struct RejectRow<'a> {
    user: StoredId<'a>,
    profile: StoredId<'a>,
    key: Option<String>,
    raw: String,
    reason: &'static str,
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
    let (users, replanned): (Vec<&str>, Vec<&str>) = chunk
        .iter()
        .filter(|p| p.replanned())
        .map(|p| (p.profile.user_id.as_str(), p.profile.id.as_str()))
        .unzip();
    if !replanned.is_empty() {
        state::clear_rejects(&**tx, names, &users, &replanned)
            .await
            .context("cannot clear earlier rejects")?;
    }
    let rejects: Vec<RejectRow<'_>> = chunk
        .iter()
        .flat_map(|planned| {
            let user = StoredId::of(&planned.profile.user_id);
            let profile = StoredId::of(&planned.profile.id);
            planned.plan.rejects().map(move |reject| RejectRow {
                user,
                profile,
                key: reject.key.as_deref().map(storable),
                raw: storable(truncate(&reject.raw, MAX_RAW_BYTES)),
                reason: reject.reason.as_str(),
            })
        })
        .collect();
    let run_id = &run_id;
    copy_rows(
        tx,
        names,
        &format!("{} {}", stored::REJECT_ROWS, stored::REJECT_COLUMNS),
        &[
            Type::INT8,
            Type::UUID,
            Type::UUID,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
        ],
        &rejects,
        |r| {
            [
                run_id,
                &r.user.uuid,
                &r.profile.uuid,
                &r.user.text,
                &r.profile.text,
                &r.key,
                &r.raw,
                &r.reason,
            ]
        },
    )
    .await
}

/// Binary COPY into `target` (`table (columns)`, with `{app}` / `{state}`
/// placeholders) whose columns have `types`: one row of values per item,
/// made by `row` as it is sent (no array of all the chunk's rows is held).
/// No items, no COPY.
async fn copy_rows<'a, T: Sync, const N: usize>(
    tx: &Transaction<'_>,
    names: &Names,
    target: &str,
    types: &[Type; N],
    items: &'a [T],
    row: impl Fn(&'a T) -> [&'a (dyn ToSql + Sync); N] + Send,
) -> Result<()> {
    if items.is_empty() {
        return Ok(());
    }
    // Prepared once per connection: a chunk's COPY costs no round trip for
    // it.
    // Messages name the table as the server knows it, never a placeholder.
    let target = names.sql(target);
    let sql = format!("COPY {target} FROM STDIN (FORMAT binary)");
    let statement = tx
        .prepare_cached(&sql)
        .await
        .with_context(|| format!("cannot prepare COPY into {target}"))?;
    let sink = tx
        .copy_in(&statement)
        .await
        .with_context(|| format!("cannot start COPY into {target}"))?;
    let writer = BinaryCopyInWriter::new(sink, types);
    pin_mut!(writer);
    for item in items {
        writer
            .as_mut()
            .write(&row(item))
            .await
            .with_context(|| format!("cannot COPY into {target}"))?;
    }
    writer
        .finish()
        .await
        .with_context(|| format!("cannot finish COPY into {target}"))?;
    Ok(())
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
