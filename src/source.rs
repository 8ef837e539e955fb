//! The reading edge: profiles with legacy links in keyset pages of
//! `"userId"` (SPEC §6 "Write order"; `id` for a run an earlier release
//! began), leaving out profiles whose ledger fingerprint matches, so reruns
//! are cheap; the feed that hands those pages out as numbered chunks while the
//! previous ones are planned and written; and the counts of profiles with
//! legacy links that summaries, `status` and `verify` report.

use crate::db::Pool;
use anyhow::{Context as _, Result};
use tokio::sync::mpsc;
use tokio_postgres::GenericClient;

use crate::config::Names;
use crate::db::{self, Attempted, Keyset, Pager, Retry};
use crate::inflight::{self, Budget, IN_FLIGHT_BYTES, QUEUE_BOUND};
use crate::plan::legacy;
use crate::sizing::Sizer;
use crate::text_enum::text_enum;

/// One profile to plan.
#[derive(Debug, Clone)]
pub struct SourceProfile {
    pub id: String,
    pub user_id: String,
    pub social: legacy::Social,
    /// The legacy value's fingerprint (see [`FINGERPRINT`]); recorded in
    /// the ledger.
    pub fingerprint: Vec<u8>,
    /// What the ledger holds for the profile, if it has rows.
    pub ledger: Option<LedgerEntry>,
}

/// The one query of a profile's ledger entry (SPEC §6): its latest run and
/// every comparison key its runs accounted for, `latest_run` NULL without
/// one; `user` and `profile` are the outer query's columns (the ledger's
/// key is `(user_id, profile_id, run_id)`), `extra` more select items over
/// the profile's ledger rows `l` (e.g. the latest run's fingerprint).
pub(crate) fn ledger_entry(user: &str, profile: &str, extra: &str) -> String {
    format!(
        "SELECT max(l.run_id) AS latest_run,
                coalesce(array_agg(k) FILTER (WHERE k IS NOT NULL), '{{}}') AS keys{extra}
           FROM {{state}}.ledger l
           LEFT JOIN LATERAL unnest(l.link_keys || coalesce(l.kept_keys, '{{}}')) k ON true
          WHERE l.user_id = {user} AND l.profile_id = {profile}"
    )
}

/// A profile's ledger rows, as the planner and the sink need them.
#[derive(Debug, Clone, Default)]
pub struct LedgerEntry {
    /// The run of its latest row (which holds the fingerprint).
    pub latest_run: i64,
    /// Comparison keys relink created, or found the user already had: none
    /// of them is created (again).
    pub keys: Vec<String>,
}

/// A legacy value's fingerprint: PostgreSQL's 64-bit hash of the jsonb
/// (the one hash partitioning uses), 8 bytes. It is computed on the stored
/// binary form, so a rerun checks a million unchanged profiles without
/// turning each into text (as md5 of the text, which version 1 of the state
/// schema stored, had to). Equal jsonb values hash alike (key order and
/// number spelling aside, as jsonb compares them); a changed value that
/// collides (odds 2^-64) would be taken as unchanged.
pub const FINGERPRINT: &str = "int8send(jsonb_hash_extended(p.\"socialLinks\", 0))";

/// Profiles with a legacy value that the ledger does not already cover with
/// the same fingerprint: the one definition of "pending" (run, dry run and
/// verify share it). `p` is the profiles alias. A 16-byte fingerprint is an
/// md5 of the text, written by state schema version 1 and kept by the
/// upgrades, so profiles migrated then stay settled.
pub const PENDING: &str = "NOT EXISTS (SELECT 1 FROM {state}.ledger l
                         WHERE l.user_id = p.\"userId\" AND l.profile_id = p.id
                           AND l.fingerprint = CASE WHEN octet_length(l.fingerprint) = 16
                                                    THEN decode(md5(p.\"socialLinks\"::text), 'hex')
                                                    ELSE {fingerprint} END {bound})";

/// [`PENDING`] with its fingerprint and keyset bound filled in.
fn pending_with(bound: &str) -> String {
    PENDING
        .replace("{fingerprint}", FINGERPRINT)
        .replace("{bound}", bound)
}

/// [`PENDING`] for a whole-table count.
pub fn pending() -> String {
    pending_with("")
}

/// The order a live run reads profiles in, which is also the order it
/// writes them and what its checkpoint holds (SPEC §6 "Write order").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// By `"userId"` (unique): the user-keyed indexes, the link ids of
    /// SPEC §5 and the ledger all grow at their right edge.
    User,
    /// By profile `id`: how releases before the user order paged. An
    /// unfinished run they began is finished in it, since its checkpoint
    /// is a profile id.
    Profile,
}

text_enum!(Order "page order" {
    User = "user",
    Profile = "profile",
});

impl Order {
    /// The order of a run record, from its options: a run recorded without
    /// one was begun by a release that paged by profile id.
    pub fn of_run(options: &serde_json::Value) -> Self {
        match options["order"].as_str() {
            Some("user") => Self::User,
            _ => Self::Profile,
        }
    }

    /// The keyset column, on the profiles alias `p`.
    fn column(self) -> &'static str {
        match self {
            Self::User => "p.\"userId\"",
            Self::Profile => "p.id",
        }
    }

    /// The same bound on the ledger alias `l`, so its probes stay in the
    /// page's range (see [`Reader::new`]); the ledger is keyed by user.
    fn ledger_bound(self) -> &'static str {
        match self {
            Self::User => "AND l.user_id > $1",
            Self::Profile => "",
        }
    }

    /// A profile's key in this order (its checkpoint, once committed).
    pub fn key(self, profile: &SourceProfile) -> &str {
        match self {
            Self::User => &profile.user_id,
            Self::Profile => &profile.id,
        }
    }

    /// What a key of this order names, for messages ("after user …").
    pub fn noun(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Profile => "profile",
        }
    }
}

/// Which profiles with a legacy value a [`Reader`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// All of them: before the state schema exists (no ledger to read), or
    /// `run --replan` (the ledger is read, but every profile is planned).
    All { ledger: bool },
    /// Those the ledger does not cover with the same fingerprint.
    Pending,
    /// Those it does (verify re-plans them to find lost links).
    Settled,
}

/// Keyset pages of profiles with a legacy value, each with its ledger rows.
#[derive(Debug, Clone)]
pub struct Reader {
    pager: Pager,
    order: Order,
}

impl Reader {
    /// `after`: resume strictly after this key of `order`.
    pub fn new(
        names: &Names,
        filter: Filter,
        order: Order,
        after: Option<String>,
        page_size: usize,
    ) -> Self {
        let column = order.column();
        let sql = |keyset: Keyset| {
            // The ledger side repeats the keyset bound where it can: without
            // it PostgreSQL may merge-join from the ledger's first row on
            // every page, which makes a run quadratic in the ledger's size.
            let bound = match keyset {
                Keyset::First => "",
                Keyset::After => order.ledger_bound(),
            };
            let pending = pending_with(bound);
            let (pending, ledger) = match filter {
                Filter::All { ledger } => (String::new(), ledger),
                Filter::Pending => (format!("AND {pending}"), true),
                Filter::Settled => (format!("AND NOT {pending}"), true),
            };
            // The ledger's rows are read here, by the reader, for the page's
            // profiles only (after the filter and the LIMIT), one index probe
            // each, so the writers' chunk transactions need not read them.
            // A profile without rows gets NULLs (max over none).
            // They cannot change meanwhile: only this run writes them, and
            // each profile in one chunk only.
            let ledger = if ledger {
                format!(
                    "LEFT JOIN LATERAL ({}) l ON true",
                    ledger_entry("p.\"userId\"", "p.id", "")
                )
            } else {
                "CROSS JOIN (SELECT NULL::bigint AS latest_run, NULL::text[] AS keys) l".to_owned()
            };
            names.sql(&format!(
                "SELECT p.key, p.id, p.\"userId\", p.legacy, p.fingerprint, l.latest_run, l.keys
                   FROM (SELECT {column} AS key, p.id, p.\"userId\", p.\"socialLinks\"::text AS legacy,
                                {FINGERPRINT} AS fingerprint
                           FROM {{app}}.profiles p
                          WHERE p.\"socialLinks\" IS NOT NULL AND {} {pending}
                          ORDER BY {column}
                          LIMIT $2) p
                  {ledger}
                  ORDER BY p.key",
                keyset.condition(column)
            ))
        };
        Self {
            pager: Pager::new("profiles", sql, after, page_size),
            order,
        }
    }

    /// The order of its keys.
    pub fn order(&self) -> Order {
        self.order
    }

    /// The last key returned (the keyset position).
    pub fn position(&self) -> Option<&str> {
        self.pager.position()
    }

    /// Profiles in the pages that follow.
    pub fn set_page_size(&mut self, page_size: usize) {
        self.pager.set_page_size(page_size);
    }

    /// The next page; empty when there is no more.
    ///
    /// # Errors
    /// On a database error.
    pub async fn next_page(&mut self, client: &impl GenericClient) -> Result<Vec<SourceProfile>> {
        let rows = self.pager.next(client, &[]).await?;
        Ok(rows
            .iter()
            .map(|r| SourceProfile {
                id: r.get(1),
                user_id: r.get(2),
                social: legacy::parse(r.get(3)),
                fingerprint: r.get(4),
                ledger: r.get::<_, Option<i64>>(5).map(|latest_run| LedgerEntry {
                    latest_run,
                    keys: r.get(6),
                }),
            })
            .collect())
    }
}

/// A page of profiles handed out by [`feed`], numbered in key order.
pub type Chunk = inflight::Chunk<SourceProfile>;

/// What a page of profiles weighs in memory, about: their text and a
/// share for the structures around it (the planned links, the rows being
/// sent).
fn weight(profiles: &[SourceProfile]) -> usize {
    /// Per profile, besides its text.
    const AROUND: usize = 256;
    profiles
        .iter()
        .map(|p| {
            AROUND
                + p.id.len()
                + p.user_id.len()
                + p.social.text().len()
                + p.ledger
                    .as_ref()
                    .map_or(0, |l| l.keys.iter().map(String::len).sum())
        })
        .sum()
}

/// Where [`feed`] sends its chunks: a channel, and the budget of memory
/// the chunks on their way may hold.
#[derive(Debug)]
pub struct Outbox {
    chunks: mpsc::Sender<Chunk>,
    budget: Budget,
}

/// An outbox for chunks going to `consumers` parallel consumers, and the
/// receiving end of its channel.
pub fn outbox(consumers: usize) -> (Outbox, mpsc::Receiver<Chunk>) {
    let (chunks, receiver) = mpsc::channel(QUEUE_BOUND);
    let budget = Budget::new(IN_FLIGHT_BYTES, consumers);
    (Outbox { chunks, budget }, receiver)
}

/// Why [`feed`] stopped handing out chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedEnd {
    /// The end of the table.
    End,
    /// `--limit` profiles handed out.
    Limit,
    /// The command is stopping (a signal, a failure elsewhere), or nobody
    /// takes chunks any more.
    Stopped,
}

/// Reads pages on pooled connections (a lost connection is retried like any
/// unit) and sends them as chunks of the size `sizer` gives, at most `limit`
/// profiles in all, until the end of the table or `stopping()`, reading
/// ahead only as far as the outbox's budget has room. Returns how it ended
/// and the last key handed out.
///
/// # Errors
/// When a page cannot be read after the retries.
pub async fn feed(
    mut reader: Reader,
    pool: &Pool,
    retry: Retry,
    limit: Option<u64>,
    sizer: &Sizer,
    stopping: impl Fn() -> bool,
    mut outbox: Outbox,
) -> Result<(FeedEnd, Option<String>)> {
    let mut remaining = limit.unwrap_or(u64::MAX);
    let mut seq = 0u64;
    let mut last = None;
    loop {
        if stopping() {
            return Ok((FeedEnd::Stopped, last));
        }
        if remaining == 0 {
            return Ok((FeedEnd::Limit, last));
        }
        let size = sizer.next_within(outbox.budget.most_profiles());
        let mut held = outbox.budget.reserve(size).await;
        if stopping() {
            return Ok((FeedEnd::Stopped, last));
        }
        reader.set_page_size(size);
        let read = retry
            .run("reading profiles", &stopping, |_| {
                // A failed read leaves the pager where it was: the retry
                // reads the same page again.
                let mut attempt = reader.clone();
                async move {
                    let client = db::checkout(pool).await?;
                    let page = attempt.next_page(&**client).await?;
                    Ok((attempt, page))
                }
            })
            .await?;
        let Attempted::Done((advanced, mut page)) = read else {
            return Ok((FeedEnd::Stopped, last));
        };
        reader = advanced;
        if page.is_empty() {
            return Ok((FeedEnd::End, last));
        }
        page.truncate(usize::try_from(remaining).unwrap_or(usize::MAX));
        remaining -= page.len() as u64;
        let Some(last_key) = page.last().map(|p| reader.order().key(p).to_owned()) else {
            return Ok((FeedEnd::End, last));
        };
        last = Some(last_key.clone());
        outbox
            .budget
            .settle(&mut held, page.len(), weight(&page))
            .await;
        if outbox
            .chunks
            .send(Chunk::new(seq, page, last_key, held))
            .await
            .is_err()
        {
            return Ok((FeedEnd::Stopped, last));
        }
        seq += 1;
    }
}

/// Profiles with a legacy value in the keyset range (after, upto] of
/// `order`.
///
/// # Errors
/// On a database error.
pub async fn count_with_legacy(
    client: &impl GenericClient,
    names: &Names,
    order: Order,
    after: Option<&str>,
    upto: Option<&str>,
) -> Result<u64> {
    let column = order.column();
    let n: i64 = client
        .query_one(
            &names.sql(&format!(
                "SELECT count(*) FROM {{app}}.profiles p
                  WHERE p.\"socialLinks\" IS NOT NULL
                    AND ($1::text IS NULL OR {column} > $1) AND ($2::text IS NULL OR {column} <= $2)"
            )),
            &[&after, &upto],
        )
        .await
        .context("cannot count profiles with legacy links")?
        .get(0);
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Pending profiles (see [`PENDING`]) in the whole table.
///
/// # Errors
/// On a database error.
pub async fn count_pending(client: &impl GenericClient, names: &Names) -> Result<u64> {
    let n: i64 = client
        .query_one(
            &names.sql(&format!(
                "SELECT count(*) FROM {{app}}.profiles p WHERE p.\"socialLinks\" IS NOT NULL AND {}",
                pending()
            )),
            &[],
        )
        .await
        .context("cannot count pending profiles")?
        .get(0);
    Ok(u64::try_from(n).unwrap_or(0))
}
