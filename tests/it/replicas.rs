//! Replica lag (SPEC §13), against a real primary with a streaming replica
//! (`scripts/pg-server replica`): replay is paused on the replica, and
//! relink must stop committing chunks while the lag exceeds the limit, say
//! so, and finish equal to a clean run once replay resumes.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_postgres::Client;

use crate::harness::{
    assert_code, assert_no_panic, assert_stderr_has, assert_stdout_has, assert_success, connect,
    json_summary, links_checksum_of, spawn, stderr, Server, TestDb,
};

/// The end state of a clean plain run over the same generated data.
async fn clean_checksum(profiles: u64) -> String {
    let clean = TestDb::new("r_clean").await;
    clean.generate(profiles);
    assert_success(&clean.run(&["run"]));
    clean.links_checksum().await
}

async fn count(client: &Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.expect(sql).get(0)
}

/// What the run record says the run waits for, if anything.
async fn waiting(db: &TestDb) -> Option<String> {
    db.client
        .query_opt(
            "SELECT to_jsonb(r)->>'waiting' FROM relink.runs r WHERE status = 'running'",
            &[],
        )
        .await
        .ok()
        .flatten()
        .and_then(|r| r.get(0))
}

/// Runs relink with replay paused and `extra` arguments; checks that it
/// stops committing once the lag passes 2 s, waits naming `named`, and
/// completes equal to a clean run after replay resumes.
async fn lag_holds_the_run(tag: &str, extra: &[String], named: &str) {
    const PROFILES: u64 = 20_000;
    const CHUNK: i64 = 200;
    let expected = clean_checksum(PROFILES).await;
    let db = TestDb::on(Server::ReplicaExclusive, tag).await;
    db.generate(PROFILES);
    db.wait_replayed(Duration::from_secs(60)).await;

    let replay = db.pause_replay().await;
    let mut cmd = db.relink();
    cmd.args([
        "run",
        "--max-replica-lag",
        "2s",
        "--chunk-size",
        "200",
        // Slow enough (~10 s unheld) that the lag passes 2 s long before
        // the run could end: a fast machine must not finish first.
        "--max-rate",
        "4000",
        "--format",
        "json",
    ])
    .args(extra);
    let child = spawn(cmd);

    // The run waits, and the record says for which replica.
    let started = Instant::now();
    let reason = loop {
        if let Some(reason) = waiting(&db).await {
            break reason;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "relink never waited for the paused replica"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        reason.contains(named) && reason.contains("lags"),
        "{reason}"
    );
    let at_wait = db.ledger_rows().await;
    assert!(
        at_wait < i64::try_from(PROFILES).unwrap_or(i64::MAX) * 9 / 10,
        "the run was nearly done before it waited: {at_wait}"
    );
    // At most the chunks in flight (one per writer) commit after that.
    db.assert_ledger_settles(
        at_wait,
        2 * CHUNK,
        Duration::from_secs(2),
        "chunks committed while the replica lagged",
    )
    .await;

    replay.resume().await;
    let out = child.wait(Duration::from_secs(180)).await;
    assert_success(&out);
    assert_no_panic(&out);
    assert_stderr_has(&out, "waiting before the next chunk: replica");
    assert_stderr_has(&out, "carrying on after waiting");
    let summary = json_summary(&out);
    let waited = summary["throttled_seconds"]["replica_lag"]
        .as_f64()
        .unwrap_or_default();
    assert!(waited >= 4.0, "{summary}");
    assert_eq!(links_checksum_of(&db.client).await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_lag_read_on_the_primary_holds_chunks_until_replay_resumes() {
    let name = crate::harness::replica_set().replica_name.clone();
    lag_holds_the_run("r_lag_primary", &[], &name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_named_with_replica_is_measured_on_itself() {
    let replica_url = crate::harness::replica_set().replica_url.clone();
    // Named by its URL (without password) in the messages.
    lag_holds_the_run(
        "r_lag_named",
        &["--replica".to_owned(), replica_url],
        "127.0.0.1:",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replica_side_measure_sees_replay_stop() {
    let db = TestDb::on(Server::ReplicaExclusive, "r_measure").await;
    let replica = connect(&db.replica_url()).await;
    let before = relink::throttle::replica::replica_sample(&replica, "r")
        .await
        .expect("sample");
    let replay = db.pause_replay().await;
    db.batch("CREATE TABLE filler AS SELECT g AS n FROM generate_series(1, 50000) g")
        .await;
    let started = Instant::now();
    let paused = loop {
        let sample = relink::throttle::replica::replica_sample(&replica, "r")
            .await
            .expect("sample");
        if sample.pending_bytes > 0.0 {
            break sample;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no WAL pending"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Received but not replayed: the position stays where it was.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let later = relink::throttle::replica::replica_sample(&replica, "r")
        .await
        .expect("sample");
    assert_eq!(later.replay_lsn, paused.replay_lsn);
    assert!(later.pending_bytes >= paused.pending_bytes);
    replay.resume().await;
    db.wait_replayed(Duration::from_secs(30)).await;
    let after = relink::throttle::replica::replica_sample(&replica, "r")
        .await
        .expect("sample");
    assert_ne!(after.replay_lsn, before.replay_lsn);
    assert!(after.pending_bytes.abs() < f64::EPSILON, "{after:?}");
    // On the primary, not a replica: refused, naming the flag.
    let primary = connect(&db.url).await;
    let err = relink::throttle::replica::replica_sample(&primary, "p")
        .await
        .expect_err("a primary is not a replica");
    assert!(format!("{err:#}").contains("not a replica"), "{err:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_pg_monitor_relink_fails_closed_before_any_write_unless_off() {
    let db = TestDb::on(Server::Replica, "r_nomon").await;
    db.generate(300);
    let out = db.run_on(&db.nomon_url(), &["run"]);
    assert_code(&out, 1);
    let err = stderr(&out);
    assert!(err.contains("GRANT pg_monitor TO relink_nomon"), "{err}");
    assert!(err.contains("--max-replica-lag off"), "{err}");
    assert_eq!(
        count(
            &db.client,
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'relink'"
        )
        .await,
        0,
        "wrote before checking"
    );
    let out = db.run_on(&db.nomon_url(), &["run", "--max-replica-lag", "off"]);
    assert_success(&out);
    assert!(count(&db.client, "SELECT count(*) FROM relink.ledger").await > 0);
    // The same role may purge with the gate off too.
    let out = db.run_on(
        &db.nomon_url(),
        &["purge", "--yes", "--max-replica-lag", "off"],
    );
    assert_success(&out);
}

/// A TCP proxy to a replica that a test can cut and restore.
struct Proxy {
    port: u16,
    target: String,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let proxy = Self {
            port,
            target,
            tasks: Arc::new(Mutex::new(Vec::new())),
        };
        proxy.serve(listener);
        proxy
    }

    fn serve(&self, listener: TcpListener) {
        let (target, tasks) = (self.target.clone(), self.tasks.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                let pipe = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                if let Ok(mut t) = tasks.lock() {
                    t.push(pipe);
                }
            }
        });
        if let Ok(mut t) = self.tasks.lock() {
            t.push(accept);
        }
    }

    /// Closes the listener and every connection through it.
    fn cut(&self) {
        if let Ok(mut tasks) = self.tasks.lock() {
            for task in tasks.drain(..) {
                task.abort();
            }
        }
    }

    async fn restore(&self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("bind the proxy again");
        self.serve(listener);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_named_replica_stops_the_start_and_holds_a_run() {
    let db = TestDb::on(Server::Replica, "r_unreachable").await;
    db.generate(20_000);
    let out = db
        .relink()
        .args([
            "run",
            "--replica",
            "postgres://postgres@127.0.0.1:1/postgres",
        ])
        .output()
        .expect("run");
    assert_code(&out, 1);
    assert_stderr_has(&out, "--replica");
    assert_eq!(
        count(
            &db.client,
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'relink'"
        )
        .await,
        0
    );

    let replica = url::Url::parse(&db.replica_url()).expect("replica URL");
    let proxy = Proxy::start(format!(
        "{}:{}",
        replica.host_str().expect("host"),
        replica.port().expect("port")
    ))
    .await;
    let via_proxy = format!(
        "postgres://postgres@127.0.0.1:{}{}",
        proxy.port,
        replica.path()
    );
    let mut cmd = db.relink();
    cmd.args(["run", "--chunk-size", "200", "--replica", &via_proxy]);
    let child = spawn(cmd);
    let started = Instant::now();
    db.wait_for_ledger(Duration::from_secs(30)).await;
    proxy.cut();
    let reason = loop {
        if let Some(reason) = waiting(&db).await {
            break reason;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "relink went on blind"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(reason.contains("cannot reach replica"), "{reason}");
    let held = db.ledger_rows().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        db.ledger_rows().await - held <= 400,
        "went on while the replica was unreachable"
    );
    proxy.restore().await;
    let out = child.wait(Duration::from_secs(120)).await;
    assert_success(&out);
    assert_stdout_has(&out, "throttled: replica lag");
    assert_stderr_has(&out, "cannot reach replica");
}
