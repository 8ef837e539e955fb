//! Whether a plan's record still holds (SPEC §15): the profile as it is now
//! (read under the chunk's lock by an apply, as is by `verify --plan`)
//! against what the record was planned from. Pure; the one copy of the
//! drift rules that apply and verify share.

use serde::Serialize;

use crate::lock_phase::{Gone, Locked, ToLock};
use crate::plan_file::{ledger_digest, PlanRecord};
use crate::source::LedgerEntry;

/// Why a record is not applied as planned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Drift {
    /// The profile is gone (its account deleted), belongs to another user
    /// now, or its legacy value was removed.
    Deleted,
    /// Its legacy value was edited.
    Edited,
    /// Another run migrated it meanwhile (the ledger covers it).
    Migrated,
    /// `relink purge` removed ledger rows it was planned against.
    Purged,
    /// The user's `profile_links` rows changed (the application added,
    /// edited or deleted one): positions or duplicates would differ.
    RowsChanged,
    /// Replanned under the lock, it gave other rows than the record's
    /// (never expected: the rules digest and every input matched).
    Replanned,
}

impl Drift {
    pub const ALL: [Self; 6] = [
        Self::Deleted,
        Self::Edited,
        Self::Migrated,
        Self::Purged,
        Self::RowsChanged,
        Self::Replanned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deleted => "deleted",
            Self::Edited => "edited",
            Self::Migrated => "migrated",
            Self::Purged => "purged",
            Self::RowsChanged => "rows_changed",
            Self::Replanned => "replanned",
        }
    }

    /// For people: what happened since the plan was made.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Deleted => "profile deleted, moved to another user or its legacy value removed",
            Self::Edited => "legacy value edited",
            Self::Migrated => "migrated by another run",
            Self::Purged => "purged",
            Self::RowsChanged => "the user's profile_links rows changed",
            Self::Replanned => "planned differently now",
        }
    }
}

/// A profile's ledger entry now, with its latest row's fingerprint.
#[derive(Debug, Clone)]
pub struct CurrentLedger {
    pub entry: LedgerEntry,
    /// None after a purge made it pending.
    pub fingerprint: Option<Vec<u8>>,
}

/// What to do with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Everything it was planned from is as it was: write it.
    Apply,
    /// Done already, by a run applying this plan (an earlier attempt, a
    /// resumed or a repeated apply) or one that found nothing to add.
    Applied,
    Drifted(Drift),
}

/// The record's profile to lock (or read), with the fingerprint planned.
pub fn to_lock(record: &PlanRecord) -> ToLock<'_> {
    ToLock {
        id: &record.profile_id,
        user_id: &record.user_id,
        fingerprint: Some(&record.fingerprint),
        // A plan is made in another transaction, long before: its values
        // are compared by fingerprint.
        xmin: None,
    }
}

/// Judges `record` against the profile as `locked` found it, its ledger
/// entry `ledger` and the digest of its user's rows now; `plan_runs` are
/// the runs that applied this plan (this one included).
pub fn judge(
    record: &PlanRecord,
    locked: &Locked,
    ledger: Option<&CurrentLedger>,
    rows_digest: &str,
    plan_runs: &[i64],
) -> Verdict {
    let profile = match locked.find(&to_lock(record)) {
        Ok(profile) => profile,
        Err(Gone::Deleted | Gone::UserGone | Gone::Emptied) => {
            return Verdict::Drifted(Drift::Deleted)
        }
    };
    if profile.fingerprint.as_deref() != Some(record.fingerprint.as_slice()) {
        return Verdict::Drifted(Drift::Edited);
    }
    let covers =
        ledger.is_some_and(|l| l.fingerprint.as_deref() == Some(record.fingerprint.as_slice()));
    if ledger_digest(ledger.map(|l| &l.entry)) != record.ledger_digest {
        return match ledger {
            Some(l) if covers && plan_runs.contains(&l.entry.latest_run) => Verdict::Applied,
            Some(_) if covers => Verdict::Drifted(Drift::Migrated),
            // Fewer ledger rows than planned against: a purge removed some
            // (purge deletes a run's rows whole).
            None => Verdict::Drifted(Drift::Purged),
            Some(_) if record.ledger_digest != "none" && !covers => Verdict::Drifted(Drift::Purged),
            Some(_) => Verdict::Drifted(Drift::Migrated),
        };
    }
    if covers {
        // Same ledger rows, now with this value's fingerprint: a run that
        // found nothing to add refreshed it, as this record would have.
        return Verdict::Applied;
    }
    if rows_digest != record.rows_digest {
        return Verdict::Drifted(Drift::RowsChanged);
    }
    Verdict::Apply
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::*;
    use crate::lock_phase::LockedProfile;

    fn record(ledger: Option<&LedgerEntry>) -> PlanRecord {
        PlanRecord {
            index: 1,
            profile_id: "p".into(),
            user_id: "u".into(),
            fingerprint: vec![1],
            rows_digest: "rows".into(),
            ledger_digest: ledger_digest(ledger),
            planned: [0; 32],
            weight: 100,
        }
    }

    fn locked(fingerprint: Option<Vec<u8>>) -> Locked {
        Locked {
            profiles: HashMap::from([(
                "p".to_owned(),
                LockedProfile {
                    user_id: "u".into(),
                    fingerprint,
                    edited: None,
                },
            )]),
            users: HashSet::from(["u".to_owned()]),
        }
    }

    fn entry(run: i64, keys: &[&str]) -> LedgerEntry {
        LedgerEntry {
            latest_run: run,
            keys: keys.iter().map(|k| (*k).to_owned()).collect(),
        }
    }

    #[test]
    fn each_drift_and_each_match() {
        let fresh = record(None);
        let here = locked(Some(vec![1]));
        assert_eq!(judge(&fresh, &here, None, "rows", &[9]), Verdict::Apply);
        assert_eq!(
            judge(&fresh, &Locked::default(), None, "rows", &[9]),
            Verdict::Drifted(Drift::Deleted)
        );
        assert_eq!(
            judge(&fresh, &locked(Some(vec![2])), None, "rows", &[9]),
            Verdict::Drifted(Drift::Edited)
        );
        assert_eq!(
            judge(&fresh, &here, None, "other rows", &[9]),
            Verdict::Drifted(Drift::RowsChanged)
        );
        let by = |run| CurrentLedger {
            entry: entry(run, &["a"]),
            fingerprint: Some(vec![1]),
        };
        assert_eq!(
            judge(&fresh, &here, Some(&by(9)), "other rows", &[9]),
            Verdict::Applied
        );
        assert_eq!(
            judge(&fresh, &here, Some(&by(3)), "other rows", &[9]),
            Verdict::Drifted(Drift::Migrated)
        );
        // Planned against run 1's ledger row (an edited profile), purged since.
        let was = entry(1, &["a"]);
        let edited = record(Some(&was));
        assert_eq!(
            judge(&edited, &here, None, "rows", &[9]),
            Verdict::Drifted(Drift::Purged)
        );
        let same = CurrentLedger {
            entry: was.clone(),
            fingerprint: Some(vec![0]),
        };
        assert_eq!(
            judge(&edited, &here, Some(&same), "rows", &[9]),
            Verdict::Apply
        );
        let refreshed = CurrentLedger {
            entry: was,
            fingerprint: Some(vec![1]),
        };
        assert_eq!(
            judge(&edited, &here, Some(&refreshed), "rows", &[9]),
            Verdict::Applied
        );
    }
}
