//! One chunk from source rows to plans: load what the chunk's profiles are
//! planned against (the users' current rows, the ledger's keys) in two
//! queries, then plan every profile with the planning core. Live run, dry
//! run and verify all plan through here, so there is one path from legacy
//! value to rows.

use std::collections::HashMap;

use anyhow::{Context as _, Result};
use tokio_postgres::GenericClient;

use crate::config::Names;
use crate::plan::{self, Context, Counters, ExistingLink, ProfilePlan};
use crate::source::SourceProfile;

/// A profile and its plan.
#[derive(Debug)]
pub struct Planned<'a> {
    pub profile: &'a SourceProfile,
    pub plan: ProfilePlan,
    /// The ledger already had a row for this profile (it changed since, or
    /// was purged): its earlier rejects are to be replaced.
    pub replanned: bool,
}

/// The figures of a chunk's plans.
pub fn counters(planned: &[Planned<'_>]) -> Counters {
    Counters::of_plans(planned.iter().map(|p| &p.plan))
}

/// What a chunk's profiles are planned against.
#[derive(Debug, Default)]
struct ChunkContext {
    /// The users' current `profile_links` rows, by user id.
    existing: HashMap<String, Vec<ExistingLink>>,
    /// Comparison keys relink created before, or found the user already had,
    /// by profile id; every profile with a ledger row has an entry, possibly
    /// empty. None of them is created (again).
    migrated: HashMap<String, Vec<String>>,
}

/// Plans a chunk of profiles against the database's current state, read
/// through `client` (inside the chunk's transaction for a live run).
/// `with_ledger`: whether the state schema exists to be read.
///
/// # Errors
/// On a database error while loading the context.
pub async fn plan_chunk<'a>(
    client: &impl GenericClient,
    names: &Names,
    with_ledger: bool,
    profiles: &'a [SourceProfile],
) -> Result<Vec<Planned<'a>>> {
    let ctx = load_context(client, names, with_ledger, profiles).await?;
    Ok(profiles
        .iter()
        .map(|profile| {
            let plan = plan::plan_profile(
                &profile.id,
                &profile.social,
                Context {
                    existing: ctx
                        .existing
                        .get(&profile.user_id)
                        .map_or(&[], Vec::as_slice),
                    migrated: ctx.migrated.get(&profile.id).map_or(&[], Vec::as_slice),
                },
            );
            let replanned = ctx.migrated.contains_key(&profile.id);
            Planned {
                profile,
                plan,
                replanned,
            }
        })
        .collect())
}

/// Loads the context of a chunk in two queries (never one per profile).
async fn load_context(
    client: &impl GenericClient,
    names: &Names,
    with_ledger: bool,
    profiles: &[SourceProfile],
) -> Result<ChunkContext> {
    let users: Vec<&str> = profiles.iter().map(|p| p.user_id.as_str()).collect();
    let mut ctx = ChunkContext::default();
    let rows = client
        .query(
            &names.sql("SELECT \"userId\", url, position FROM {app}.profile_links WHERE \"userId\" = ANY($1)"),
            &[&users],
        )
        .await
        .context("cannot read the users' current profile links")?;
    for row in rows {
        ctx.existing
            .entry(row.get(0))
            .or_default()
            .push(ExistingLink {
                url: row.get(1),
                position: row.get(2),
            });
    }
    if with_ledger {
        let ids: Vec<&str> = profiles.iter().map(|p| p.id.as_str()).collect();
        let rows = client
            .query(
                &names.sql(
                    "SELECT profile_id, link_keys || existing_keys FROM {state}.ledger WHERE profile_id = ANY($1)",
                ),
                &[&ids],
            )
            .await
            .context("cannot read the ledger")?;
        for row in rows {
            let keys: Vec<String> = row.get(1);
            ctx.migrated.entry(row.get(0)).or_default().extend(keys);
        }
    }
    Ok(ctx)
}
