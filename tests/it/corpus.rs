//! The hand-written corpus (fixtures/corpus.json) checked literally against
//! the planning core: every link, every skipped value, every counter.

use relink::plan::{self, Context, ExistingLink};
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

/// The plan for an entry, as JSON comparable with its `expect`.
pub fn actual(entry: &Value) -> Value {
    let existing = existing(entry);
    let migrated = migrated(entry);
    let profile_id = entry["profileId"].as_str().expect("profileId");
    let p = plan::plan_profile(
        profile_id,
        &entry["socialLinks"],
        Context {
            existing: &existing,
            migrated: &migrated,
        },
    );
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
        if got != entry["expect"] {
            failures.push(format!(
                "{} ({})\n  expected: {}\n  actual:   {}",
                entry["name"], entry["note"], entry["expect"], got
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
