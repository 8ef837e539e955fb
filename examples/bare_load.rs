//! The limit yardstick of SPEC §11: a bare load of exactly the rows a live
//! run wrote. `make bench` runs it on a fresh copy of the database the run
//! started from:
//!
//!     cargo run --release --example bare_load -- FROM_URL TO_URL WRITERS ROWS_PER_CHUNK
//!
//! It reads the rows relink created from FROM (the run's copy; relink's rows
//! are those created after the generated data's 2024-01-01) in `"userId"`
//! order, as binary COPY, into memory, untimed; then, timed, it writes them
//! into TO's `profile_links` (same indexes, foreign keys and server) with
//! WRITERS connections, each committing one binary COPY of ROWS_PER_CHUNK
//! rows per transaction, the chunks dealt out in order as relink's writers
//! take theirs. Nothing else: no reading of profiles, no ledger, no
//! rejects, no checkpoint. It prints one line of JSON: rows, seconds,
//! chunks, and the CPU time of the timed part in clock ticks (Linux):
//! `cpu_busy_ticks`, the whole machine's busy time (the server's and the
//! loader's), and `cpu_own_ticks`, the loader's own.
//!
//! With `--bookkeeping` after the four arguments it loads, instead, what a
//! run writes beside the links: its ledger and rejects rows (FROM's
//! `relink.ledger_rows` and `relink.reject_rows`, in the order of their
//! index, into TO's, which must be empty), in as many transactions as the
//! links would take, each COPYing its share of both tables, as relink's
//! chunks do. With `--lock` it makes, instead, a run's lock phase alone
//! (SPEC §6 "Online"): the profiles of the run's links (FROM's), in
//! `"userId"` order, in as many transactions as the links would take, each
//! locking its share `FOR NO KEY UPDATE` and then their users `FOR KEY
//! SHARE`, with relink's own statements (`src/lock_phase.rs`), then
//! committing. `scripts/cost-floor` uses both to count what that
//! bookkeeping and those locks cost the server.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio_postgres::NoTls;

/// The columns loaded, as relink's COPY writes them.
const COLUMNS: &str =
    "id, \"userId\", \"profileId\", label, url, type, position, \"createdAt\", \"updatedAt\"";
/// What a run writes beside the links, in relink's default state schema.
const BOOKKEEPING: [&str; 2] = ["relink.ledger_rows", "relink.reject_rows"];
/// Binary COPY's header: signature, flags, header extension length.
const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (from, to, writers, chunk, mode) = match args.as_slice() {
        [from, to, writers, chunk] => (from, to, writers, chunk, ""),
        [from, to, writers, chunk, flag] if flag == "--bookkeeping" || flag == "--lock" => {
            (from, to, writers, chunk, flag.as_str())
        }
        _ => bail!(
            "usage: bare_load FROM_URL TO_URL WRITERS ROWS_PER_CHUNK [--bookkeeping | --lock]"
        ),
    };
    let writers: usize = writers.parse().context("WRITERS")?;
    let chunk: usize = chunk.parse().context("ROWS_PER_CHUNK")?;
    let links = read_rows(
        from,
        &format!(
            "SELECT {COLUMNS} FROM profile_links WHERE \"createdAt\" > '2024-01-01'
              ORDER BY \"userId\", position"
        ),
    )
    .await?;
    // Each chunk: the statements of one transaction.
    let count = links.len().div_ceil(chunk.max(1)).max(1);
    let chunks: Vec<Vec<Step>> = match mode {
        "--bookkeeping" => {
            let mut tables = Vec::new();
            for table in BOOKKEEPING {
                let rows = read_rows(
                    from,
                    &format!("SELECT * FROM {table} ORDER BY coalesce(user_uuid::text, user_text)"),
                )
                .await?;
                let sql = format!("COPY {table} FROM STDIN (FORMAT binary)");
                tables.push(in_chunks(&rows, count, |part| Step::copy(&sql, part)));
            }
            (0..count)
                .map(|i| tables.iter().filter_map(|t| t.get(i).cloned()).collect())
                .collect()
        }
        "--lock" => {
            let profiles = linked_profiles(from).await?;
            in_chunks(&profiles, count, |part| {
                vec![
                    Step::Lock(LOCK_PROFILES, part.iter().map(|(p, _)| p.clone()).collect()),
                    Step::Lock(LOCK_USERS, part.iter().map(|(_, u)| u.clone()).collect()),
                ]
            })
        }
        _ => {
            let sql = format!("COPY profile_links ({COLUMNS}) FROM STDIN (FORMAT binary)");
            links
                .chunks(chunk.max(1))
                .map(|tuples| vec![Step::copy(&sql, tuples)])
                .collect()
        }
    };
    let rows: usize = chunks.iter().flatten().map(Step::rows).sum();
    let chunks = Arc::new(chunks);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let cpu_before = cpu_ticks()?;
    let mut tasks = Vec::new();
    for _ in 0..writers.max(1) {
        let (to, chunks, next) = (to.clone(), chunks.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let (mut client, connection) = tokio_postgres::connect(&to, NoTls).await?;
            tokio::spawn(connection);
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(steps) = chunks.get(i) else {
                    return Ok::<_, anyhow::Error>(());
                };
                let tx = client.transaction().await?;
                for step in steps {
                    match step {
                        Step::Copy { sql, data, .. } => {
                            let sink = tx.copy_in(sql.as_str()).await?;
                            futures_util::pin_mut!(sink);
                            sink.send(bytes::Bytes::copy_from_slice(data)).await?;
                            sink.finish().await?;
                        }
                        Step::Lock(sql, ids) => {
                            tx.query(*sql, &[ids]).await?;
                        }
                    }
                }
                tx.commit().await?;
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu_after = cpu_ticks()?;
    println!(
        "{{\"rows\": {}, \"seconds\": {seconds:.3}, \"chunks\": {}, \"cpu_busy_ticks\": {}, \"cpu_own_ticks\": {}}}",
        rows,
        chunks.len(),
        cpu_after.0 - cpu_before.0,
        cpu_after.1 - cpu_before.1
    );
    Ok(())
}

/// One statement of a chunk's transaction.
#[derive(Clone)]
enum Step {
    /// A binary COPY of `rows` tuples.
    Copy {
        sql: String,
        data: Vec<u8>,
        rows: usize,
    },
    /// A locking statement over these ids.
    Lock(&'static str, Vec<String>),
}

impl Step {
    fn copy(sql: &str, tuples: &[Vec<u8>]) -> Self {
        Self::Copy {
            sql: sql.to_owned(),
            data: stream(tuples),
            rows: tuples.len(),
        }
    }

    /// The rows this step writes or locks.
    fn rows(&self) -> usize {
        match self {
            Self::Copy { rows, .. } => *rows,
            Self::Lock(_, ids) => ids.len(),
        }
    }
}

/// `items` cut into `count` chunks (fewer when there are fewer items), in
/// order, each made into a chunk's part by `make`.
fn in_chunks<T, P>(items: &[T], count: usize, make: impl Fn(&[T]) -> P) -> Vec<P> {
    items
        .chunks(items.len().div_ceil(count).max(1))
        .map(make)
        .collect()
}

/// The profiles of the run's links in FROM, with their users, in `"userId"`
/// order: the profiles relink's lock phase locked (at least).
async fn linked_profiles(from: &str) -> Result<Vec<(String, String)>> {
    let (client, connection) = tokio_postgres::connect(from, NoTls).await?;
    tokio::spawn(connection);
    Ok(client
        .query(
            "SELECT \"profileId\", min(\"userId\") FROM profile_links
              WHERE \"createdAt\" > '2024-01-01' GROUP BY \"profileId\"
              ORDER BY min(\"userId\"), \"profileId\"",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

/// relink's lock phase statements (`src/lock_phase.rs`), without what
/// relink reads back beside the lock (the value's fingerprint, and its
/// text when it changed).
const LOCK_PROFILES: &str = "SELECT l.id
   FROM unnest($1::text[]) WITH ORDINALITY AS c(id, ord)
  CROSS JOIN LATERAL (SELECT p.id FROM profiles p WHERE p.id = c.id FOR NO KEY UPDATE) l
  ORDER BY c.ord";
const LOCK_USERS: &str = "SELECT l.id
   FROM unnest($1::text[]) WITH ORDINALITY AS c(id, ord)
  CROSS JOIN LATERAL (SELECT u.id FROM users u WHERE u.id = c.id FOR KEY SHARE) l
  ORDER BY c.ord";

/// CPU time so far, in clock ticks: the whole machine's busy time
/// (`/proc/stat`: user, nice, system, irq, softirq, steal) and this
/// process's own (`/proc/self/stat`: user and system).
fn cpu_ticks() -> Result<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").context("/proc/stat")?;
    let cpu: Vec<u64> = stat
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("cpu "))
        .context("/proc/stat has no cpu line")?
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let busy = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| cpu.get(i)).sum();
    let own = std::fs::read_to_string("/proc/self/stat").context("/proc/self/stat")?;
    // After the command name in parentheses: state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = own
        .rsplit_once(')')
        .context("/proc/self/stat")?
        .1
        .split_whitespace()
        .collect();
    let ticks = |i: usize| -> Result<u64> {
        Ok(fields.get(i).context("/proc/self/stat is short")?.parse()?)
    };
    Ok((busy, ticks(11)? + ticks(12)?))
}

/// The rows of `query` in FROM, each as one binary COPY tuple (its field
/// count, then each field's length and bytes).
async fn read_rows(from: &str, query: &str) -> Result<Vec<Vec<u8>>> {
    let (client, connection) = tokio_postgres::connect(from, NoTls).await?;
    tokio::spawn(connection);
    let stream = client
        .copy_out(&format!("COPY ({query}) TO STDOUT (FORMAT binary)"))
        .await?;
    futures_util::pin_mut!(stream);
    let mut data = Vec::new();
    while let Some(part) = stream.next().await {
        data.extend_from_slice(&part?);
    }
    split_tuples(&data)
}

/// A binary COPY stream of `tuples`.
fn stream(tuples: &[Vec<u8>]) -> Vec<u8> {
    let mut data = HEADER.to_vec();
    for tuple in tuples {
        data.extend_from_slice(tuple);
    }
    data.extend_from_slice(&(-1i16).to_be_bytes());
    data
}

/// The tuples of a binary COPY stream.
fn split_tuples(data: &[u8]) -> Result<Vec<Vec<u8>>> {
    let body = data
        .strip_prefix(HEADER)
        .context("not a binary COPY stream without header extension")?;
    let mut tuples = Vec::new();
    let mut at = 0;
    loop {
        let count = i16::from_be_bytes(body[at..at + 2].try_into()?);
        if count == -1 {
            return Ok(tuples);
        }
        let start = at;
        at += 2;
        for _ in 0..count {
            let len = i32::from_be_bytes(body[at..at + 4].try_into()?);
            at += 4 + usize::try_from(len).unwrap_or(0);
        }
        tuples.push(body[start..at].to_vec());
    }
}
