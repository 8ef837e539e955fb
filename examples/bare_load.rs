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

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio_postgres::NoTls;

/// The columns loaded, as relink's COPY writes them.
const COLUMNS: &str =
    "id, \"userId\", \"profileId\", label, url, type, position, \"createdAt\", \"updatedAt\"";
/// Binary COPY's header: signature, flags, header extension length.
const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [from, to, writers, chunk] = args.as_slice() else {
        bail!("usage: bare_load FROM_URL TO_URL WRITERS ROWS_PER_CHUNK");
    };
    let writers: usize = writers.parse().context("WRITERS")?;
    let chunk: usize = chunk.parse().context("ROWS_PER_CHUNK")?;
    let rows = read_rows(from).await?;
    let chunks: Vec<Vec<u8>> = rows
        .chunks(chunk.max(1))
        .map(|tuples| {
            let mut data = HEADER.to_vec();
            for tuple in tuples {
                data.extend_from_slice(tuple);
            }
            data.extend_from_slice(&(-1i16).to_be_bytes());
            data
        })
        .collect();
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
            let sql = format!("COPY profile_links ({COLUMNS}) FROM STDIN (FORMAT binary)");
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(data) = chunks.get(i) else {
                    return Ok::<_, anyhow::Error>(());
                };
                let tx = client.transaction().await?;
                let sink = tx.copy_in(&sql).await?;
                futures_util::pin_mut!(sink);
                sink.send(bytes::Bytes::copy_from_slice(data)).await?;
                sink.finish().await?;
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
        rows.len(),
        chunks.len(),
        cpu_after.0 - cpu_before.0,
        cpu_after.1 - cpu_before.1
    );
    Ok(())
}

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

/// relink's rows in FROM, in `"userId"` order, each as one binary COPY
/// tuple (its field count, then each field's length and bytes).
async fn read_rows(from: &str) -> Result<Vec<Vec<u8>>> {
    let (client, connection) = tokio_postgres::connect(from, NoTls).await?;
    tokio::spawn(connection);
    let stream = client
        .copy_out(&format!(
            "COPY (SELECT {COLUMNS} FROM profile_links WHERE \"createdAt\" > '2024-01-01'
                    ORDER BY \"userId\", position) TO STDOUT (FORMAT binary)"
        ))
        .await?;
    futures_util::pin_mut!(stream);
    let mut data = Vec::new();
    while let Some(part) = stream.next().await {
        data.extend_from_slice(&part?);
    }
    split_tuples(&data)
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
