//! The advisory lock across dropped connections, and waits that a signal
//! cuts short: one `run` or `purge` at a time, whatever happens to its
//! sessions (SPEC §6 "One at a time").

use std::time::Duration;

use crate::harness::{
    assert_code, assert_no_panic, assert_resumed, assert_stderr_has, assert_success, eventually,
    json_summary, scratch, send_signal, stdout, TestDb,
};

/// `pg_locks.classid` of relink's main advisory lock ("RLNK").
const MAIN_LOCK_CLASS: i64 = 0x524C_4E4B;

/// Terminates the backend holding relink's main lock key; whether there was one.
async fn terminate_main_lock_holder(db: &TestDb) -> bool {
    db.count(&format!(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(l.pid) FROM pg_locks l
          WHERE l.locktype = 'advisory' AND l.granted AND l.classid = {MAIN_LOCK_CLASS}
            AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())) t"
    ))
    .await
        > 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_keeps_its_lock_when_its_connection_drops_and_no_run_slips_in() {
    let db = TestDb::new("l_purge_keeps").await;
    db.generate(4000);
    let users_rows = db.count("SELECT count(*) FROM profile_links").await;
    assert_success(&db.run(&["run"]));
    let created = db.count("SELECT count(*) FROM profile_links").await;
    assert!(created > users_rows + 4000, "{created}");

    let purge = db.spawn(&["purge", "--yes", "--chunk-size", "10"]);
    eventually(Duration::from_secs(20), "purge never began", || async {
        db.count("SELECT count(*) FROM profile_links").await != created
    })
    .await;
    assert!(
        terminate_main_lock_holder(&db).await,
        "no backend held the main lock"
    );
    // Right behind the drop, and for a while after: a `run` must never get in.
    for _ in 0..5 {
        let out = db.run(&["run"]);
        assert_code(&out, 4);
        assert_stderr_has(&out, "holds the lock");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = purge.wait(Duration::from_secs(120)).await;
    assert_success(&out);
    assert_no_panic(&out);
    assert_stderr_has(&out, "lock taken again");
    // Everything relink created is gone, and nothing was created meanwhile.
    assert_eq!(
        db.count("SELECT count(*) FROM profile_links").await,
        users_rows
    );
    assert_eq!(
        db.count("SELECT count(*) FROM relink.runs WHERE mode = 'run'")
            .await,
        1
    );
    assert_eq!(
        db.count("SELECT count(*) FROM relink.runs WHERE mode = 'purge' AND status = 'completed'")
            .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_cuts_a_pause_short() {
    let db = TestDb::new("l_pause_signal").await;
    db.generate(2000);
    let child = db.spawn(&["run", "--chunk-size", "100", "--pause", "60s"]);
    eventually(Duration::from_secs(20), "no chunk committed", || async {
        db.count("SELECT count(*) FROM profile_links").await > 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    child.stop_with("INT", Duration::from_secs(5)).await;
    let out = db.run(&["run"]);
    assert_resumed(&out, 1);
    assert_success(&db.run(&["verify", "--strict"]));
}

/// Granted keys of relink's locks (both classes) in this database.
async fn relink_keys_held(db: &TestDb) -> i64 {
    db.count(&format!(
        "SELECT count(*) FROM pg_locks l
          WHERE l.locktype = 'advisory' AND l.granted AND l.classid IN ({MAIN_LOCK_CLASS}, {})
            AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        MAIN_LOCK_CLASS + 1
    ))
    .await
}

/// Each command that takes the lock gives both keys back before it exits,
/// so the next one (`relink run && relink purge --yes`) never finds them
/// held by a session the server has not yet seen close: stopped (by the
/// test hook) after it gave the lock back, with its sessions still open,
/// no key is held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_locking_command_gives_the_lock_back_before_it_exits() {
    let db = TestDb::new("l_released").await;
    db.generate(300);
    let dir = scratch("l_released");
    let plan = dir.join("plan.jsonl");
    assert_success(&db.run(&["run", "--dry-run", "--plan-out", path(&plan)]));
    let commands: [&[&str]; 4] = [
        &["run", "--plan", path(&plan)],
        &["repair", "--yes"],
        &["purge", "--yes"],
        &["run"],
    ];
    for args in commands {
        let child = db
            .spawn_stopped_at("exit", args, Duration::from_secs(60))
            .await;
        let sessions = db
            .count(
                "SELECT count(*) FROM pg_stat_activity
                  WHERE datname = current_database() AND application_name LIKE 'relink%'",
            )
            .await;
        assert!(
            sessions > 0,
            "relink {args:?}: no session open while stopped"
        );
        let held = relink_keys_held(&db).await;
        send_signal(child.pid, "CONT");
        let out = child.wait(Duration::from_secs(60)).await;
        assert_success(&out);
        assert_eq!(
            held, 0,
            "relink {args:?} was about to exit with its lock held"
        );
    }
    std::fs::remove_dir_all(&dir).expect("clean up");
}

/// The server ends relink's sessions just as the command is about to give
/// its lock back (a DBA's `pg_terminate_backend`, an idle-session reaper):
/// the keys went with the sessions, the unlock meets closed connections,
/// and the command still ends as it would have (exit 0, its summary);
/// the next command takes the lock at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_whose_lock_sessions_end_as_it_gives_the_lock_back_ends_cleanly() {
    let db = TestDb::new("l_release_ended").await;
    db.generate(300);
    let child = db
        .spawn_stopped_at(
            "release",
            &["run", "--format", "json"],
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(relink_keys_held(&db).await, 2, "stopped before the unlock");
    let ended = db
        .count(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity
              WHERE datname = current_database() AND application_name LIKE 'relink%'",
        )
        .await;
    assert!(ended >= 2, "relink's lock sessions: {ended} ended");
    send_signal(child.pid, "CONT");
    let out = child.wait(Duration::from_secs(60)).await;
    assert_success(&out);
    assert_no_panic(&out);
    assert!(
        json_summary(&out)["links_created"].as_u64() > Some(0),
        "{}",
        stdout(&out)
    );
    assert_eq!(relink_keys_held(&db).await, 0);
    let next = db.run(&["run", "--format", "json"]);
    assert_success(&next);
    assert_eq!(json_summary(&next)["links_created"], 0);
}

fn path(p: &std::path::Path) -> &str {
    p.to_str().expect("UTF-8 path")
}
