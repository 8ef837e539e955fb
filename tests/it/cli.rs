//! The binary's contract: preflight, exit codes, help, password redaction.

use crate::harness::{
    assert_code, assert_stderr_has, assert_success, stderr, stdout, with_dbname, TestDb,
};

#[tokio::test]
async fn preflight_passes_on_the_app_schema() {
    let db = TestDb::new("preflight_ok").await;
    for args in [&["verify"][..], &["status"], &["run", "--dry-run"]] {
        assert_success(&db.run(args));
    }
}

#[tokio::test]
async fn preflight_names_a_missing_column_for_every_command() {
    let db = TestDb::new("preflight_col").await;
    db.batch("ALTER TABLE profile_links DROP COLUMN position")
        .await;
    for args in [
        &["run"][..],
        &["run", "--dry-run"],
        &["verify"],
        &["status"],
        &["purge", "--yes"],
    ] {
        let out = db.run(args);
        assert_code(&out, 1);
        let err = stderr(&out);
        assert!(
            err.contains("profile_links.position does not exist"),
            "{args:?}: {err}"
        );
        assert!(
            err.contains("apply the application's schema migrations"),
            "{args:?}: {err}"
        );
    }
    // Nothing was created by the failed live run.
    assert_eq!(
        db.count("SELECT count(*) FROM pg_namespace WHERE nspname = 'relink'")
            .await,
        0
    );
}

#[tokio::test]
async fn preflight_names_a_missing_table() {
    let db = TestDb::empty("preflight_tbl").await;
    let out = db.run(&["verify"]);
    assert_code(&out, 1);
    assert_stderr_has(&out, "table public.users does not exist");
}

/// Over an unencrypted connection to a server that trusts everyone; the
/// paths where a password is really used (wrong password, `PGPASSWORD`,
/// the password file, failed TLS handshakes, md5 and SCRAM) are covered
/// against the TLS server by `tls::the_password_never_appears_in_any_output_over_tls`.
#[tokio::test]
async fn the_password_never_appears_in_any_output() {
    let db = TestDb::new("secret").await;
    db.generate(300);
    let secret = "Sup3rS3cretPw";
    let mut url = url::Url::parse(&db.url).expect("url");
    url.set_password(Some(secret)).expect("password");
    let good = url.to_string();
    let bad_db = with_dbname(&good, "relink_no_such_database");
    let mut bad_host = url.clone();
    bad_host.set_port(Some(1)).expect("port");
    let runs: Vec<(String, Vec<&str>)> = vec![
        (good.clone(), vec!["run", "--dry-run", "-v"]),
        (good.clone(), vec!["--log-format", "json", "-vv", "run"]),
        (good.clone(), vec!["verify", "--format", "json"]),
        (good.clone(), vec!["status"]),
        (good.clone(), vec!["run", "--chunk-size", "0"]),
        (bad_db, vec!["run"]),
        (
            bad_host.to_string(),
            vec!["--connect-timeout", "2", "status"],
        ),
    ];
    for (url, args) in runs {
        let out = db
            .relink()
            .env("DATABASE_URL", &url)
            .args(&args)
            .output()
            .expect("run");
        let all = format!("{}{}", stdout(&out), stderr(&out));
        assert!(
            !all.contains(secret),
            "{args:?} printed the password:\n{all}"
        );
    }
    // The flag form too, including --help (which shows env values otherwise).
    let out = db.run_on(&good, &["--database-url", &good, "status"]);
    assert!(!format!("{}{}", stdout(&out), stderr(&out)).contains(secret));
    let out = db
        .relink()
        .env("DATABASE_URL", &good)
        .arg("--help")
        .output()
        .expect("run");
    assert!(!stdout(&out).contains(secret));
}

#[tokio::test]
async fn bad_command_lines_exit_2() {
    let db = TestDb::new("usage").await;
    for args in [
        &["frobnicate"][..],
        &["run", "--chunk-size", "0"],
        &["run", "--chunk-size", "lots"],
        &["run", "--pause", "soon"],
        &["run", "--lock-timeout", "0s"],
        &["run", "--writers", "0"],
        &["purge", "--run", "0"],
        &["verify", "--format", "yaml"],
    ] {
        let out = db.run(args);
        assert_code(&out, 2);
        assert!(!stderr(&out).is_empty());
        assert!(!stderr(&out).contains("panicked"), "{args:?}");
    }
    // An unknown connection parameter is a bad command line too, named.
    let out = db
        .relink()
        .env("DATABASE_URL", format!("{}?sslmod=require", db.url))
        .arg("status")
        .output()
        .expect("run");
    assert_code(&out, 2);
    assert_stderr_has(&out, "\"sslmod\"");
}

#[tokio::test]
async fn without_a_url_libpq_environment_variables_reach_the_server() {
    let db = TestDb::new("pgenv").await;
    let url = url::Url::parse(&db.url).expect("test URL");
    let out = db
        .relink()
        .env_remove("DATABASE_URL")
        .env("PGHOST", url.host_str().expect("host"))
        .env("PGPORT", url.port().unwrap_or(5432).to_string())
        .env("PGUSER", url.username())
        .env("PGDATABASE", url.path().trim_start_matches('/'))
        .env("PGSSLMODE", "disable")
        .args(["status", "--format", "json"])
        .output()
        .expect("run");
    assert_success(&out);
    // Nothing answers there: the message names where it tried.
    let out = db
        .relink()
        .env_remove("DATABASE_URL")
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", "1")
        .env("PGUSER", "nobody")
        .arg("status")
        .output()
        .expect("run");
    assert_code(&out, 1);
    assert_stderr_has(&out, "127.0.0.1:1");
}

#[test]
fn help_teaches_the_flow_and_exit_codes() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_relink"))
        .arg("--help")
        .output()
        .expect("run");
    let help = stdout(&out);
    for needle in [
        "run",
        "purge",
        "verify",
        "status",
        "--dry-run",
        "Exit codes",
        "130",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}:\n{help}");
    }
    assert!(!help.contains("generate"), "the generator is hidden");
}
