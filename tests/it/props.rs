//! Property tests of the planning core over arbitrary JSON: it never panics,
//! accounts for every value, never emits two links with one comparison key,
//! numbers positions contiguously, and is deterministic and idempotent (also
//! against rows users stored without a scheme); the reader's text plans
//! like the parsed value; a hostile part beside valid links is one reject.

use proptest::prelude::*;
use relink::plan::legacy;
use relink::plan::{has_valid_link, plan_profile, Context, ExistingLink, RejectReason, SkipReason};
use serde_json::Value;

/// Strings that look like what legacy data holds, and some that do not.
fn messy_string() -> impl Strategy<Value = String> {
    prop_oneof![
        "(https?://)?(www\\.)?[a-z]{1,8}\\.(com|org|io|xn--p1ai)(/[a-zA-Z0-9]{0,6}){0,3}/?(\\?(utm_source|a|fbclid)=[a-z0-9]{0,3}(&[a-z]=1)?)?(#x)?",
        "@?[A-Za-z0-9._]{1,32}",
        // Well-known hosts (SPEC §4 host table), their subdomains and lookalikes.
        "(https?://)?(www\\.|m\\.|uk\\.)?(not)?(github|linkedin|x|bsky|youtu|imdb)\\.(com|be|app)(/[a-z]{0,6})?",
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
            // The other entry-object fields (SPEC §2 Entry objects).
            "value",
            "username",
            "handle",
            "network",
            "service",
            "provider",
            "name",
            "title",
            "icon",
            "text",
            "GitHub",
            "mastodon",
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

/// An object or an array (shapes 1-4), to put a hostile part into.
fn container() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::collection::vec(json(), 0..6).prop_map(Value::Array),
        prop::collection::btree_map(key(), json(), 0..6)
            .prop_map(|m| Value::Object(m.into_iter().collect())),
    ]
}

/// A hostile part as PostgreSQL writes it (SPEC §2): nesting beyond
/// serde_json's 128 levels (up to beyond PostgreSQL's own limit), or a
/// number beyond f64; and the raw text its reject shows.
fn hostile() -> impl Strategy<Value = (String, String)> {
    prop_oneof![
        (129usize..20_000).prop_map(|d| {
            let deep = format!("{}1{}", "[".repeat(d), "]".repeat(d));
            (deep.clone(), deep)
        }),
        // An object is an entry without URL field: raw null.
        (129usize..20_000).prop_map(|d| {
            let deep = format!("{}1{}", "{\"a\": ".repeat(d), "}".repeat(d));
            (deep, "null".to_owned())
        }),
        (309usize..2_000).prop_map(|n| {
            let big = format!("-1{}.5", "0".repeat(n));
            (big.clone(), big)
        }),
        Just(("[1e999, 2]".to_owned(), "[1e999,2]".to_owned())),
    ]
}

/// `value`'s JSON text with `part` as one more item, or under one more key
/// (one no generated key can be: keys hold no control characters).
fn with_part(value: &Value, part: &str, at: prop::sample::Index) -> String {
    let mut members: Vec<String> = match value {
        Value::Array(items) => items.iter().map(Value::to_string).collect(),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| format!("{}: {v}", Value::from(k.as_str())))
            .collect(),
        other => panic!("not a container: {other}"),
    };
    if value.is_array() {
        members.insert(at.index(members.len() + 1), part.to_owned());
        format!("[{}]", members.join(", "))
    } else {
        let member = format!("\"\\u0001hostile\": {part}");
        members.insert(at.index(members.len() + 1), member);
        format!("{{{}}}", members.join(", "))
    }
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
        let plan = plan_profile("p", "u", &value, ctx);

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
        prop_assert_eq!(&plan_profile("p", "u", &value, ctx), &plan);

        // Idempotent: with its own rows as existing, nothing new.
        let mut after = existing.clone();
        after.extend(plan.links.iter().map(|l| ExistingLink { url: l.url.clone(), position: l.position }));
        let again = plan_profile("p", "u", &value, Context { existing: &after, migrated: &[] });
        prop_assert!(again.links.is_empty(), "replanning created {:?}", again.links);

        // Users' rows stored without a scheme are the same links (SPEC §5).
        let mut bare = existing.clone();
        bare.extend(plan.links.iter().map(|l| ExistingLink {
            url: l.url.split_once("://").map_or(l.url.as_str(), |(_, rest)| rest).to_owned(),
            position: l.position,
        }));
        let again = plan_profile("p", "u", &value, Context { existing: &bare, migrated: &[] });
        prop_assert!(again.links.is_empty(), "replanning against bare rows created {:?}", again.links);

        // Ledger keys alone also prevent re-creation (a deleted link stays deleted).
        let migrated: Vec<String> = plan.links.iter().map(|l| l.key.clone()).collect();
        let again = plan_profile("p", "u", &value, Context { existing: &existing, migrated: &migrated });
        prop_assert!(again.links.is_empty());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// `has_valid_link` is exactly "some value is a link": when it says
    /// none, the plan is rejects only and the same whatever the user's rows
    /// and the ledger hold (a live run leaves such a profile unlocked).
    #[test]
    fn a_value_without_a_valid_link_plans_alike_in_every_context(
        value in social(),
        existing in existing(),
        migrated in prop::collection::vec(messy_string(), 0..3),
    ) {
        let alone = plan_profile("p", "u", &value, Context::default());
        let linking = !alone.links.is_empty() || alone.skipped.iter().any(|s| !s.reason.is_reject());
        prop_assert_eq!(has_valid_link(&value), linking);
        prop_assert_eq!(has_valid_link(&legacy::parse(&value.to_string())), linking);
        if !linking {
            let ctx = Context { existing: &existing, migrated: &migrated };
            prop_assert_eq!(&plan_profile("p", "u", &value, ctx), &alone);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// The reader's text (here with blanks between tokens, as PostgreSQL
    /// writes it) plans exactly like the parsed value: links, skipped values
    /// and their raw texts, counters.
    #[test]
    fn the_text_plans_like_the_parsed_value(value in social(), existing in existing()) {
        let ctx = Context { existing: &existing, migrated: &[] };
        let text = serde_json::to_string_pretty(&value).expect("JSON");
        prop_assert_eq!(
            plan_profile("p", "u", &legacy::parse(&text), ctx),
            plan_profile("p", "u", &value, ctx)
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// SPEC §2 "Hostile parts never hide valid links": the part is one
    /// not_a_string reject, everything else plans as without it.
    #[test]
    fn a_hostile_part_is_one_reject_beside_the_same_links(
        value in container(),
        (part, raw) in hostile(),
        at in any::<prop::sample::Index>(),
    ) {
        let clean = plan_profile("p", "u", &value, Context::default());
        let social = legacy::parse(&with_part(&value, &part, at));
        let plan = plan_profile("p", "u", &social, Context::default());
        prop_assert_eq!(&plan.links, &clean.links);
        prop_assert_eq!((plan.expanded, plan.repaired), (clean.expanded, clean.repaired));
        let mut added: Vec<_> = plan.skipped.clone();
        for skipped in &clean.skipped {
            let found = added.iter().position(|s| s == skipped);
            prop_assert!(found.is_some(), "{:?} went missing", skipped);
            added.remove(found.unwrap_or_default());
        }
        prop_assert_eq!(added.len(), 1);
        prop_assert_eq!(added[0].reason, SkipReason::Rejected(RejectReason::NotAString));
        prop_assert!(added[0].raw == raw, "raw {:.80}…", added[0].raw);
    }
}
