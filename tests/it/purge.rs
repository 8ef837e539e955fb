//! `relink purge` (SPEC §8): deletes only the unedited rows relink created
//! (all, or one run's), never users' rows or `"socialLinks"`, refuses
//! without confirmation, previews with `--dry-run`, survives SIGKILL and
//! SIGINT, and a following `run` restores exactly what it removed.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::harness::{
    assert_code, assert_stderr_has, assert_success, json_summary, send_signal, stderr, stdout,
    TestDb,
};

/// One profile_links row, keyed by id elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Link {
    user: String,
    label: String,
    url: String,
    kind: String,
    position: i32,
}

async fn links(db: &TestDb) -> BTreeMap<String, Link> {
    db.client
        .query(
            "SELECT id, \"userId\", label, url, type, position FROM profile_links",
            &[],
        )
        .await
        .expect("profile_links")
        .iter()
        .map(|r| {
            (
                r.get(0),
                Link {
                    user: r.get(1),
                    label: r.get(2),
                    url: r.get(3),
                    kind: r.get(4),
                    position: r.get(5),
                },
            )
        })
        .collect()
}

/// Every link id the ledger records (optionally of one run).
async fn ledger_ids(db: &TestDb, run: Option<i64>) -> BTreeSet<String> {
    crate::harness::ledger_ids(&db.client, run).await
}

/// Users (with their profile and highest position) whose rows relink all
/// created, at least two each.
async fn users_with_only_migrated_rows(
    db: &TestDb,
    migrated: &BTreeSet<String>,
    n: i64,
) -> Vec<(String, String, i32)> {
    let ids: Vec<&String> = migrated.iter().collect();
    let rows = db
        .client
        .query(
            "SELECT \"userId\", \"profileId\", max(position) FROM profile_links
              GROUP BY 1, 2 HAVING bool_and(id = ANY($1)) AND count(*) >= 2
              ORDER BY 1 LIMIT $2",
            &[&ids, &n],
        )
        .await
        .expect("users");
    assert_eq!(rows.len(), usize::try_from(n).expect("n"));
    rows.iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

/// The user's row at position 0 (a migrated one for the users above).
async fn first_row(db: &TestDb, user: &str) -> String {
    db.client
        .query_one(
            "SELECT id FROM profile_links WHERE \"userId\" = $1 AND position = 0",
            &[&user],
        )
        .await
        .expect("row at position 0")
        .get(0)
}

/// What a user does through the new API to a migrated row.
async fn edit_row(db: &TestDb, id: &str) {
    let n = db
        .client
        .execute(
            "UPDATE profile_links SET label = 'Mine', \"updatedAt\" = \"updatedAt\" + interval '1 second' WHERE id = $1",
            &[&id],
        )
        .await
        .expect("edit");
    assert_eq!(n, 1);
}

async fn add_user_row(db: &TestDb, id: &str, user: &str, profile: &str, position: i32) {
    db.exec("INSERT INTO profile_links (id, \"userId\", \"profileId\", label, url, type, position, \"updatedAt\")
             VALUES ($1, $2, $3, 'My site', $4, 'website', $5, now())", &[&id, &user, &profile, &format!("https://{id}.example.net/"), &position]).await;
}

/// The figure on a line of the text summary that starts with `label`.
fn figure(text: &str, label: &str) -> u64 {
    text.lines()
        .find(|l| l.trim_start().starts_with(label))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no figure for {label:?} in:\n{text}"))
}

/// `restored` has exactly `before`'s rows (same ids and content). Positions
/// are equal too, except for `shifted` users: their re-created rows were
/// placed after the rows they kept (SPEC §5: max(existing) + 1, …, from 0
/// when none), in their original order.
fn assert_restored(
    before: &BTreeMap<String, Link>,
    restored: &BTreeMap<String, Link>,
    recreated: &BTreeSet<String>,
    shifted: &BTreeSet<String>,
) {
    assert_eq!(
        restored.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>(),
        "the rerun must re-create exactly the purged ids"
    );
    for (id, was) in before {
        let now = &restored[id];
        if shifted.contains(&was.user) {
            let strip = |l: &Link| {
                (
                    l.user.clone(),
                    l.label.clone(),
                    l.url.clone(),
                    l.kind.clone(),
                )
            };
            assert_eq!(strip(now), strip(was), "{id}");
        } else {
            assert_eq!(now, was, "{id}");
        }
    }
    for user in shifted {
        let rows = |m: &BTreeMap<String, Link>, again: bool| {
            let mut v: Vec<(i32, String)> = m
                .iter()
                .filter(|(id, l)| &l.user == user && recreated.contains(*id) == again)
                .map(|(id, l)| (l.position, id.clone()))
                .collect();
            v.sort();
            v
        };
        let kept = rows(restored, false);
        let (old, new) = (rows(before, true), rows(restored, true));
        assert!(!new.is_empty(), "{user}");
        let ids = |v: &[(i32, String)]| v.iter().map(|(_, id)| id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&new), ids(&old), "order of {user}'s re-created rows");
        let start = kept.iter().map(|(p, _)| p + 1).max().unwrap_or(0);
        let positions: Vec<i32> = new.iter().map(|(p, _)| *p).collect();
        let expected: Vec<i32> = (start..).take(new.len()).collect();
        assert_eq!(positions, expected, "positions of {user}");
    }
}

#[tokio::test]
async fn purge_deletes_only_unedited_migrated_rows_and_a_rerun_restores_them() {
    let db = TestDb::migrated("purge_main", 1000).await;
    let migrated = ledger_ids(&db, None).await;
    assert!(migrated.len() > 1500, "{}", migrated.len());

    // Two users add links through the new API; a third edits a migrated row.
    let users = users_with_only_migrated_rows(&db, &migrated, 3).await;
    let mut appended = BTreeSet::new();
    for (i, (user, profile, max)) in users[..2].iter().enumerate() {
        add_user_row(&db, &format!("user-made-{i}"), user, profile, max + 1).await;
        appended.insert(user.clone());
    }
    let edited = first_row(&db, &users[2].0).await;
    edit_row(&db, &edited).await;

    let before = links(&db).await;
    let profiles = db.checksum("profiles").await;
    let all = db.checksum_all().await;
    let to_delete = migrated.len() - 1;

    // No --yes and no terminal: refused, nothing deleted, nothing recorded.
    let out = db
        .relink()
        .arg("purge")
        .stdin(Stdio::null())
        .output()
        .expect("run relink");
    assert_code(&out, 1);
    assert_stderr_has(&out, "--yes");
    assert_eq!(db.checksum_all().await, all);

    // --dry-run: lists and counts, deletes nothing.
    let out = db.run(&["purge", "--dry-run"]);
    assert_success(&out);
    let text = stdout(&out);
    assert_eq!(
        figure(&text, "links would be deleted"),
        u64::try_from(to_delete).expect("u64"),
        "{text}"
    );
    assert_eq!(figure(&text, "kept: edited by users since"), 1);
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("[DRY RUN] Would delete "))
            .count(),
        to_delete
    );
    assert!(!text.contains(&edited), "the edited row is not listed");
    assert!(text
        .trim_end()
        .ends_with("This was a DRY RUN. No changes were made."));
    let out = db.run(&["purge", "--dry-run", "--format", "json"]);
    assert_success(&out);
    let preview = json_summary(&out);
    assert_eq!(preview["links_deleted"], to_delete, "{preview}");
    assert_eq!(preview["kept_edited"], 1, "{preview}");
    assert_eq!(preview["already_gone"], 0, "{preview}");
    assert_eq!(db.checksum_all().await, all);

    // --yes: exactly the unedited migrated rows go.
    let out = db.run(&["purge", "--yes", "--format", "json"]);
    assert_success(&out);
    let summary = json_summary(&out);
    assert_eq!(summary["status"], "completed", "{summary}");
    assert_eq!(summary["links_deleted"], to_delete, "{summary}");
    assert_eq!(summary["kept_edited"], 1, "{summary}");
    assert_eq!(summary["already_gone"], 0, "{summary}");
    let after = links(&db).await;
    let expected: BTreeMap<String, Link> = before
        .iter()
        .filter(|(id, _)| !migrated.contains(*id) || **id == edited)
        .map(|(id, l)| (id.clone(), l.clone()))
        .collect();
    assert_eq!(after.len(), before.len() - to_delete);
    assert_eq!(after, expected);
    assert_eq!(after[&edited].label, "Mine");
    assert!(after.contains_key("user-made-0") && after.contains_key("user-made-1"));
    assert_eq!(
        db.checksum("profiles").await,
        profiles,
        "\"socialLinks\" untouched"
    );

    // The dry run sees exactly the purged rows coming back.
    let out = db.run(&["run", "--dry-run", "--format", "json"]);
    assert_success(&out);
    assert_eq!(json_summary(&out)["links_created"], to_delete);

    // A rerun restores the purged rows with the same ids, the edited row
    // stays as edited and is not duplicated.
    let out = db.run(&["run", "--format", "json"]);
    assert_success(&out);
    assert_eq!(json_summary(&out)["links_created"], to_delete);
    let restored = links(&db).await;
    let recreated: BTreeSet<String> = migrated
        .iter()
        .filter(|id| **id != edited)
        .cloned()
        .collect();
    assert_restored(&before, &restored, &recreated, &appended);
    assert_eq!(restored[&edited], before[&edited]);
    let url = &before[&edited].url;
    assert_eq!(
        restored
            .values()
            .filter(|l| l.user == users[2].0 && &l.url == url)
            .count(),
        1,
        "the edited row was duplicated"
    );
    assert_success(&db.run(&["verify"]));
}

#[tokio::test]
async fn include_edited_also_deletes_edited_rows() {
    let db = TestDb::migrated("purge_incl", 1000).await;
    let original = links(&db).await;
    let migrated = ledger_ids(&db, None).await;
    let users = users_with_only_migrated_rows(&db, &migrated, 1).await;
    let edited = first_row(&db, &users[0].0).await;
    edit_row(&db, &edited).await;
    // A user without any rows creates one.
    let row = db
        .client
        .query_one(
            "SELECT id, \"userId\" FROM profiles p
              WHERE NOT EXISTS (SELECT 1 FROM profile_links pl WHERE pl.\"userId\" = p.\"userId\")
              ORDER BY id LIMIT 1",
            &[],
        )
        .await
        .expect("a user without rows");
    let (profile, user): (String, String) = (row.get(0), row.get(1));
    add_user_row(&db, "user-made", &user, &profile, 0).await;
    let profiles = db.checksum("profiles").await;

    let out = db.run(&["purge", "--yes", "--include-edited", "--format", "json"]);
    assert_success(&out);
    let summary = json_summary(&out);
    assert_eq!(summary["links_deleted"], migrated.len(), "{summary}");
    assert_eq!(summary["kept_edited"], 0, "{summary}");
    let after = links(&db).await;
    assert!(!after.contains_key(&edited), "the edited row is gone");
    let mut expected: BTreeMap<String, Link> = original
        .iter()
        .filter(|(id, _)| !migrated.contains(*id))
        .map(|(id, l)| (id.clone(), l.clone()))
        .collect();
    expected.insert("user-made".to_owned(), after["user-made"].clone());
    assert_eq!(after, expected, "only users' rows remain");
    assert_eq!(db.checksum("profiles").await, profiles);

    // Purged, edited or not: the rerun migrates them all again, as at first.
    let out = db.run(&["run", "--format", "json"]);
    assert_success(&out);
    assert_eq!(json_summary(&out)["links_created"], migrated.len());
    let mut restored = links(&db).await;
    assert!(restored.remove("user-made").is_some());
    assert_eq!(restored, original);
}

#[tokio::test]
async fn purge_of_one_run_removes_only_its_rows() {
    let db = TestDb::new("purge_one_run").await;
    db.generate(1000);
    let out = db.run(&["run", "--format", "json"]);
    assert_success(&out);
    assert_eq!(json_summary(&out)["run_id"], 1);
    let rows = db.migrated_object_profiles(5).await;
    assert_eq!(rows.len(), 5);
    for (i, (id, _)) in rows.iter().enumerate() {
        db.exec("UPDATE profiles SET \"socialLinks\" = \"socialLinks\" || jsonb_build_object('zz later', $2::text) WHERE id = $1", &[&id, &format!("https://run-two-{i}.example.org/")]).await;
    }
    let out = db.run(&["run", "--format", "json"]);
    assert_success(&out);
    let second = json_summary(&out);
    assert_eq!(second["run_id"], 2, "{second}");
    assert_eq!(second["links_created"], 5, "{second}");
    let run1 = ledger_ids(&db, Some(1)).await;
    let run2 = ledger_ids(&db, Some(2)).await;
    assert_eq!(run2.len(), 5);
    let before = links(&db).await;

    let out = db.run(&["purge", "--yes", "--run", "2", "--format", "json"]);
    assert_success(&out);
    let summary = json_summary(&out);
    assert_eq!(summary["links_deleted"], 5, "{summary}");
    assert_eq!(summary["scope_run"], 2, "{summary}");
    let after = links(&db).await;
    let expected: BTreeMap<String, Link> = before
        .iter()
        .filter(|(id, _)| !run2.contains(*id))
        .map(|(id, l)| (id.clone(), l.clone()))
        .collect();
    assert_eq!(after, expected);
    assert!(run1.iter().all(|id| after.contains_key(id)));
    assert_eq!(ledger_ids(&db, Some(1)).await, run1);

    let out = db.run(&["run", "--format", "json"]);
    assert_success(&out);
    assert_eq!(json_summary(&out)["links_created"], 5);
    assert_eq!(links(&db).await, before, "the same 5 ids, in place");
}

#[tokio::test]
async fn purge_refuses_an_unknown_run_and_a_database_never_migrated() {
    let db = TestDb::new("purge_nope").await;
    db.generate(300);
    let out = db.run(&["purge", "--yes"]);
    assert_code(&out, 1);
    assert_stderr_has(&out, "nothing to purge");
    assert_eq!(
        db.count("SELECT count(*) FROM pg_namespace WHERE nspname = 'relink'")
            .await,
        0
    );

    assert_success(&db.run(&["run"]));
    let before = db.checksum_all().await;
    let links_before = db.count("SELECT count(*) FROM profile_links").await;
    assert!(links_before > 400);
    for args in [
        &["purge", "--yes", "--run", "999"][..],
        &["purge", "--dry-run", "--run", "999"],
    ] {
        let out = db.run(args);
        assert_code(&out, 1);
        assert!(
            stderr(&out).contains("run 999"),
            "{args:?}: {}",
            stderr(&out)
        );
        assert_eq!(db.checksum_all().await, before, "{args:?}");
    }

    // A purge's own run id is not a migration run to purge.
    let out = db.run(&["purge", "--yes", "--format", "json"]);
    assert_success(&out);
    let summary = json_summary(&out);
    assert_eq!(summary["run_id"], 2, "{summary}");
    assert_eq!(
        summary["links_deleted"],
        links_before - db.count("SELECT count(*) FROM profile_links").await,
        "{summary}"
    );
    let before = db.checksum_all().await;
    let out = db.run(&["purge", "--yes", "--run", "2"]);
    assert_code(&out, 1);
    assert_stderr_has(&out, "run 2 is a purge run");
    assert_eq!(db.checksum_all().await, before);
}

#[tokio::test]
async fn rows_users_deleted_count_as_gone_and_are_never_resurrected() {
    let db = TestDb::migrated("purge_gone", 1000).await;
    let migrated = ledger_ids(&db, None).await;
    let users = users_with_only_migrated_rows(&db, &migrated, 1).await;
    let deleted = first_row(&db, &users[0].0).await;
    db.exec("DELETE FROM profile_links WHERE id = $1", &[&deleted])
        .await;
    let before = links(&db).await;

    let out = db.run(&["purge", "--dry-run"]);
    assert_success(&out);
    assert_eq!(figure(&stdout(&out), "already gone (deleted by users)"), 1);
    let out = db.run(&["purge", "--yes", "--format", "json"]);
    assert_success(&out);
    let summary = json_summary(&out);
    assert_eq!(summary["already_gone"], 1, "{summary}");
    assert_eq!(summary["links_deleted"], migrated.len() - 1, "{summary}");
    assert_eq!(summary["kept_edited"], 0, "{summary}");
    assert!(links(&db).await.keys().all(|id| !migrated.contains(id)));

    let out = db.run(&["run", "--format", "json"]);
    assert_success(&out);
    assert_eq!(json_summary(&out)["links_created"], migrated.len() - 1);
    let restored = links(&db).await;
    assert!(!restored.contains_key(&deleted), "resurrected {deleted}");
    let recreated: BTreeSet<String> = migrated
        .iter()
        .filter(|id| **id != deleted)
        .cloned()
        .collect();
    let shifted = BTreeSet::from([users[0].0.clone()]);
    assert_restored(&before, &restored, &recreated, &shifted);
}

/// Interrupts `purge --yes --chunk-size 200` with `signal` once some rows
/// are gone, purges again, and compares with one clean purge on a copy.
async fn interrupted_purge_equals_clean_purge(tag: &str, signal: &str, expect_code: Option<i32>) {
    let mut db = TestDb::new(tag).await;
    db.generate(20_000);
    assert_success(&db.run(&["run", "-q"]));
    // An edited row and a deleted one, so the ledger keeps rows after a purge.
    let migrated = ledger_ids(&db, None).await;
    let users = users_with_only_migrated_rows(&db, &migrated, 2).await;
    let edited = first_row(&db, &users[0].0).await;
    edit_row(&db, &edited).await;
    let deleted = first_row(&db, &users[1].0).await;
    db.exec("DELETE FROM profile_links WHERE id = $1", &[&deleted])
        .await;
    let clean = TestDb::clone_of(&mut db, &format!("{tag}_c")).await;
    assert_success(&clean.run(&["purge", "--yes", "-q"]));
    let total = db.count("SELECT count(*) FROM profile_links").await;
    let end = clean.count("SELECT count(*) FROM profile_links").await;
    assert!(total - end > 30_000, "{total} → {end}");

    let mut child = db
        .relink()
        .args(["purge", "--yes", "--chunk-size", "200", "-q"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!("purge ended ({status}) before it could be interrupted");
        }
        let n = db.count("SELECT count(*) FROM profile_links").await;
        if n < total && n > end {
            send_signal(child.id(), signal);
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = child.wait_with_output().expect("wait");
    match expect_code {
        Some(code) => assert_code(&out, code),
        None => assert_eq!(out.status.code(), None, "killed by a signal"),
    }
    let mid = db.count("SELECT count(*) FROM profile_links").await;
    assert!(
        mid < total && mid > end,
        "stopped mid-way: {total} → {mid} → {end}"
    );
    if expect_code == Some(130) {
        assert_eq!(
            db.count(
                "SELECT count(*) FROM relink.runs WHERE mode = 'purge' AND status = 'interrupted'"
            )
            .await,
            1
        );
    }
    // The killed process's sessions (one holds the lock) end on the server.
    while db
        .count("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name LIKE 'relink purge%'")
        .await
        > 0
    {
        assert!(started.elapsed() < Duration::from_secs(90), "sessions linger");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let out = db.run(&["purge", "--yes", "--format", "json"]);
    assert_success(&out);
    assert_eq!(json_summary(&out)["status"], "completed");
    for table in [
        "profile_links",
        "relink.ledger",
        "relink.rejects",
        "profiles",
    ] {
        assert_eq!(
            db.checksum(table).await,
            clean.checksum(table).await,
            "{table} differs from a clean purge"
        );
    }
    assert_eq!(db.count("SELECT count(*) FROM profile_links").await, end);

    // And both migrate again to the same rows (timestamps aside).
    assert_success(&db.run(&["run", "-q"]));
    assert_success(&clean.run(&["run", "-q"]));
    let again = links(&db).await;
    assert!(again.len() > 30_000, "{}", again.len());
    assert_eq!(again, links(&clean).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_mid_purge_then_purge_equals_a_clean_purge() {
    interrupted_purge_equals_clean_purge("purge_kill", "KILL", None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigint_mid_purge_exits_130_and_purge_completes_to_a_clean_purge() {
    interrupted_purge_equals_clean_purge("purge_int", "INT", Some(130)).await;
}

/// `relink purge` on a terminal (a pty from script(1)), answering `answer`.
fn purge_on_a_terminal(db: &TestDb, answer: &str) -> std::process::Output {
    use std::io::Write as _;
    let cmd = format!("'{}' purge", env!("CARGO_BIN_EXE_relink"));
    let mut child = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("DATABASE_URL", &db.url)
        .env_remove("RELINK_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script(1) from util-linux runs relink on a pseudo-terminal");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(answer.as_bytes())
        .expect("answer");
    child.wait_with_output().expect("wait")
}

#[tokio::test]
async fn on_a_terminal_purge_asks_and_only_yes_purges() {
    let db = TestDb::migrated("purge_tty", 300).await;
    let migrated = ledger_ids(&db, None).await;
    assert!(migrated.len() > 400);
    let before = db.checksum_all().await;
    for answer in ["n\n", "\n", "maybe\n"] {
        let out = purge_on_a_terminal(&db, answer);
        assert_code(&out, 1);
        let text = stdout(&out);
        assert!(text.contains("[y/N]"), "{answer:?}: {text}");
        assert!(text.contains("nothing was deleted"), "{answer:?}: {text}");
        assert_eq!(db.checksum_all().await, before, "{answer:?}");
    }
    let out = purge_on_a_terminal(&db, "y\n");
    assert_success(&out);
    assert_eq!(
        figure(&stdout(&out), "links deleted"),
        u64::try_from(migrated.len()).expect("u64")
    );
    assert!(links(&db).await.keys().all(|id| !migrated.contains(id)));
}
