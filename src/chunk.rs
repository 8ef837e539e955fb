//! One chunk from source rows to plans: load the users' current rows (in
//! one query; the ledger's keys came with the profiles from the reader),
//! then plan every profile with the planning core. Live run, dry
//! run and verify all plan through here, so there is one path from legacy
//! value to rows (a live run reads the users' rows under its lock phase,
//! `lock_phase`, then plans with [`plan_with`]).

use std::collections::HashMap;

use anyhow::{Context as _, Result};
use tokio_postgres::types::Type;
use tokio_postgres::GenericClient;

use crate::config::Names;
use crate::plan::{self, Context, Counters, ExistingLink, ProfilePlan};
use crate::source::SourceProfile;

/// A profile and its plan.
#[derive(Debug)]
pub struct Planned<'a> {
    pub profile: &'a SourceProfile,
    pub plan: ProfilePlan,
}

impl Planned<'_> {
    /// The ledger already had rows for this profile (it changed since, or
    /// was purged): its earlier rejects are to be replaced.
    pub fn replanned(&self) -> bool {
        self.profile.ledger.is_some()
    }
}

/// The figures of a chunk's plans.
pub fn counters(planned: &[Planned<'_>]) -> Counters {
    Counters::of_plans(planned.iter().map(|p| &p.plan))
}

/// Plans a chunk of profiles against the users' current rows, read
/// through `client` (inside the chunk's transaction for a live run), and
/// the ledger's keys the reader brought.
///
/// # Errors
/// On a database error while reading the users' rows.
pub async fn plan_chunk<'a>(
    client: &impl GenericClient,
    names: &Names,
    profiles: &'a [SourceProfile],
) -> Result<Vec<Planned<'a>>> {
    let existing = users_rows(client, names, profiles).await?;
    Ok(plan_with(profiles, &existing))
}

/// Plans a chunk of profiles against `existing`, the users' current rows
/// by user id (see [`users_rows`]), and the ledger's keys the reader
/// brought. Pure.
pub fn plan_with<'a>(
    profiles: &'a [SourceProfile],
    existing: &HashMap<String, Vec<ExistingLink>>,
) -> Vec<Planned<'a>> {
    profiles
        .iter()
        .map(|profile| {
            let plan = plan::plan_profile(
                &profile.id,
                &profile.user_id,
                &profile.social,
                Context {
                    existing: existing.get(&profile.user_id).map_or(&[], Vec::as_slice),
                    migrated: profile.ledger.as_ref().map_or(&[], |l| l.keys.as_slice()),
                },
            );
            Planned { profile, plan }
        })
        .collect()
}

/// The users' current `profile_links` rows, by user id, in one query and
/// one round trip (typed: no separate prepare).
///
/// One index probe per user, whatever the statistics say: written as
/// `"userId" = ANY($1)`, the planner estimated the array's selectivity
/// from statistics taken before the run, found the table small, and
/// planned a sequential scan of the whole, growing table for every chunk
/// (quadratic in the run: 181 scans reading 12 M rows over a 200,000-
/// profile run). The lateral subquery with `OFFSET 0` cannot be flattened
/// into a join, so each user is one probe of the `("userId")` index, and
/// planning costs nothing per element.
///
/// # Errors
/// On a database error.
pub async fn users_rows(
    client: &impl GenericClient,
    names: &Names,
    profiles: &[SourceProfile],
) -> Result<HashMap<String, Vec<ExistingLink>>> {
    let users: Vec<&str> = profiles.iter().map(|p| p.user_id.as_str()).collect();
    rows_of_users(client, names, &users).await
}

/// [`users_rows`] of the users `users`.
///
/// # Errors
/// On a database error.
pub async fn rows_of_users(
    client: &impl GenericClient,
    names: &Names,
    users: &[&str],
) -> Result<HashMap<String, Vec<ExistingLink>>> {
    let rows = client
        .query_typed(
            &names.sql(
                "SELECT u.id, pl.url, pl.position
                   FROM unnest($1::text[]) AS u(id)
                  CROSS JOIN LATERAL (SELECT url, position FROM {app}.profile_links pl
                                       WHERE pl.\"userId\" = u.id OFFSET 0) pl",
            ),
            &[(&users, Type::TEXT_ARRAY)],
        )
        .await
        .context("cannot read the users' current profile links")?;
    let mut existing: HashMap<String, Vec<ExistingLink>> = HashMap::new();
    for row in rows {
        existing.entry(row.get(0)).or_default().push(ExistingLink {
            url: row.get(1),
            position: row.get(2),
        });
    }
    Ok(existing)
}
