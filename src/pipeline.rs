//! One chunk from source rows to plans: load the chunk's context, then plan
//! every profile with the planning core. Shared by live run, dry run and
//! verify, so there is one path from legacy value to rows.

use anyhow::Result;
use tokio_postgres::GenericClient;

use crate::config::Names;
use crate::plan::{self, Context, ProfilePlan};
use crate::source::{self, SourceProfile};

/// A profile and its plan.
#[derive(Debug)]
pub struct Planned<'a> {
    pub profile: &'a SourceProfile,
    pub plan: ProfilePlan,
    /// The ledger already had a row for this profile (it changed since, or
    /// was purged): its earlier rejects are to be replaced.
    pub replanned: bool,
}

/// Plans a chunk of profiles against the database's current state, read
/// through `client` (inside the chunk's transaction for a live run).
///
/// # Errors
/// On a database error while loading the context.
pub async fn plan_chunk<'a>(
    client: &impl GenericClient,
    names: &Names,
    with_ledger: bool,
    profiles: &'a [SourceProfile],
) -> Result<Vec<Planned<'a>>> {
    let ctx = source::load_context(client, names, with_ledger, profiles).await?;
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
