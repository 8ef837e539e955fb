//! Property tests of the planning core over arbitrary JSON: it never panics,
//! accounts for every value, never emits two links with one comparison key,
//! numbers positions contiguously, and is deterministic and idempotent.

use proptest::prelude::*;
use relink::plan::legacy;
use relink::plan::{plan_profile, Context, ExistingLink};
use serde_json::Value;

/// Strings that look like what legacy data holds, and some that do not.
fn messy_string() -> impl Strategy<Value = String> {
    prop_oneof![
        "(https?://)?(www\\.)?[a-z]{1,8}\\.(com|org|io|xn--p1ai)(/[a-zA-Z0-9]{0,6}){0,3}/?(\\?(utm_source|a|fbclid)=[a-z0-9]{0,3}(&[a-z]=1)?)?(#x)?",
        "@?[A-Za-z0-9._]{1,32}",
        "(javascript|mailto|ftp|localhost):[a-z0-9/@.]{0,10}",
        "https?://(\\[::1\\]|10\\.0\\.0\\.1|user:pw@x\\.com|localhost)/",
        "\\PC{0,40}",
        "[ \t\n]{0,3}",
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "website",
            "Website",
            "IMDB",
            "imdb",
            "Demo-Reel",
            "showreel",
            "instagram",
            "twitter",
            "x",
            "tiktok",
            "youtube",
            "portfolio",
            "url",
            "href",
            "link",
            "label",
            "type",
            "platform",
            "key",
            "blog",
        ])
        .prop_map(str::to_owned),
        "\\PC{0,12}",
    ]
}

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        messy_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// The value itself or its double-encoded form (shape 5).
fn social() -> impl Strategy<Value = Value> {
    json().prop_flat_map(|v| prop_oneof![Just(v.clone()), Just(Value::String(v.to_string()))])
}

fn existing() -> impl Strategy<Value = Vec<ExistingLink>> {
    prop::collection::vec(
        (messy_string(), 0i32..20).prop_map(|(url, position)| ExistingLink { url, position }),
        0..4,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn planning_holds_its_invariants(value in social(), existing in existing()) {
        let ctx = Context { existing: &existing, migrated: &[] };
        let plan = plan_profile("p", &value, ctx);

        // Every candidate value is accounted for: a link or a skip.
        let root = legacy::decode((&value).into());
        let candidates = legacy::candidates(root.json()).items.len();
        prop_assert_eq!(plan.links.len() + plan.skipped.len(), candidates);

        // No two links share a comparison key, nor one of the existing rows'.
        let mut keys = std::collections::HashSet::new();
        for link in &plan.links {
            prop_assert!(keys.insert(link.key.clone()), "duplicate key {}", link.key);
            prop_assert!(!existing.iter().any(|e| relink::plan::classify::stored_url_key(&e.url) == link.key));
            prop_assert!(link.url.len() <= 2048);
            prop_assert!((1..=40).contains(&link.label.chars().count()), "label {:?}", link.label);
        }

        // Positions are contiguous after the existing maximum.
        let start = existing.iter().map(|e| e.position + 1).max().unwrap_or(0);
        for (i, link) in plan.links.iter().enumerate() {
            prop_assert_eq!(i64::from(link.position), i64::from(start) + i64::try_from(i).unwrap_or(0));
        }

        // Deterministic.
        prop_assert_eq!(&plan_profile("p", &value, ctx), &plan);

        // Idempotent: with its own rows as existing, nothing new.
        let mut after = existing.clone();
        after.extend(plan.links.iter().map(|l| ExistingLink { url: l.url.clone(), position: l.position }));
        let again = plan_profile("p", &value, Context { existing: &after, migrated: &[] });
        prop_assert!(again.links.is_empty(), "replanning created {:?}", again.links);

        // Ledger keys alone also prevent re-creation (a deleted link stays deleted).
        let migrated: Vec<String> = plan.links.iter().map(|l| l.key.clone()).collect();
        let again = plan_profile("p", &value, Context { existing: &existing, migrated: &migrated });
        prop_assert!(again.links.is_empty());
    }
}
