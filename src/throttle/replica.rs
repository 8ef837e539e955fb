//! Replica lag (SPEC §13): measured on the primary from
//! `pg_stat_replication`, and directly on replicas named with `--replica`.
//!
//! A replica's lag is its `replay_lag`; but `replay_lag` only measures WAL
//! that was replayed, so a replica whose replay has stopped (paused,
//! stuck on a conflict, out of disk) keeps showing its last small figure.
//! Hence the second measure, in time AND bytes: while WAL is pending for a
//! replica (sent or received beyond replayed) and its replay position has
//! not moved, its lag is at least the time since relink last saw that
//! position move. That clock starts when relink first sees the position,
//! so a replica that is merely between two bursts of WAL never looks late.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use tokio::time::Instant;
use tokio_postgres::Client;

/// One replica's figures at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// How the replica is named in messages (`application_name`, or the URL).
    pub name: String,
    /// Replay position (an LSN as text).
    pub replay_lsn: Option<String>,
    /// WAL sent or received but not replayed yet.
    pub pending_bytes: f64,
    /// `replay_lag` as the primary reports it, if any.
    pub replay_lag: Option<Duration>,
}

/// A replica's lag, as judged.
#[derive(Debug, Clone, PartialEq)]
pub struct Lag {
    pub name: String,
    pub lag: Duration,
    pub pending_bytes: f64,
}

impl Lag {
    /// `replica r1 lags 12.3 s (4.1 MB of WAL not replayed)`.
    pub fn describe(&self) -> String {
        format!(
            "replica {} lags {:.1} s ({} of WAL not replayed)",
            self.name,
            self.lag.as_secs_f64(),
            human_bytes(self.pending_bytes)
        )
    }
}

/// Remembers, per replica, where its replay position was and since when.
#[derive(Debug, Default)]
pub struct Tracker {
    seen: HashMap<String, (Option<String>, Instant)>,
}

impl Tracker {
    /// Judges a sample taken at `now`.
    pub fn judge(&mut self, sample: &Sample, now: Instant) -> Lag {
        let entry = self
            .seen
            .entry(sample.name.clone())
            .or_insert_with(|| (sample.replay_lsn.clone(), now));
        if entry.0 != sample.replay_lsn {
            *entry = (sample.replay_lsn.clone(), now);
        }
        let stalled = if sample.pending_bytes > 0.0 {
            now.saturating_duration_since(entry.1)
        } else {
            Duration::ZERO
        };
        Lag {
            name: sample.name.clone(),
            lag: stalled.max(sample.replay_lag.unwrap_or_default()),
            pending_bytes: sample.pending_bytes,
        }
    }
}

/// Streaming replicas as the primary sees them. Logical replication
/// walsenders (a CDC consumer's slot) are not replicas and are left out.
///
/// # Errors
/// When replicas are attached but this role cannot read their positions
/// (it lacks `pg_monitor`), naming the grant and the way out; or on a
/// database error.
pub async fn primary_samples(client: &Client) -> Result<Vec<Sample>> {
    let rows = client
        .query_typed(
            "SELECT coalesce(nullif(r.application_name, ''), r.client_addr::text, 'pid ' || r.pid),
                    r.replay_lsn::text,
                    pg_wal_lsn_diff(greatest(r.sent_lsn, r.write_lsn, r.flush_lsn), r.replay_lsn)::float8,
                    extract(epoch FROM r.replay_lag)::float8,
                    r.sent_lsn IS NULL
               FROM pg_catalog.pg_stat_replication r
              WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_replication_slots s
                                 WHERE s.active_pid = r.pid AND s.slot_type = 'logical')",
            &[],
        )
        .await
        .context("cannot read pg_stat_replication")?;
    let unreadable = rows.iter().filter(|r| r.get::<_, bool>(4)).count();
    if unreadable > 0 {
        let role: String = client.query_one("SELECT current_user", &[]).await?.get(0);
        bail!(
            "{unreadable} streaming replica(s) attached, but role {role:?} cannot read their replication lag: \
             GRANT pg_monitor TO {role}; or pass --max-replica-lag off to run without watching replicas"
        );
    }
    Ok(rows
        .iter()
        .map(|r| Sample {
            name: r.get(0),
            replay_lsn: r.get(1),
            pending_bytes: r.get::<_, Option<f64>>(2).unwrap_or(0.0).max(0.0),
            replay_lag: r
                .get::<_, Option<f64>>(3)
                .and_then(|s| Duration::try_from_secs_f64(s.max(0.0)).ok()),
        })
        .collect())
}

/// A replica named with `--replica`, measured on itself: received vs
/// replayed WAL.
///
/// # Errors
/// When the server is not a replica, or on a database error.
pub async fn replica_sample(client: &Client, name: &str) -> Result<Sample> {
    let row = client
        .query_one(
            "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text,
                    pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::float8",
            &[],
        )
        .await
        .with_context(|| format!("cannot read the replay position of replica {name}"))?;
    if !row.get::<_, bool>(0) {
        bail!("{name}, given with --replica, is not a replica (pg_is_in_recovery() is false): name a streaming replica, or drop the flag");
    }
    Ok(Sample {
        name: name.to_owned(),
        replay_lsn: row.get(1),
        pending_bytes: row.get::<_, Option<f64>>(2).unwrap_or(0.0).max(0.0),
        replay_lag: None,
    })
}

/// `1.2 MB`, `512 B`.
fn human_bytes(bytes: f64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(lsn: &str, pending: f64, replay_lag: Option<u64>) -> Sample {
        Sample {
            name: "r1".to_owned(),
            replay_lsn: Some(lsn.to_owned()),
            pending_bytes: pending,
            replay_lag: replay_lag.map(Duration::from_secs),
        }
    }

    #[test]
    fn replay_lag_counts_when_replay_moves() {
        let mut t = Tracker::default();
        let now = Instant::now();
        let lag = t.judge(&sample("0/1", 100.0, Some(3)), now);
        assert_eq!(lag.lag, Duration::from_secs(3));
        let lag = t.judge(&sample("0/2", 100.0, Some(1)), now + Duration::from_secs(5));
        assert_eq!(lag.lag, Duration::from_secs(1));
    }

    #[test]
    fn a_stopped_replay_with_wal_pending_lags_more_and_more() {
        let mut t = Tracker::default();
        let now = Instant::now();
        // replay_lag still shows its last small figure: not to be believed.
        assert_eq!(
            t.judge(&sample("0/5", 10.0, Some(0)), now).lag,
            Duration::ZERO
        );
        let later = t.judge(
            &sample("0/5", 5000.0, Some(0)),
            now + Duration::from_secs(12),
        );
        assert_eq!(later.lag, Duration::from_secs(12));
        // Replay resumes: the clock starts again.
        let moved = t.judge(&sample("0/9", 10.0, Some(0)), now + Duration::from_secs(13));
        assert_eq!(moved.lag, Duration::ZERO);
    }

    #[test]
    fn an_idle_replica_is_not_late_however_long_its_position_stays() {
        let mut t = Tracker::default();
        let now = Instant::now();
        t.judge(&sample("0/5", 0.0, None), now);
        let lag = t.judge(&sample("0/5", 0.0, None), now + Duration::from_secs(3600));
        assert_eq!(lag.lag, Duration::ZERO);
    }

    #[test]
    fn replicas_are_tracked_apart() {
        let mut t = Tracker::default();
        let now = Instant::now();
        let mut other = sample("0/5", 10.0, None);
        other.name = "r2".to_owned();
        t.judge(&sample("0/5", 10.0, None), now);
        t.judge(&other, now + Duration::from_secs(10));
        let r1 = t.judge(&sample("0/5", 10.0, None), now + Duration::from_secs(20));
        let r2 = t.judge(&other, now + Duration::from_secs(20));
        assert_eq!(r1.lag, Duration::from_secs(20));
        assert_eq!(r2.lag, Duration::from_secs(10));
    }

    #[test]
    fn descriptions_name_the_replica_and_figures() {
        let lag = Lag {
            name: "replica-a".to_owned(),
            lag: Duration::from_millis(12_345),
            pending_bytes: 4_100_000.0,
        };
        assert_eq!(
            lag.describe(),
            "replica replica-a lags 12.3 s (4.1 MB of WAL not replayed)"
        );
        assert_eq!(human_bytes(512.0), "512 B");
    }
}
