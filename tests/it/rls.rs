//! Row-level security (SPEC §1): the application's tables may have
//! policies (Supabase enables row-level security on every table its API
//! exposes). relink must see and write every row, so every command checks
//! at start that its role bypasses row-level security on `profiles` and
//! `profile_links`, and otherwise exits 1 before reading or writing
//! anything — no state schema, no row — naming the table, the role and the
//! fix:
//!
//! - a role the policies apply to: `run`, `run --dry-run`, `purge --yes`,
//!   `verify`, `status`, `pause` each refuse;
//! - the same role with `BYPASSRLS`: the run migrates exactly what a run
//!   on the same data without policies does, and adds no duplicate beside
//!   the rows the policies hide;
//! - the tables' owner passes, unless the table has `FORCE ROW LEVEL
//!   SECURITY`, which refuses even the owner;
//! - row-level security switched on under a run already past its checks
//!   (while it waits on `relink pause`): the server refuses the COPY, and
//!   the message names the table as the server knows it (no `{app}`
//!   placeholder).

use std::time::Duration;

use crate::harness::{
    assert_code, assert_no_panic, assert_success, json_summary, stderr, stdout, verify_check, Role,
    TestDb,
};

const PROFILES: u64 = 300;

/// A LOGIN role that may read and write the application's tables and
/// create relink's state schema, but is neither a superuser nor the tables'
/// owner.
async fn app_role(db: &TestDb) -> Role {
    db.role(
        "app",
        "GRANT CONNECT, CREATE ON DATABASE {db} TO {role};
         GRANT USAGE ON SCHEMA public TO {role};
         GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role};",
    )
    .await
}

/// Supabase-style policies: a row is visible to the user it belongs to
/// (here: nobody relink connects as), on both tables relink reads.
const POLICIES: &str = r#"
ALTER TABLE profiles ENABLE ROW LEVEL SECURITY;
ALTER TABLE profile_links ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_profile ON profiles
    USING ("userId" = current_setting('request.jwt.claim.sub', true));
CREATE POLICY own_links ON profile_links
    USING ("userId" = current_setting('request.jwt.claim.sub', true));
"#;

/// What relink could have written: its state schema, and `profile_links`.
async fn written(db: &TestDb) -> (i64, String) {
    (
        db.count("SELECT count(*) FROM pg_namespace WHERE nspname = 'relink'")
            .await,
        db.checksum("profile_links").await,
    )
}

/// The refusal: exit 1, one line naming row-level security, the role, the
/// tables and the fixes, with no placeholder left in it.
#[track_caller]
fn assert_refused(out: &std::process::Output, needles: &[&str]) {
    assert_code(out, 1);
    assert_no_panic(out);
    let err = stderr(out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("relink: error: row-level security applies to role "),
        "{err}"
    );
    for needle in needles {
        assert!(err.contains(needle), "expected {needle:?} in {err}");
    }
    assert!(!err.contains("{app}") && !err.contains("{state}"), "{err}");
    assert!(stdout(out).is_empty(), "{}", stdout(out));
}

#[tokio::test]
async fn row_level_security_stops_every_command_before_it_reads_or_writes_anything() {
    let db = TestDb::new("rls_refused").await;
    db.generate(PROFILES);
    let role = app_role(&db).await;
    db.batch(POLICIES).await;
    let before = written(&db).await;
    assert_eq!(before.0, 0);
    let commands: [&[&str]; 8] = [
        &["run"],
        &["run", "--dry-run"],
        &["purge", "--yes"],
        &["repair", "--yes"],
        &["verify"],
        &["status"],
        &["pause"],
        &["resume"],
    ];
    for args in commands {
        let out = db.run_on(&role.url, args);
        assert_refused(
            &out,
            &[
                &role.name,
                "public.profile_links (owned by postgres)",
                "public.profiles (owned by postgres)",
                &format!("ALTER ROLE \"{}\" BYPASSRLS", role.name),
                "run relink as the owner (postgres)",
                "COPY FROM is refused under row-level security",
            ],
        );
        assert_eq!(written(&db).await, before, "{args:?} wrote something");
    }
}

#[tokio::test]
async fn with_bypassrls_the_run_migrates_everything_and_no_duplicate_beside_hidden_rows() {
    let mut plain = TestDb::new("rls_plain").await;
    plain.generate(PROFILES);
    // The same data, then policies that hide every row from relink's role.
    let db = TestDb::clone_of(&mut plain, "rls_bypass").await;
    let role = app_role(&db).await;
    db.batch(POLICIES).await;
    let hidden = db.count("SELECT count(*) FROM profile_links").await;
    assert!(hidden > 0, "generate makes rows users created");
    db.batch(&format!("ALTER ROLE {} BYPASSRLS", role.name))
        .await;

    let out = db.run_on(&role.url, &["run", "--format", "json"]);
    assert_success(&out);
    let summary = json_summary(&out);
    let reference = plain.run(&["run", "--format", "json"]);
    assert_success(&reference);
    assert_eq!(
        summary["links_created"],
        json_summary(&reference)["links_created"]
    );
    assert_eq!(
        summary["duplicates"],
        json_summary(&reference)["duplicates"]
    );
    assert_eq!(db.links_checksum().await, plain.links_checksum().await);

    // The policies still in force, verify (as the role) sees every row: no
    // user has two rows for one link, nor two rows at one position.
    let mut cmd = db.relink();
    cmd.env("DATABASE_URL", &role.url)
        .args(["verify", "--strict", "--format", "json"]);
    let out = cmd.output().expect("verify");
    assert_success(&out);
    let report: serde_json::Value = serde_json::from_str(stdout(&out).trim()).expect("JSON");
    assert_eq!(
        verify_check(&report, "duplicate (userId, comparison key) pairs"),
        ("ok".to_owned(), 0)
    );
    assert_eq!(
        verify_check(&report, "users with duplicate positions"),
        ("ok".to_owned(), 0)
    );
    assert_eq!(
        verify_check(&report, "links total").1,
        u64::try_from(db.count("SELECT count(*) FROM profile_links").await).expect("count"),
        "verify counts the rows the policies hide too"
    );
}

#[tokio::test]
async fn the_owner_passes_unless_force_row_level_security_applies_the_policies_to_it_too() {
    let db = TestDb::new("rls_owner").await;
    db.generate(PROFILES);
    let role = app_role(&db).await;
    db.batch(&format!(
        "{POLICIES}
             ALTER TABLE profiles OWNER TO {r};
             ALTER TABLE profile_links OWNER TO {r};
             ALTER TABLE profile_links FORCE ROW LEVEL SECURITY;",
        r = role.name
    ))
    .await;
    let before = written(&db).await;
    let out = db.run_on(&role.url, &["run"]);
    assert_refused(
        &out,
        &[
            "public.profile_links (the role owns it, but FORCE ROW LEVEL SECURITY applies its policies to the owner too)",
            "ALTER TABLE \"public\".\"profile_links\" NO FORCE ROW LEVEL SECURITY",
        ],
    );
    // Only the forced table is named: the owner bypasses the other's.
    assert!(
        !stderr(&out).contains("public.profiles"),
        "{}",
        stderr(&out)
    );
    assert_eq!(written(&db).await, before);

    db.batch("ALTER TABLE profile_links NO FORCE ROW LEVEL SECURITY")
        .await;
    let out = db.run_on(&role.url, &["run", "--format", "json"]);
    assert_success(&out);
    assert!(json_summary(&out)["links_created"]
        .as_u64()
        .is_some_and(|n| n > 0));
}

#[tokio::test]
async fn row_level_security_switched_on_mid_run_fails_the_copy_naming_the_table() {
    let db = TestDb::new("rls_mid_run").await;
    db.generate(PROFILES);
    let role = app_role(&db).await;
    db.batch(&format!(
        "ALTER TABLE profiles OWNER TO {r}; ALTER TABLE profile_links OWNER TO {r};",
        r = role.name
    ))
    .await;
    // Held by a pause, the run passes its checks and waits before its
    // first chunk.
    assert_success(&db.run_on(&role.url, &["pause", "--reason", "test"]));
    let mut cmd = db.relink();
    cmd.env("DATABASE_URL", &role.url).args(["run"]);
    let run = crate::harness::spawn(cmd);
    db.wait_for_count(
        "SELECT count(*) FROM relink.runs WHERE status = 'running' AND waiting IS NOT NULL",
        Duration::from_secs(60),
        "the run never waited on the pause",
    )
    .await;
    db.batch(
        "ALTER TABLE profile_links ENABLE ROW LEVEL SECURITY;
             ALTER TABLE profile_links FORCE ROW LEVEL SECURITY;
             CREATE POLICY everything ON profile_links USING (true) WITH CHECK (true);",
    )
    .await;
    let links = db.checksum("profile_links").await;
    assert_success(&db.run(&["resume"]));
    let out = run.wait(Duration::from_secs(120)).await;
    assert_code(&out, 1);
    assert_no_panic(&out);
    let err = stderr(&out);
    assert!(
        err.contains("COPY into \"public\".profile_links")
            && err.contains("COPY FROM not supported with row-level security"),
        "{err}"
    );
    assert!(!err.contains("{app}") && !err.contains("{state}"), "{err}");
    assert_eq!(db.checksum("profile_links").await, links, "nothing written");
    assert_eq!(
        db.count("SELECT count(*) FROM relink.runs WHERE status = 'failed'")
            .await,
        1
    );
}
