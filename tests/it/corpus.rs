//! The hand-written corpus (fixtures/corpus.json) checked literally against
//! the planning core: every link, every skipped value, every counter.

use relink::plan::{self, legacy, Context, ExistingLink};
use serde_json::Value;

pub const CORPUS: &str = include_str!("../../fixtures/corpus.json");

pub fn entries() -> Vec<Value> {
    serde_json::from_str::<Vec<Value>>(CORPUS).expect("fixtures/corpus.json parses")
}

pub fn existing(entry: &Value) -> Vec<ExistingLink> {
    entry["existing"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| ExistingLink {
                    url: r["url"].as_str().expect("existing url").to_owned(),
                    position: i32::try_from(r["position"].as_i64().expect("existing position"))
                        .expect("i32"),
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn migrated(entry: &Value) -> Vec<String> {
    entry["migrated"]
        .as_array()
        .map(|keys| {
            keys.iter()
                .map(|k| k.as_str().expect("key").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A text of the corpus: a string, or a list of parts (strings and
/// `{"repeat": s, "times": n}`) for long ones (fixtures/README.md).
pub fn text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .map(|part| match part.as_str() {
                Some(text) => text.to_owned(),
                None => {
                    let times = part["times"].as_u64().expect("times");
                    let times = usize::try_from(times).expect("a usize");
                    part["repeat"].as_str().expect("repeat").repeat(times)
                }
            })
            .collect(),
        other => panic!("a text is a string or a list of parts, not {other}"),
    }
}

/// The entry's legacy value as JSON text, as PostgreSQL hands it over:
/// `socialLinksText` (for values a parsed JSON value cannot hold), else
/// `socialLinks` written out.
pub fn social_text(entry: &Value) -> String {
    entry
        .get("socialLinksText")
        .map_or_else(|| entry["socialLinks"].to_string(), text)
}

/// The entry's `expect`, with long raw texts written out.
pub fn expected(entry: &Value) -> Value {
    let mut expect = entry["expect"].clone();
    for skipped in expect["skipped"].as_array_mut().into_iter().flatten() {
        skipped["raw"] = Value::String(text(&skipped["raw"]));
    }
    expect
}

/// An entry's user id: its `userId`, else `u-<name>`.
pub fn user_id(entry: &Value) -> String {
    entry["userId"].as_str().map_or_else(
        || format!("u-{}", entry["name"].as_str().expect("name")),
        str::to_owned,
    )
}

/// The plan for an entry, as JSON comparable with [`expected`]: from its
/// text through the reader's parser for `socialLinksText`, else from the
/// parsed `socialLinks`.
pub fn actual(entry: &Value) -> Value {
    let existing = existing(entry);
    let migrated = migrated(entry);
    let profile_id = entry["profileId"].as_str().expect("profileId");
    let user_id = user_id(entry);
    let ctx = Context {
        existing: &existing,
        migrated: &migrated,
    };
    let p = match entry.get("socialLinksText") {
        Some(social) => {
            plan::plan_profile(profile_id, &user_id, &legacy::parse(&text(social)), ctx)
        }
        None => plan::plan_profile(profile_id, &user_id, &entry["socialLinks"], ctx),
    };
    serde_json::json!({
        "links": p.links.iter().map(|l| serde_json::json!({
            "label": l.label, "type": l.link_type, "url": l.url, "position": l.position, "key": l.key, "id": l.id,
        })).collect::<Vec<_>>(),
        "skipped": p.skipped.iter().map(|s| serde_json::json!({"key": s.key, "raw": s.raw, "reason": s.reason})).collect::<Vec<_>>(),
        "expanded": p.expanded,
        "repaired": p.repaired,
    })
}

#[test]
fn every_corpus_entry_plans_exactly_as_written() {
    let entries = entries();
    assert!(
        entries.len() >= 80,
        "the corpus has {} entries",
        entries.len()
    );
    let mut failures = Vec::new();
    for entry in &entries {
        let got = actual(entry);
        if got != expected(entry) {
            // Cut: some entries hold megabytes.
            failures.push(format!(
                "{} ({})\n  expected: {:.3000}\n  actual:   {:.3000}",
                entry["name"],
                entry["note"],
                expected(entry).to_string(),
                got.to_string()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} corpus entries differ:\n{}",
        failures.len(),
        entries.len(),
        failures.join("\n")
    );
}

#[test]
fn the_corpus_covers_every_reject_reason_and_shape() {
    let mut reasons = std::collections::BTreeSet::new();
    for entry in entries() {
        for s in entry["expect"]["skipped"].as_array().into_iter().flatten() {
            reasons.insert(s["reason"].as_str().unwrap_or_default().to_owned());
        }
    }
    for reason in relink::plan::classify::RejectReason::ALL {
        assert!(
            reasons.contains(reason.as_str()),
            "no corpus entry rejects with {reason}"
        );
    }
    for dedupe in ["duplicate", "existing", "migrated"] {
        assert!(
            reasons.contains(dedupe),
            "no corpus entry skips as {dedupe}"
        );
    }
}
