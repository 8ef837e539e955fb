//! Users' own rows (SPEC §5): keyed like legacy values (trimmed,
//! scheme-repaired, parsed), so a row the application stored without a
//! scheme is the same link as a legacy `https` one, for `run` and `verify`.

use crate::harness::{assert_code, assert_success, json_summary, verify_check, TestDb};

async fn user_row(db: &TestDb, id: &str, user: &str, url: &str, position: i32) {
    db.exec("INSERT INTO profile_links (id, \"userId\", \"profileId\", label, url, type, position, \"updatedAt\")
             VALUES ($1, $2, 'p-' || $2, 'Mine', $3, 'other', $4, now())", &[&id, &user, &url, &position]).await;
}

#[tokio::test]
async fn a_scheme_less_row_and_a_legacy_https_link_are_one_link() {
    let db = TestDb::new("users_rows").await;
    db.batch(r#"INSERT INTO users (id) VALUES ('before'), ('after');
               INSERT INTO profiles (id, "userId", "socialLinks") VALUES
                 ('p-before', 'before', '{"website": "https://example.com/x"}'),
                 ('p-after', 'after', '{"website": "https://example.org/y", "blog": "https://blog.example.org/"}');"#).await;
    // The application stored this row before the migration, without a scheme.
    user_row(&db, "mine-1", "before", "www.example.com/x", 0).await;

    let out = db.run(&["run", "--format", "json"]);
    assert_success(&out);
    let summary = json_summary(&out);
    assert_eq!(
        (&summary["links_created"], &summary["duplicates"]),
        (&serde_json::json!(2), &serde_json::json!(1)),
        "the legacy https link is the user's row: {summary}"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM profile_links WHERE \"userId\" = 'before'")
            .await,
        1
    );
    let (out, report) = db.verify_json(&[]);
    assert_success(&out);
    assert_eq!(
        verify_check(&report, "duplicate (userId, comparison key) pairs"),
        ("ok".to_owned(), 0)
    );

    // After the migration the user adds the same link again, without a
    // scheme: verify reports the pair.
    user_row(&db, "mine-2", "after", " example.org/y/ ", 9).await;
    let (out, report) = db.verify_json(&[]);
    assert_code(&out, 3);
    assert_eq!(
        verify_check(&report, "duplicate (userId, comparison key) pairs"),
        ("fail".to_owned(), 1),
        "{report}"
    );
}
