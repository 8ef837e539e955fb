//! Hostile legacy values end to end (SPEC §2 "Hostile parts never hide
//! valid links"): nesting as deep as this server lets PostgreSQL store it,
//! numbers beyond f64 and a 10 MB string, each beside a valid link, through
//! the dry run and the live run: the link is migrated, the hostile part is
//! one reject, nothing crashes.

use std::collections::HashMap;

use serde_json::Value;

use crate::harness::{assert_no_panic, assert_success, json_summary, stdout, TestDb};

/// The deepest `deep(depth)` PostgreSQL stores on this server (bounded by
/// its `max_stack_depth`), found by bisection on a scratch table.
async fn deepest(db: &TestDb, deep: impl Fn(usize) -> String) -> usize {
    db.batch("CREATE TEMP TABLE IF NOT EXISTS probe (v jsonb)")
        .await;
    let stores = |depth: usize| {
        let text = deep(depth);
        async move {
            db.client
                .execute("INSERT INTO probe VALUES ($1::text::jsonb)", &[&text])
                .await
                .is_ok()
        }
    };
    let (mut ok, mut too_deep) = (1usize, 1usize << 20);
    assert!(
        !stores(too_deep).await,
        "PostgreSQL stored {too_deep} levels"
    );
    while too_deep - ok > 1 {
        let mid = ok + (too_deep - ok) / 2;
        if stores(mid).await {
            ok = mid;
        } else {
            too_deep = mid;
        }
    }
    ok
}

async fn insert(db: &TestDb, id: &str, text: &str) -> Result<u64, tokio_postgres::Error> {
    db.client
        .execute(
            "INSERT INTO profiles (id, \"userId\", \"socialLinks\") VALUES ($1, $1, $2::text::jsonb)",
            &[&id, &text],
        )
        .await
}

/// A profile's valid link, and its rejects as (key, reason).
type Outcome = (&'static str, Vec<(Option<&'static str>, &'static str)>);

fn nested_arrays(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

fn nested_objects(depth: usize) -> String {
    format!("{}1{}", r#"{"a": "#.repeat(depth), "}".repeat(depth))
}

#[tokio::test]
async fn hostile_parts_beside_valid_links_are_one_reject_each() {
    let db = TestDb::new("hostile").await;
    let array_value = |depth| {
        format!(
            r#"["https://deep-array.example.com/", {}]"#,
            nested_arrays(depth - 1)
        )
    };
    let object_value = |depth| {
        format!(
            r#"{{"website": "https://deep-object.example.com/", "deep": {}}}"#,
            nested_objects(depth - 1)
        )
    };
    let array_depth = deepest(&db, array_value).await;
    let object_depth = deepest(&db, object_value).await;
    assert!(
        array_depth > 1000 && object_depth > 1000,
        "{array_depth} {object_depth}"
    );

    let sixty = "123456789012345678901234567890123456789012345678901234567890";
    let ten_mb = "a".repeat(10 * 1024 * 1024);
    let profiles = [
        ("h_array_200", array_value(200)),
        ("h_array_5000", array_value(5000)),
        (
            "h_numbers",
            format!(
                r#"{{"website": "https://numbers.example.com/", "big": 1e400, "sixty": {sixty}}}"#
            ),
        ),
        (
            "h_string",
            format!(r#"["https://big-string.example.com/", "https://big.example.com/{ten_mb}"]"#),
        ),
    ];
    for (id, _) in &profiles {
        db.exec("INSERT INTO users (id) VALUES ($1)", &[id]).await;
    }
    for (id, text) in &profiles {
        insert(&db, id, text)
            .await
            .unwrap_or_else(|e| panic!("insert {id}: {e}"));
    }
    // The deepest value the server stores; at that very limit PostgreSQL's
    // stack use varies by a frame or two between statements, so the next
    // shallower one if it must.
    let mut ids: Vec<&str> = profiles.iter().map(|(id, _)| *id).collect();
    let mut stored_depths = Vec::new();
    for (id, value, depth) in [
        (
            "h_array",
            &array_value as &dyn Fn(usize) -> String,
            array_depth,
        ),
        ("h_object", &object_value, object_depth),
    ] {
        db.exec("INSERT INTO users (id) VALUES ($1)", &[&id]).await;
        let mut stored = None;
        for depth in (depth.saturating_sub(20)..=depth).rev() {
            if insert(&db, id, &value(depth)).await.is_ok() {
                stored = Some(depth);
                break;
            }
        }
        let depth = stored.unwrap_or_else(|| panic!("{id} not stored near {depth}"));
        stored_depths.push(format!("{id} {depth}"));
        ids.push(id);
    }
    println!(
        "deepest values this server stores: arrays {array_depth}, objects {object_depth} \
         levels; profiles stored at {}",
        stored_depths.join(", ")
    );
    let expected: HashMap<&str, Outcome> = HashMap::from([
        (
            "h_array",
            (
                "https://deep-array.example.com/",
                vec![(None, "not_a_string")],
            ),
        ),
        (
            "h_object",
            (
                "https://deep-object.example.com/",
                vec![(Some("deep"), "not_a_string")],
            ),
        ),
        (
            "h_array_200",
            (
                "https://deep-array.example.com/",
                vec![(None, "not_a_string")],
            ),
        ),
        (
            "h_array_5000",
            (
                "https://deep-array.example.com/",
                vec![(None, "not_a_string")],
            ),
        ),
        (
            "h_numbers",
            (
                "https://numbers.example.com/",
                vec![
                    (Some("big"), "not_a_string"),
                    (Some("sixty"), "not_a_string"),
                ],
            ),
        ),
        (
            "h_string",
            ("https://big-string.example.com/", vec![(None, "too_long")]),
        ),
    ]);

    // The dry run plans each valid link and one reject per hostile part.
    let out = db.run(&["run", "--dry-run", "--report", "-"]);
    assert_success(&out);
    assert_no_panic(&out);
    let mut seen = 0;
    for line in stdout(&out).lines() {
        let report: Value = serde_json::from_str(line).expect("a JSONL line");
        let id = report["profile_id"].as_str().expect("profile_id");
        let (link, rejects) = &expected[id];
        let links: Vec<&str> = report["links"]
            .as_array()
            .expect("links")
            .iter()
            .map(|l| l["url"].as_str().expect("url"))
            .collect();
        assert_eq!(links, [*link], "{id}");
        let got: Vec<(Option<&str>, &str)> = report["rejects"]
            .as_array()
            .expect("rejects")
            .iter()
            .map(|r| (r["key"].as_str(), r["reason"].as_str().expect("reason")))
            .collect();
        assert_eq!(&got, rejects, "{id}");
        if id == "h_numbers" {
            let raws: Vec<&str> = report["rejects"]
                .as_array()
                .expect("rejects")
                .iter()
                .map(|r| r["raw"].as_str().expect("raw"))
                .collect();
            // As PostgreSQL writes them, not as a float would.
            assert_eq!(raws, [format!("1{}", "0".repeat(400)).as_str(), sixty]);
        }
        seen += 1;
    }
    assert_eq!(seen, ids.len());

    // The live run migrates the same, and records one reject row each.
    let out = db.run(&["run", "--format", "json"]);
    assert_success(&out);
    assert_no_panic(&out);
    let summary = json_summary(&out);
    assert_eq!(summary["links_created"], ids.len(), "{summary}");
    for (id, (link, rejects)) in &expected {
        let rows = db
            .client
            .query(
                "SELECT url FROM profile_links WHERE \"profileId\" = $1",
                &[id],
            )
            .await
            .expect("links");
        let urls: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        assert_eq!(urls, [*link], "{id}");
        let n = db
            .client
            .query_one(
                "SELECT count(*) FROM relink.rejects WHERE profile_id = $1",
                &[id],
            )
            .await
            .expect("rejects")
            .get::<_, i64>(0);
        assert_eq!(usize::try_from(n).ok(), Some(rejects.len()), "{id}");
    }
    let out = db.run(&["verify", "--strict"]);
    assert_success(&out);
}
