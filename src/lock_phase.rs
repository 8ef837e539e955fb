//! The lock phase (SPEC §6 "Online"): relink's side of the locking
//! contract with the application, at the start of every chunk transaction
//! that writes the application's rows (`run`, `repair`).
//!
//! The contract: a transaction that changes a user's links first locks the
//! user's profile row (`SELECT 1 FROM profiles WHERE "userId" = $1 FOR NO
//! KEY UPDATE`; docs/application-contract.md). relink takes the chunk's
//! profiles the same way (a live run: those whose value holds a valid
//! link; see `sink`), then their users `FOR KEY SHARE` (what its
//! foreign keys take anyway), each in the chunk's order (the keyset order:
//! chunks are disjoint, so relink's own writers never wait for each
//! other), and only then reads the users' rows: an
//! application that keeps the contract and relink see each other's rows
//! whole, and plan positions and duplicates from them.
//!
//! **relink always yields.** The phase waits at most [`LockWaits::phase`]
//! for any one row — far below the server's `deadlock_timeout`, whose
//! detector picks its victim among the waiters that reach it — and once it
//! holds its rows the chunk waits on no application lock (its COPY's
//! foreign-key checks find the rows already locked by itself). So in any
//! conflict or lock cycle with the application, even one that does not
//! lock or deletes accounts user-first (users, then profiles by cascade:
//! the opposite order), it is relink's lock wait that gives up first, and
//! its chunk rolls back and is retried; the application's transaction goes
//! on.
//!
//! Locking costs one round trip per chunk, not a statement per profile:
//! the phase's statements are sent together.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use anyhow::{Context as _, Result};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{GenericClient, Row};

use crate::config::Names;
use crate::source::{FINGERPRINT, XMIN};

/// The longest the lock phase waits for one row: the example of SPEC §6,
/// under a fifth of PostgreSQL's default `deadlock_timeout` (1 s), and
/// short enough that an application transaction blocked behind a waiting
/// chunk barely notices.
pub const PHASE_WAIT: Duration = Duration::from_millis(150);

/// Never wait less than this in the lock phase (a server with a tiny
/// `deadlock_timeout` would otherwise make every chunk give up at once).
const PHASE_WAIT_MIN: Duration = Duration::from_millis(10);

/// How long a chunk waits for a row lock: during its lock phase, and after
/// it (the session's `--lock-timeout`, for what relink itself contends
/// on: the other writer's run record, a table lock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockWaits {
    pub phase: Duration,
    pub after: Duration,
}

impl LockWaits {
    /// The waits for a server whose `deadlock_timeout` is `deadlock`, with
    /// `--lock-timeout` `after`: the phase waits [`PHASE_WAIT`], or a
    /// quarter of `deadlock` when that is shorter, and never longer than
    /// `after`.
    pub fn new(deadlock: Duration, after: Duration) -> Self {
        let phase = PHASE_WAIT.min(deadlock / 4).max(PHASE_WAIT_MIN).min(after);
        Self { phase, after }
    }

    /// The waits for the server `client` is connected to.
    ///
    /// # Errors
    /// On a database error.
    pub async fn of_server(client: &impl GenericClient, after: Duration) -> Result<Self> {
        // In milliseconds whatever unit it was set with.
        let ms: i64 = client
            .query_one(
                "SELECT setting::bigint FROM pg_catalog.pg_settings WHERE name = 'deadlock_timeout'",
                &[],
            )
            .await
            .context("cannot read the server's deadlock_timeout")?
            .get(0);
        let waits = Self::new(
            Duration::from_millis(u64::try_from(ms).unwrap_or(1000)),
            after,
        );
        tracing::debug!(
            "lock phase: waits at most {:?} per row (deadlock_timeout {ms} ms)",
            waits.phase
        );
        Ok(waits)
    }
}

/// `SET LOCAL lock_timeout = $1`, as a typed query.
const SET_LOCK_TIMEOUT: &str = "SELECT set_config('lock_timeout', $1, true)";

fn setting(d: Duration) -> String {
    format!("{}ms", d.as_millis().max(1))
}

/// A chunk's profile to lock: its id, the user id it was read with, the
/// fingerprint of the legacy value it was read with (`None`: the caller
/// does not plan from the value), and the row version it was read at
/// (`None`: not known; the fingerprint is computed under the lock).
#[derive(Debug, Clone, Copy)]
pub struct ToLock<'a> {
    pub id: &'a str,
    pub user_id: &'a str,
    pub fingerprint: Option<&'a [u8]>,
    pub xmin: Option<i64>,
}

/// A profile as the lock phase found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockedProfile {
    pub user_id: String,
    /// The legacy value's fingerprint now (`None`: the value is NULL now).
    pub fingerprint: Option<Vec<u8>>,
    /// The legacy value's text, only when its fingerprint differs from the
    /// one it was read with (edited since): what the chunk plans from.
    pub edited: Option<String>,
}

/// What a chunk holds after its lock phase.
#[derive(Debug, Default)]
pub struct Locked {
    /// The profiles that still exist, by id.
    pub profiles: HashMap<String, LockedProfile>,
    /// The users that still exist.
    pub users: HashSet<String>,
}

impl Locked {
    /// From the rows found: profiles (id, user id, fingerprint, and the
    /// edited value's text when there is a fourth column) and users (id).
    pub fn of_rows(profiles: &[Row], users: &[Row]) -> Self {
        Self {
            profiles: profiles
                .iter()
                .map(|r| {
                    let profile = LockedProfile {
                        user_id: r.get(1),
                        fingerprint: r.get(2),
                        edited: if r.len() > 3 { r.get(3) } else { None },
                    };
                    (r.get(0), profile)
                })
                .collect(),
            users: users.iter().map(|r| r.get(0)).collect(),
        }
    }
}

/// Why a profile of the chunk is not written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gone {
    /// Deleted since it was read (with its account, or alone).
    Deleted,
    /// Its user is gone, or it now belongs to another user than the one it
    /// was read with.
    UserGone,
    /// Its legacy value was removed (set to NULL) since it was read.
    Emptied,
}

impl Locked {
    /// The profile `profile` as locked, or why it is gone.
    pub fn find(&self, profile: &ToLock<'_>) -> Result<&LockedProfile, Gone> {
        let locked = self.profiles.get(profile.id).ok_or(Gone::Deleted)?;
        if locked.user_id != profile.user_id || !self.users.contains(profile.user_id) {
            return Err(Gone::UserGone);
        }
        if locked.fingerprint.is_none() {
            return Err(Gone::Emptied);
        }
        Ok(locked)
    }
}

/// Runs the lock phase in the caller's transaction: the chunk's profiles
/// `FOR NO KEY UPDATE`, then the users they were read with `FOR KEY
/// SHARE`, each in the order of `chunk`, each row waited for at most `waits.phase`
/// (`SET LOCAL lock_timeout`, back to `waits.after` at the end). Sent as one
/// round trip. A row deleted meanwhile is simply not returned (under READ
/// COMMITTED, a lock on a row deleted by a committed transaction skips
/// it); a row updated meanwhile is returned as it is now.
///
/// # Errors
/// On a lock wait given up (`55P03`, retryable: relink yields) or another
/// database error.
pub async fn lock(
    client: &impl GenericClient,
    names: &Names,
    waits: LockWaits,
    chunk: &[ToLock<'_>],
) -> Result<Locked> {
    let ids: Vec<&str> = chunk.iter().map(|p| p.id).collect();
    let fingerprints: Vec<Option<&[u8]>> = chunk.iter().map(|p| p.fingerprint).collect();
    let xmins: Vec<Option<i64>> = chunk.iter().map(|p| p.xmin).collect();
    let users: Vec<&str> = chunk.iter().map(|p| p.user_id).collect();
    let (phase, after) = (setting(waits.phase), setting(waits.after));
    // Each row is one index probe, locked as it is found, in the chunk's
    // order (the keyset order it was read in): a locking subquery is never
    // flattened into a join, which the planner, counting the array's
    // elements, would make a hash join over a scan of the whole table (as
    // it did: 100 ms per chunk of 1,000 on a table of 100,000). A row at
    // the version it was read at holds the value read, whose fingerprint
    // the chunk has; any other's fingerprint is computed under the lock,
    // and the value's text is sent only when it differs from the one read.
    let profiles_sql = names.sql(&format!(
        "SELECT l.id, l.\"userId\", l.fingerprint,
                CASE WHEN c.fingerprint IS NOT NULL AND l.fingerprint IS DISTINCT FROM c.fingerprint
                     THEN l.legacy::text END
           FROM unnest($1::text[], $2::bytea[], $3::bigint[]) WITH ORDINALITY AS c(id, fingerprint, xmin, ord)
          CROSS JOIN LATERAL (SELECT p.id, p.\"userId\",
                                     CASE WHEN {XMIN} = c.xmin THEN c.fingerprint ELSE {FINGERPRINT} END AS fingerprint,
                                     p.\"socialLinks\" AS legacy
                                FROM {{app}}.profiles p WHERE p.id = c.id
                                 FOR NO KEY UPDATE) l
          ORDER BY c.ord"
    ));
    let users_sql = names.sql(
        "SELECT l.id
           FROM unnest($1::text[]) WITH ORDINALITY AS c(id, ord)
          CROSS JOIN LATERAL (SELECT u.id FROM {app}.users u WHERE u.id = c.id FOR KEY SHARE) l
          ORDER BY c.ord",
    );
    let begin_params: [(&(dyn ToSql + Sync), Type); 1] = [(&phase, Type::TEXT)];
    let profiles_params: [(&(dyn ToSql + Sync), Type); 3] = [
        (&ids, Type::TEXT_ARRAY),
        (&fingerprints, Type::BYTEA_ARRAY),
        (&xmins, Type::INT8_ARRAY),
    ];
    let users_params: [(&(dyn ToSql + Sync), Type); 1] = [(&users, Type::TEXT_ARRAY)];
    let end_params: [(&(dyn ToSql + Sync), Type); 1] = [(&after, Type::TEXT)];
    // Typed queries: each is sent when first polled, so `biased` sends
    // them in this order, and the server runs them in it.
    let (begin, profiles, users, end) = tokio::join!(
        biased;
        client.query_typed(SET_LOCK_TIMEOUT, &begin_params),
        client.query_typed(&profiles_sql, &profiles_params),
        client.query_typed(&users_sql, &users_params),
        client.query_typed(SET_LOCK_TIMEOUT, &end_params),
    );
    // The first error in statement order (the later statements then fail
    // only because the transaction is aborted).
    begin.context("cannot set the lock phase's lock_timeout")?;
    let profiles = profiles.context("cannot lock the chunk's profiles")?;
    let users = users.context("cannot lock the chunk's users")?;
    end.context("cannot set lock_timeout back after the lock phase")?;
    Ok(Locked::of_rows(&profiles, &users))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_phase_waits_far_less_than_the_deadlock_timeout() {
        let ms = Duration::from_millis;
        let secs = Duration::from_secs;
        assert_eq!(LockWaits::new(secs(1), secs(2)).phase, ms(150));
        assert_eq!(LockWaits::new(ms(200), secs(2)).phase, ms(50));
        assert_eq!(LockWaits::new(ms(1), secs(2)).phase, ms(10));
        // Never longer than the operator's --lock-timeout.
        assert_eq!(LockWaits::new(secs(1), ms(100)).phase, ms(100));
        assert_eq!(LockWaits::new(secs(1), secs(2)).after, secs(2));
    }

    #[test]
    fn gone_profiles_say_why() {
        let locked = Locked {
            profiles: HashMap::from([
                (
                    "p1".to_owned(),
                    LockedProfile {
                        user_id: "u1".into(),
                        fingerprint: Some(vec![1]),
                        edited: None,
                    },
                ),
                (
                    "p2".to_owned(),
                    LockedProfile {
                        user_id: "u2".into(),
                        fingerprint: None,
                        edited: None,
                    },
                ),
                (
                    "p3".to_owned(),
                    LockedProfile {
                        user_id: "u9".into(),
                        fingerprint: Some(vec![3]),
                        edited: None,
                    },
                ),
            ]),
            users: HashSet::from(["u1".to_owned(), "u2".to_owned(), "u3".to_owned()]),
        };
        let find = |id, user_id| {
            locked
                .find(&ToLock {
                    id,
                    user_id,
                    fingerprint: None,
                    xmin: None,
                })
                .map(|_| ())
        };
        assert_eq!(find("p1", "u1"), Ok(()));
        assert_eq!(find("p2", "u2"), Err(Gone::Emptied));
        assert_eq!(find("p3", "u3"), Err(Gone::UserGone));
        assert_eq!(find("p4", "u4"), Err(Gone::Deleted));
        assert_eq!(find("p1", "u0"), Err(Gone::UserGone));
    }
}
