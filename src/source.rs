//! The reading edge: profiles with legacy links in keyset pages of `id`
//! (never OFFSET, never a whole table in memory), leaving out profiles whose
//! ledger fingerprint matches, so reruns are cheap; and the context each
//! chunk is planned against (the users' current rows, the ledger's keys).

use std::collections::HashMap;

use anyhow::{Context as _, Result};
use tokio_postgres::GenericClient;

use crate::config::Names;
use crate::plan::{legacy, ExistingLink};

/// One profile to plan.
#[derive(Debug, Clone)]
pub struct SourceProfile {
    pub id: String,
    pub user_id: String,
    pub social: legacy::Social,
    /// md5 of the legacy value's text; recorded in the ledger.
    pub fingerprint: String,
}

/// Profiles with a legacy value that the ledger does not already cover with
/// the same fingerprint: the one definition of "pending" (run, dry run and
/// verify share it). `p` is the profiles alias.
pub const PENDING: &str = "NOT EXISTS (SELECT 1 FROM {state}.ledger l
                         WHERE l.profile_id = p.id AND l.fingerprint = md5(p.\"socialLinks\"::text) {bound})";

/// [`PENDING`] for a whole-table count.
pub fn pending() -> String {
    PENDING.replace("{bound}", "")
}

/// Which profiles with a legacy value a [`Reader`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// All of them (no state schema yet).
    All,
    /// Those the ledger does not cover with the same fingerprint.
    Pending,
    /// Those it does (verify re-plans them to find lost links).
    Settled,
}

/// Keyset pages of profiles with a legacy value.
pub struct Reader {
    sql_first: String,
    sql_next: String,
    after: Option<String>,
    page_size: i64,
    done: bool,
}

impl Reader {
    /// `after`: resume strictly after this profile id.
    pub fn new(names: &Names, filter: Filter, after: Option<String>, page_size: usize) -> Self {
        let sql = |keyset: &str, bound: &str| {
            // The ledger side repeats the keyset bound: without it PostgreSQL
            // may merge-join from the ledger's first row on every page, which
            // makes a run quadratic in the ledger's size.
            let pending = PENDING.replace("{bound}", bound);
            let pending = match filter {
                Filter::All => String::new(),
                Filter::Pending => format!("AND {pending}"),
                Filter::Settled => format!("AND NOT {pending}"),
            };
            names.sql(&format!(
                "SELECT p.id, p.\"userId\", p.\"socialLinks\"::text, md5(p.\"socialLinks\"::text)
                   FROM {{app}}.profiles p
                  WHERE p.\"socialLinks\" IS NOT NULL {keyset} {pending}
                  ORDER BY p.id
                  LIMIT $1"
            ))
        };
        Self {
            sql_first: sql("AND $2::text IS NULL", ""),
            sql_next: sql("AND p.id > $2", "AND l.profile_id > $2"),
            after,
            page_size: i64::try_from(page_size).unwrap_or(i64::MAX),
            done: false,
        }
    }

    /// The last profile id returned (the keyset position).
    pub fn position(&self) -> Option<&str> {
        self.after.as_deref()
    }

    /// The next page; empty when there is no more.
    ///
    /// # Errors
    /// On a database error.
    pub async fn next_page(&mut self, client: &impl GenericClient) -> Result<Vec<SourceProfile>> {
        if self.done {
            return Ok(Vec::new());
        }
        let sql = if self.after.is_some() {
            &self.sql_next
        } else {
            &self.sql_first
        };
        let rows = client
            .query(sql.as_str(), &[&self.page_size, &self.after])
            .await
            .with_context(|| match &self.after {
                Some(id) => format!("cannot read profiles after {id}"),
                None => "cannot read the first page of profiles".to_owned(),
            })?;
        let page: Vec<SourceProfile> = rows
            .iter()
            .map(|r| SourceProfile {
                id: r.get(0),
                user_id: r.get(1),
                social: legacy::parse(r.get(2)),
                fingerprint: r.get(3),
            })
            .collect();
        if let Some(last) = page.last() {
            self.after = Some(last.id.clone());
        }
        if page.len() < usize::try_from(self.page_size).unwrap_or(usize::MAX) {
            self.done = true;
        }
        Ok(page)
    }
}

/// What a chunk's profiles are planned against.
#[derive(Debug, Default)]
pub struct ChunkContext {
    /// The users' current `profile_links` rows, by user id.
    pub existing: HashMap<String, Vec<ExistingLink>>,
    /// Comparison keys relink created before, or found the user already had,
    /// by profile id; every profile with a ledger row has an entry, possibly
    /// empty. None of them is created (again).
    pub migrated: HashMap<String, Vec<String>>,
}

/// Loads the context of a chunk in two queries (never one per profile).
///
/// # Errors
/// On a database error.
pub async fn load_context(
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
