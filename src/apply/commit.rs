//! One chunk of an applied plan in one transaction, like a live run's
//! (`sink::commit_chunk`): the lock phase on the records' profiles, then
//! what they are now (`current`), each record judged (`judge`); those that
//! still hold are planned again by the planning core from the same inputs
//! and must give exactly their record's rows, which the live run's sink
//! then writes with the ledger, rejects, counters and checkpoint.

use std::collections::HashMap;

use anyhow::{Context as _, Result};

use super::current;
use super::judge::{judge, to_lock, Drift, Verdict};
use crate::chunk;
use crate::config::Names;
use crate::lock_phase::{self, LockWaits, ToLock};
use crate::plan::{legacy, Counters, ExistingLink};
use crate::plan_file::{planned_digest, rows_digest, PlanRecord};
use crate::sink;
use crate::source::SourceProfile;
use crate::test_hook::{self, Point};

/// A drifted record, for the operator.
#[derive(Debug, Clone)]
pub struct Drifted {
    pub index: u64,
    pub profile_id: String,
    pub user_id: String,
    pub drift: Drift,
}

/// What a committed chunk did.
#[derive(Debug, Default)]
pub struct Committed {
    pub counters: Counters,
    pub drifted: Vec<Drifted>,
}

/// How each of a chunk's records stands now, and the profiles to write.
pub struct Judged {
    pub verdicts: Vec<Verdict>,
    /// The records to apply, as the planner takes them.
    pub profiles: Vec<SourceProfile>,
    /// Their index in the chunk.
    pub of: Vec<usize>,
}

/// Judges `records` against `locked` and `now` (see [`judge`]).
pub fn judge_all(
    records: &[PlanRecord],
    locked: &lock_phase::Locked,
    now: &current::Current,
    plan_runs: &[i64],
) -> Judged {
    let mut judged = Judged {
        verdicts: Vec::with_capacity(records.len()),
        profiles: Vec::new(),
        of: Vec::new(),
    };
    let no_rows: &[ExistingLink] = &[];
    for (i, record) in records.iter().enumerate() {
        let rows = now.rows.get(&record.user_id).map_or(no_rows, Vec::as_slice);
        let ledger = now.ledger.get(&record.profile_id);
        let mut verdict = judge(record, locked, ledger, &rows_digest(rows), plan_runs);
        if verdict == Verdict::Apply {
            match now.values.get(&record.profile_id) {
                Some(value) => {
                    judged.profiles.push(SourceProfile {
                        id: record.profile_id.clone(),
                        user_id: record.user_id.clone(),
                        social: legacy::parse(value),
                        fingerprint: record.fingerprint.clone(),
                        ledger: ledger.map(|l| l.entry.clone()),
                        xmin: None,
                    });
                    judged.of.push(i);
                }
                // Read as it was locked: cannot happen; never written blind.
                None => verdict = Verdict::Drifted(Drift::Deleted),
            }
        }
        judged.verdicts.push(verdict);
    }
    judged
}

/// Plans the judged profiles against `rows` and keeps those whose plan is
/// exactly their record's; the others become [`Drift::Replanned`].
pub fn replan<'a>(
    judged: &'a mut Judged,
    records: &[PlanRecord],
    rows: &HashMap<String, Vec<ExistingLink>>,
) -> Vec<chunk::Planned<'a>> {
    let planned = chunk::plan_with(&judged.profiles, rows);
    let mut kept = Vec::with_capacity(planned.len());
    for (p, &i) in planned.into_iter().zip(&judged.of) {
        if planned_digest(&p.plan) == records[i].planned {
            kept.push(p);
        } else {
            tracing::warn!(
                "profile {} (plan record {}) plans differently now though its value and context match: not written",
                records[i].profile_id,
                records[i].index
            );
            judged.verdicts[i] = Verdict::Drifted(Drift::Replanned);
        }
    }
    kept
}

/// Applies one chunk of records in one transaction on `client`; `retry`
/// is unused here: a record an earlier attempt committed is found
/// [`Verdict::Applied`] by its ledger row of this run.
///
/// # Errors
/// On a database error (rolled back; the caller may retry).
pub async fn commit(
    client: &mut crate::db::PooledClient,
    names: &Names,
    run_id: i64,
    waits: LockWaits,
    records: &[PlanRecord],
    plan_runs: &[i64],
    checkpoint: impl FnOnce() -> Option<String>,
) -> Result<Committed> {
    let tx = client
        .transaction()
        .await
        .context("cannot begin a chunk transaction")?;
    test_hook::reached(Point::SetUp);
    let now = sink::set_up(&tx).await?;
    test_hook::reached(Point::LockPhase);
    let to_lock: Vec<ToLock<'_>> = records.iter().map(to_lock).collect();
    let locked = lock_phase::lock(&*tx, names, waits, &to_lock).await?;
    test_hook::reached(Point::ContextRead);
    let current = current::read(&*tx, names, records, true).await?;
    let mut judged = judge_all(records, &locked, &current, plan_runs);
    let planned = replan(&mut judged, records, &current.rows);
    sink::write_chunk(&tx, names, run_id, now, &planned).await?;
    let mut counters = chunk::counters(&planned);
    drop(planned);
    let drifted: Vec<Drifted> = records
        .iter()
        .zip(&judged.verdicts)
        .filter_map(|(r, v)| match v {
            Verdict::Drifted(drift) => Some(Drifted {
                index: r.index,
                profile_id: r.profile_id.clone(),
                user_id: r.user_id.clone(),
                drift: *drift,
            }),
            _ => None,
        })
        .collect();
    counters.profiles_drifted = drifted.len() as u64;
    sink::record_and_commit(tx, names, run_id, checkpoint(), &counters).await?;
    Ok(Committed { counters, drifted })
}
