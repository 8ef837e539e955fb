//! A dry run over real-world `socialLinks` values (`../shared/corpora/
//! real_world.jsonl`, read in place and never copied here, see its README):
//! every value accounted for, no well-known platform labelled by its
//! hostname, no panic. Skipped, with a note, where the file is absent.

use std::collections::HashMap;
use std::path::PathBuf;

use serde_json::Value;

use crate::harness::{assert_no_panic, assert_success, stdout, TestDb};

/// SPEC §4's host table, written out here independently of the planner:
/// the test's own oracle of "a well-known platform".
const HOST_TABLE: [&str; 22] = [
    "linkedin.com",
    "github.com",
    "twitter.com",
    "x.com",
    "instagram.com",
    "facebook.com",
    "fb.com",
    "youtube.com",
    "youtu.be",
    "tiktok.com",
    "vimeo.com",
    "soundcloud.com",
    "spotify.com",
    "behance.net",
    "medium.com",
    "dribbble.com",
    "gitlab.com",
    "twitch.tv",
    "pinterest.com",
    "threads.net",
    "bsky.app",
    "imdb.com",
];

fn corpus_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/corpora/real_world.jsonl")
}

/// How many legacy values a `socialLinks` value holds (SPEC §2), counted
/// here without the planner: one per object entry or array item, one for a
/// non-blank scalar, and a JSON string holding an object or array counts as
/// what it holds.
fn legacy_values(value: &Value) -> usize {
    match value {
        Value::Null => 0,
        Value::Object(map) => map.len(),
        Value::Array(items) => items.len(),
        Value::String(text) => {
            let decoded = serde_json::from_str::<Value>(text).ok();
            match decoded {
                Some(inner @ (Value::Object(_) | Value::Array(_))) => legacy_values(&inner),
                _ if text.chars().all(|c| c.is_whitespace() || c.is_control()) => 0,
                _ => 1,
            }
        }
        Value::Bool(_) | Value::Number(_) => 1,
    }
}

fn in_host_table(host: &str) -> bool {
    HOST_TABLE
        .iter()
        .any(|known| host == *known || host.ends_with(&format!(".{known}")))
}

#[tokio::test]
async fn a_dry_run_over_real_world_values_labels_well_known_platforms() {
    let path = corpus_path();
    let Ok(text) = std::fs::read_to_string(&path) else {
        eprintln!(
            "note: {} is absent; the real-world dry run is skipped",
            path.display()
        );
        return;
    };
    let values: Vec<(String, Value)> = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let mut record: Value = serde_json::from_str(line).expect("a JSON line");
            let name = record["name"].as_str().expect("name").to_owned();
            (name, record["socialLinks"].take())
        })
        .collect();
    assert!(values.len() > 100, "only {} values", values.len());

    let db = TestDb::new("real_world").await;
    for (i, (_, social)) in values.iter().enumerate() {
        let (user, profile) = (format!("u{i:03}"), format!("p{i:03}"));
        db.insert_profile(&user, &profile, &social.to_string())
            .await;
    }

    let out = db.run(&["run", "--dry-run", "--report", "-"]);
    assert_success(&out);
    assert_no_panic(&out);
    let mut planned: HashMap<String, Value> = HashMap::new();
    for line in stdout(&out).lines() {
        let report: Value = serde_json::from_str(line).expect("a JSONL report line");
        let id = report["profile_id"]
            .as_str()
            .expect("profile_id")
            .to_owned();
        planned.insert(id, report);
    }

    let (mut links, mut by_hostname, mut well_known) = (0usize, 0usize, Vec::new());
    let mut unaccounted = Vec::new();
    for (i, (name, social)) in values.iter().enumerate() {
        let report = planned.get(&format!("p{i:03}"));
        let count = |field: &str| report.and_then(|r| r[field].as_array()).map_or(0, Vec::len);
        let accounted = count("links") + count("duplicates") + count("rejects");
        if accounted != legacy_values(social) {
            unaccounted.push(format!("{name}: {accounted} of {}", legacy_values(social)));
        }
        for link in report
            .and_then(|r| r["links"].as_array())
            .into_iter()
            .flatten()
        {
            links += 1;
            let url = url::Url::parse(link["url"].as_str().expect("url")).expect("a valid url");
            let host = url.host_str().unwrap_or_default();
            let host = host.strip_prefix("www.").unwrap_or(host);
            let label = link["label"].as_str().expect("label");
            if !label.is_empty() && host.starts_with(label) && label.len() >= host.len().min(40) {
                by_hostname += 1;
                if in_host_table(host) {
                    well_known.push(format!("{name}: {label:?} for {url}"));
                }
            }
        }
    }
    println!(
        "real-world dry run: {} values, {links} links, {by_hostname} labelled by a bare hostname, \
         {} of them hosts of the host table",
        values.len(),
        well_known.len()
    );
    assert!(
        unaccounted.is_empty(),
        "values not accounted for (links + duplicates + rejects):\n{}",
        unaccounted.join("\n")
    );
    assert!(
        well_known.is_empty(),
        "{} links to well-known platforms labelled by their hostname, e.g.:\n{}",
        well_known.len(),
        well_known
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
