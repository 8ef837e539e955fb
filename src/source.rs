//! The reading edge: profiles with legacy links in keyset pages of
//! `"userId"` (SPEC §6 "Write order"; `id` for a run an earlier release
//! began), leaving out profiles whose ledger fingerprint matches, so reruns
//! are cheap; the feed that hands those pages out as numbered chunks while the
//! previous ones are planned and written; and the counts of profiles with
//! legacy links that summaries, `status` and `verify` report.

use std::sync::Arc;

use crate::db::Pool;
use anyhow::{Context as _, Result};
use tokio::sync::mpsc;
use tokio_postgres::GenericClient;

use crate::config::Names;
use crate::db::{self, Attempted, Keyset, Pager, Retry};
use crate::inflight::{self, Budget, IN_FLIGHT_BYTES, QUEUE_BOUND};
use crate::plan::legacy;
use crate::sizing::Sizer;
use crate::state;
use crate::test_hook::{self, Point};
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
    /// The row version it was read at (its `xmin`): the lock phase finds
    /// the row at the same version when nothing changed it since, and then
    /// need not compute the fingerprint again. `None`: not read here.
    pub xmin: Option<i64>,
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

/// A profile row's version (`xmin`, the transaction that wrote it) as a
/// number, on the profiles alias `p`. An update of the row, by anyone,
/// writes a new version with another `xmin`.
pub const XMIN: &str = "p.xmin::text::bigint";

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

/// Keyset pages of profiles with a legacy value, each with its ledger rows;
/// or, after a census that found few pending profiles (see
/// [`Reader::expect`]), pages of just those.
#[derive(Debug, Clone)]
pub struct Reader {
    pager: Pager,
    order: Order,
    filter: Filter,
    names: Arc<Names>,
    census: Census,
}

/// Where a reader stands with its census.
#[derive(Debug, Clone)]
enum Census {
    /// None: keyset pages.
    Off,
    /// To take before the first page, giving up past this many keys.
    Due { most: u64 },
    /// Taken: the pending profiles it found.
    Taken(Sparse),
}

/// The pending profiles' keys a census found, in the server's key order,
/// and the page query that reads a batch of them.
#[derive(Debug, Clone)]
struct Sparse {
    sql: Arc<str>,
    keys: Arc<[String]>,
    /// The first key not yet read.
    next: usize,
}

/// Which profiles a page query reads.
#[derive(Debug, Clone, Copy)]
enum Range {
    /// Keyset pages: `$1` the last key of the previous page, `$2` the
    /// page size.
    Keyset(Keyset),
    /// The keys in `$1` (a text array), `$2` of them at most.
    Keys,
}

/// A census reads the keys of the pending profiles when at most this many
/// are expected (and gives up past it): a rerun after a completed run, when
/// few profiles changed. 50,000 keys hold about 4 MiB.
pub const CENSUS_MOST: u64 = 50_000;

impl Reader {
    /// `after`: resume strictly after this key of `order`.
    pub fn new(
        names: &Names,
        filter: Filter,
        order: Order,
        after: Option<String>,
        page_size: usize,
    ) -> Self {
        let sql = |keyset| page_sql(names, filter, order, Range::Keyset(keyset));
        Self {
            pager: Pager::new("profiles", sql, after, page_size),
            order,
            filter,
            names: Arc::new(names.clone()),
            census: Census::Off,
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

    /// How many profiles the reader expects to hand out, of the
    /// `with_legacy` from its position on, for the progress bar. When the
    /// ledger has rows and, by the server's statistics on it (fresh after
    /// every completed run, which analyzes it), at most [`CENSUS_MOST`]
    /// profiles are pending — a rerun after a completed run, few profiles
    /// changed — the first page read takes a census: it finds them all in
    /// one pass over the table in physical order (a hash anti-join against
    /// the ledger, where keyset pages of a sparse set walk the whole
    /// `"userId"` index and fetch each heap row at random); the pages then
    /// read only those, in key order. The census is a read like any page:
    /// retried on a fresh connection when its session ends.
    ///
    /// A profile that becomes pending after the census (edited, created)
    /// waits for the next run, as one edited behind a keyset page's
    /// position does.
    ///
    /// # Errors
    /// On a database error.
    pub async fn expect(&mut self, client: &impl GenericClient, with_legacy: u64) -> Result<u64> {
        if self.filter != Filter::Pending {
            return Ok(with_legacy);
        }
        let ledger: i64 = client
            .query_one(
                "SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = to_regclass($1)",
                &[&self.names.sql(state::stored::LEDGER_ROWS)],
            )
            .await
            .map_or(0, |r| r.get(0));
        if ledger <= 0 {
            return Ok(with_legacy);
        }
        // From a position, the ledger's rows before it are not known apart.
        let expected = match self.pager.position() {
            Some(_) => with_legacy,
            None => with_legacy.saturating_sub(ledger.unsigned_abs()).max(1),
        };
        let most = test_hook::census_most(CENSUS_MOST);
        if expected <= most {
            self.census = Census::Due { most };
        }
        Ok(expected)
    }

    /// Takes the census: the keys of the pending profiles after the
    /// position, if there are at most `most`.
    async fn take_census(&mut self, client: &impl GenericClient, most: u64) -> Result<Census> {
        let column = self.order.column();
        let after = self.pager.position().map(str::to_owned);
        let (condition, bound) = keyset_bounds(self.order, Keyset::of(after.as_deref()));
        // The fence (OFFSET 0) keeps the scan unordered: ordered by the
        // key, PostgreSQL would walk the index, which is the slow way.
        let census = self.names.sql(&format!(
            "SELECT key FROM (SELECT {column} AS key FROM {{app}}.profiles p
                               WHERE p.\"socialLinks\" IS NOT NULL AND {condition} AND {}
                              OFFSET 0) pending
              ORDER BY key LIMIT $2",
            pending_with(bound)
        ));
        let limit = i64::try_from(most + 1).unwrap_or(i64::MAX);
        test_hook::reached(Point::Census);
        let keys: Vec<String> = client
            .query(&census, &[&after, &limit])
            .await
            .context("cannot find the pending profiles")?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let found = keys.len();
        if found as u64 > most {
            tracing::debug!("more than {most} profiles pending: reading keyset pages");
            return Ok(Census::Off);
        }
        tracing::info!("a census found {found} pending profiles: reading just those");
        Ok(Census::Taken(Sparse {
            sql: page_sql(&self.names, self.filter, self.order, Range::Keys).into(),
            keys: keys.into(),
            next: 0,
        }))
    }

    /// The next page; empty when there is no more.
    ///
    /// # Errors
    /// On a database error.
    pub async fn next_page(&mut self, client: &impl GenericClient) -> Result<Vec<SourceProfile>> {
        if let Census::Due { most } = self.census {
            self.census = self.take_census(client, most).await?;
        }
        let rows = match &mut self.census {
            Census::Off | Census::Due { .. } => self.pager.next(client, &[]).await?,
            Census::Taken(sparse) => sparse.next_page(client, self.pager.page_size()).await?,
        };
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
                xmin: Some(r.get(7)),
            })
            .collect())
    }
}

impl Sparse {
    /// The profiles of the next `size` keys that are still pending (one
    /// settled meanwhile is left out), skipping batches of which none is.
    async fn next_page(
        &mut self,
        client: &impl GenericClient,
        size: usize,
    ) -> Result<Vec<tokio_postgres::Row>> {
        while self.next < self.keys.len() {
            let end = self.keys.len().min(self.next + size.max(1));
            let batch = &self.keys[self.next..end];
            let most = i64::try_from(batch.len()).unwrap_or(i64::MAX);
            let rows = client
                .query(&*self.sql, &[&batch, &most])
                .await
                .with_context(|| format!("cannot read the pending profiles from {}", batch[0]))?;
            self.next = end;
            if !rows.is_empty() {
                return Ok(rows);
            }
        }
        Ok(Vec::new())
    }
}

/// The keyset condition of `order` on the profiles, and the same bound on
/// the ledger where it can be repeated: without it PostgreSQL may
/// merge-join from the ledger's first row on every page, which makes a run
/// quadratic in the ledger's size.
fn keyset_bounds(order: Order, keyset: Keyset) -> (String, &'static str) {
    let bound = match keyset {
        Keyset::First => "",
        Keyset::After => order.ledger_bound(),
    };
    (keyset.condition(order.column()), bound)
}

/// The page query of a [`Reader`]: the profiles in `range` that `filter`
/// takes, each with its ledger entry, in key order.
fn page_sql(names: &Names, filter: Filter, order: Order, range: Range) -> String {
    let column = order.column();
    let (condition, bound) = match range {
        Range::Keyset(keyset) => keyset_bounds(order, keyset),
        Range::Keys => (format!("{column} = ANY($1::text[])"), ""),
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
        "SELECT p.key, p.id, p.\"userId\", p.legacy, p.fingerprint, l.latest_run, l.keys, p.xmin
           FROM (SELECT {column} AS key, p.id, p.\"userId\", p.\"socialLinks\"::text AS legacy,
                        {FINGERPRINT} AS fingerprint, {XMIN} AS xmin
                   FROM {{app}}.profiles p
                  WHERE p.\"socialLinks\" IS NOT NULL AND {condition} {pending}
                  ORDER BY {column}
                  LIMIT $2) p
          {ledger}
          ORDER BY p.key"
    ))
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
