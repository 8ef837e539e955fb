//! Per-profile planning (SPEC §5): candidates classified, ordered, deduplicated
//! within the profile and against the user's rows and the ledger, then given
//! positions and deterministic ids. The one copy of the rules that dry run,
//! live run and verify all call. Pure: no I/O, no clock.

use std::collections::{HashMap, HashSet};

use serde::Serialize;
use url::Url;
use uuid::Uuid;

use super::classify::{self, RejectReason, MAX_URL_BYTES};
use super::legacy::{self, Candidate, Json};
use super::link_type::LinkType;

/// Namespace of link ids (SPEC §5).
pub const ID_NAMESPACE: Uuid = Uuid::from_u128(0x6f0c0b5e_8f5a_4f3e_9a57_3c1d2b7e9a10);

/// A row the user already has in `profile_links`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExistingLink {
    pub url: String,
    pub position: i32,
}

/// What is already there for one profile when it is planned.
#[derive(Debug, Clone, Copy, Default)]
pub struct Context<'a> {
    /// The user's current `profile_links` rows.
    pub existing: &'a [ExistingLink],
    /// Comparison keys of links relink created for this profile before; a
    /// link the user deleted since must not come back.
    pub migrated: &'a [String],
}

/// One row to insert into `profile_links`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedLink {
    pub id: String,
    pub label: String,
    #[serde(rename = "type")]
    pub link_type: LinkType,
    pub url: String,
    pub position: i32,
    /// Comparison key (SPEC §3 step 6); recorded in the ledger, not stored.
    pub key: String,
    /// The legacy key it came from, as written.
    pub source_key: Option<String>,
}

/// Why a legacy value produced no row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SkipReason {
    Rejected(RejectReason),
    /// Same comparison key as an earlier link of this profile.
    Duplicate,
    /// Same comparison key as one of the user's current rows.
    Existing,
    /// Created by relink before and deleted by the user since.
    Migrated,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rejected(reason) => reason.as_str(),
            Self::Duplicate => "duplicate",
            Self::Existing => "existing",
            Self::Migrated => "migrated",
        }
    }

    pub fn is_reject(self) -> bool {
        matches!(self, Self::Rejected(_))
    }
}

impl Serialize for SkipReason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A legacy value that produced no row, with its reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    pub key: Option<String>,
    /// The comparison key, when the value was a valid URL (duplicates).
    #[serde(skip)]
    pub link_key: Option<String>,
    /// The value as written: a string's text, else its compact JSON.
    pub raw: String,
    pub reason: SkipReason,
}

/// Everything one profile's legacy value yields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProfilePlan {
    pub links: Vec<PlannedLink>,
    pub skipped: Vec<Skipped>,
    pub expanded: u32,
    pub repaired: u32,
}

impl ProfilePlan {
    pub fn rejects(&self) -> impl Iterator<Item = &Skipped> {
        self.skipped.iter().filter(|s| s.reason.is_reject())
    }

    pub fn duplicates(&self) -> impl Iterator<Item = &Skipped> {
        self.skipped.iter().filter(|s| !s.reason.is_reject())
    }
}

/// The id of a link (SPEC §5): UUID v5 of `"{profileId}\n{key}"`, and,
/// when the user id begins with eight hex digits (as UUIDs do), those
/// digits (lowercased) in place of its first eight and version digit 8
/// (UUID v8). The rows of one user then sit together in the primary key,
/// which a run in `"userId"` order fills at its right edge (SPEC §6 "Write
/// order") however random the user ids are. Deterministic, like v5 alone.
pub fn link_id(profile_id: &str, user_id: &str, key: &str) -> String {
    let v5 = v5_link_id(profile_id, key);
    match user_prefix(user_id) {
        Some(prefix) => {
            let mut bytes = *v5.as_bytes();
            bytes[..4].copy_from_slice(&prefix);
            // Version 8 (RFC 9562: custom); the variant bits stay v5's.
            bytes[6] = (bytes[6] & 0x0f) | 0x80;
            Uuid::from_bytes(bytes).hyphenated().to_string()
        }
        None => v5.hyphenated().to_string(),
    }
}

/// Every id a link of this profile, user and key can have: the current
/// rule's ([`link_id`]) first, then, if it differs, the plain v5 id that
/// releases before the v8 rule gave it. Purge and verify look rows up by
/// both, so links an earlier release created keep working.
pub fn link_ids(profile_id: &str, user_id: &str, key: &str) -> impl Iterator<Item = String> {
    let current = link_id(profile_id, user_id, key);
    let earlier = v5_link_id(profile_id, key).hyphenated().to_string();
    let earlier = (earlier != current).then_some(earlier);
    std::iter::once(current).chain(earlier)
}

fn v5_link_id(profile_id: &str, key: &str) -> Uuid {
    let name = format!("{profile_id}\n{key}");
    Uuid::new_v5(&ID_NAMESPACE, name.as_bytes())
}

/// The first four bytes of a user id that begins with eight hex digits.
fn user_prefix(user_id: &str) -> Option<[u8; 4]> {
    let hex = user_id.get(..8)?;
    let value = u32::from_str_radix(hex, 16).ok()?;
    // from_str_radix accepts a leading '+'; a hex digit it is not.
    hex.bytes()
        .all(|b| b.is_ascii_hexdigit())
        .then_some(value.to_be_bytes())
}

/// Whether any value of the profile's legacy value is a valid link. When
/// none is, every plan of it, whatever the user's rows and the ledger,
/// creates no row and keeps none: only rejects (as [`plan_profile`] would
/// list them). A live run then need not lock the profile (SPEC §6
/// "Online": it changes none of the user's links). Stops at the first
/// valid one.
pub fn has_valid_link<'a>(social: impl Into<Json<'a>>) -> bool {
    let root = legacy::decode(social.into());
    legacy::candidates(root.json())
        .items
        .iter()
        .any(|c| classify::classify(c).outcome.is_ok())
}

/// Plans one profile's legacy value (the reader's [`legacy::Social`], or a
/// parsed `serde_json::Value`): the rows to insert and every value that
/// yields none.
pub fn plan_profile<'a>(
    profile_id: &str,
    user_id: &str,
    social: impl Into<Json<'a>>,
    ctx: Context<'_>,
) -> ProfilePlan {
    let root = legacy::decode(social.into());
    let candidates = legacy::candidates(root.json());
    let mut classified: Vec<(Candidate<'_>, classify::Classified)> = candidates
        .items
        .into_iter()
        .map(|c| {
            let result = classify::classify(&c);
            (c, result)
        })
        .collect();
    if candidates.from_object {
        // JSONB objects keep no key order: by type, then key bytes (SPEC §2).
        // The sort is stable and keys in one object are unique.
        classified.sort_by(|(a, ca), (b, cb)| {
            (
                classify::order_type(a, ca),
                a.key.as_deref().map(str::as_bytes),
            )
                .cmp(&(
                    classify::order_type(b, cb),
                    b.key.as_deref().map(str::as_bytes),
                ))
        });
    }

    let existing: HashSet<String> = ctx
        .existing
        .iter()
        .map(|row| classify::stored_url_key(&row.url))
        .collect();
    let migrated: HashSet<&str> = ctx.migrated.iter().map(String::as_str).collect();
    // Positions follow the user's highest; saturating keeps an absurd
    // i32::MAX from panicking (verify would then report duplicate positions).
    let mut next_position = ctx
        .existing
        .iter()
        .map(|row| row.position.saturating_add(1))
        .max()
        .unwrap_or(0);

    let mut plan = ProfilePlan::default();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (candidate, result) in classified {
        plan.expanded += u32::from(result.expanded);
        plan.repaired += u32::from(result.repaired);
        let skip = |reason, link_key: Option<&str>| Skipped {
            key: candidate.key.as_deref().map(str::to_owned),
            link_key: link_key.map(str::to_owned),
            raw: candidate.value.map_or_else(|| "null".to_owned(), Json::raw),
            reason,
        };
        let link = match result.outcome {
            Ok(link) => link,
            Err(reason) => {
                plan.skipped.push(skip(SkipReason::Rejected(reason), None));
                continue;
            }
        };
        if existing.contains(&link.key) {
            plan.skipped
                .push(skip(SkipReason::Existing, Some(&link.key)));
        } else if migrated.contains(link.key.as_str()) {
            plan.skipped
                .push(skip(SkipReason::Migrated, Some(&link.key)));
        } else if let Some(&kept) = seen.get(&link.key) {
            if link.url.scheme() == "https" {
                prefer_https(&mut plan.links[kept]);
            }
            plan.skipped
                .push(skip(SkipReason::Duplicate, Some(&link.key)));
        } else {
            seen.insert(link.key.clone(), plan.links.len());
            plan.links.push(PlannedLink {
                id: link_id(profile_id, user_id, &link.key),
                label: link.label,
                link_type: link.link_type,
                url: link.url.into(),
                position: next_position,
                key: link.key,
                source_key: candidate.key.as_deref().map(str::to_owned),
            });
            next_position = next_position.saturating_add(1);
        }
    }
    plan
}

/// A kept `http` link whose duplicate was `https` is stored as `https`
/// (SPEC §3 step 5), unless that would make it too long.
fn prefer_https(kept: &mut PlannedLink) {
    if let Ok(url) = Url::parse(&kept.url) {
        if url.scheme() == "http" {
            let upgraded = classify::with_https(&url);
            if upgraded.as_str().len() <= MAX_URL_BYTES {
                kept.url = upgraded.into();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn plan(social: Value) -> ProfilePlan {
        plan_profile("p1", "u1", &social, Context::default())
    }

    fn urls(plan: &ProfilePlan) -> Vec<&str> {
        plan.links.iter().map(|l| l.url.as_str()).collect()
    }

    #[test]
    fn object_entries_are_ordered_by_type_then_key_bytes() {
        let p = plan(json!({
            "zeta": "https://z.com", "showreel": "https://vimeo.com/1",
            "imdb": "https://imdb.com/name/nm1/", "Website": "https://w.com",
            "alpha": "https://a.com", "Portfolio": "https://p.com"
        }));
        let keys: Vec<_> = p.links.iter().map(|l| l.source_key.as_deref()).collect();
        assert_eq!(
            keys,
            [
                Some("Portfolio"),
                Some("Website"),
                Some("imdb"),
                Some("showreel"),
                Some("alpha"),
                Some("zeta")
            ]
        );
        let positions: Vec<_> = p.links.iter().map(|l| l.position).collect();
        assert_eq!(positions, [0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn unknown_key_with_imdb_host_orders_as_imdb() {
        let p = plan(json!({"aaa": "https://a.com", "zzz": "https://www.imdb.com/name/nm2/"}));
        assert_eq!(
            urls(&p),
            ["https://www.imdb.com/name/nm2/", "https://a.com/"]
        );
    }

    #[test]
    fn arrays_keep_their_order() {
        let p = plan(json!(["https://z.com", "https://a.com", "https://m.com"]));
        assert_eq!(
            urls(&p),
            ["https://z.com/", "https://a.com/", "https://m.com/"]
        );
    }

    #[test]
    fn duplicates_within_a_profile_keep_the_first() {
        let p = plan(json!([
            "https://a.com/x",
            "https://www.a.com/x/",
            "https://a.com/x#f"
        ]));
        assert_eq!(urls(&p), ["https://a.com/x"]);
        assert_eq!(p.skipped.len(), 2);
        assert!(p.skipped.iter().all(|s| s.reason == SkipReason::Duplicate));
    }

    #[test]
    fn https_is_preferred_on_a_collision_in_either_order() {
        let p = plan(json!(["http://a.com/x", "https://a.com/x"]));
        assert_eq!(urls(&p), ["https://a.com/x"]);
        let p = plan(json!(["https://a.com/x", "http://a.com/x"]));
        assert_eq!(urls(&p), ["https://a.com/x"]);
        assert_eq!(p.links[0].position, 0);
    }

    #[test]
    fn existing_rows_and_ledger_keys_are_respected() {
        let existing = [
            ExistingLink {
                url: "https://www.a.com/".into(),
                position: 0,
            },
            ExistingLink {
                url: "https://other.com/".into(),
                position: 5,
            },
        ];
        let migrated = ["b.com".to_owned()];
        let social = json!(["http://a.com", "https://b.com/", "https://c.com"]);
        let p = plan_profile(
            "p1",
            "u1",
            &social,
            Context {
                existing: &existing,
                migrated: &migrated,
            },
        );
        assert_eq!(urls(&p), ["https://c.com/"]);
        assert_eq!(p.links[0].position, 6);
        let reasons: Vec<_> = p.skipped.iter().map(|s| s.reason).collect();
        assert_eq!(reasons, [SkipReason::Existing, SkipReason::Migrated]);
    }

    #[test]
    fn ids_are_uuid_v5_of_profile_and_key() {
        let p = plan(json!(["https://example.com/"]));
        assert_eq!(p.links[0].id, link_id("p1", "u1", "example.com"));
        let parsed = Uuid::parse_str(&p.links[0].id).expect("uuid");
        assert_eq!(parsed.get_version_num(), 5);
        assert_ne!(
            link_id("p1", "u1", "example.com"),
            link_id("p2", "u1", "example.com")
        );
    }

    #[test]
    fn a_uuid_user_gives_its_first_eight_hex_digits_and_version_8() {
        // SPEC §5's example: the v5 id 840e3723-98e8-5954-95dd-1a118c9afd09
        // becomes 0a1b2c3d-98e8-8954-95dd-1a118c9afd09 for user 0A1B2C3D-…
        let (profile, key) = ("p1", "example.com");
        let v5 = link_id(profile, "u1", key);
        let v8 = link_id(profile, "0A1B2C3D-0000-4000-8000-000000000000", key);
        assert_eq!(&v8[..8], "0a1b2c3d");
        assert_eq!(&v8[8..14], &v5[8..14]);
        assert_eq!(&v8[14..15], "8");
        assert_eq!(&v8[15..], &v5[15..]);
        assert_eq!(Uuid::parse_str(&v8).expect("uuid").get_version_num(), 8);
        // Pinned (computed by fixtures/tools/ids.py, an independent
        // implementation): the rule must never change under existing rows.
        assert_eq!(
            link_id(
                "p-ids-uuid-user",
                "0A1B2C3D-5E6F-4711-8899-AABBCCDDEEFF",
                "example.com"
            ),
            "0a1b2c3d-baf5-8478-88ef-aef738876712"
        );
    }

    #[test]
    fn a_user_id_without_eight_leading_hex_digits_keeps_v5() {
        for user in [
            "cu000000001",
            "0a1b2c3",
            "0a1b2c3g-x",
            "+a1b2c3d",
            "",
            "0a1b2c3é",
        ] {
            assert_eq!(
                Uuid::parse_str(&link_id("p1", user, "k.com"))
                    .expect("uuid")
                    .get_version_num(),
                5,
                "{user:?}"
            );
        }
    }

    #[test]
    fn both_kinds_of_id_are_known_to_purge_and_verify() {
        let uuid_user = "0a1b2c3d-0000-4000-8000-000000000000";
        let ids: Vec<String> = link_ids("p1", uuid_user, "k.com").collect();
        assert_eq!(
            ids,
            [
                link_id("p1", uuid_user, "k.com"),
                link_id("p1", "u1", "k.com")
            ]
        );
        let ids: Vec<String> = link_ids("p1", "cuid", "k.com").collect();
        assert_eq!(ids, [link_id("p1", "cuid", "k.com")]);
    }

    #[test]
    fn raw_values_are_kept_for_rejects() {
        let p = plan(json!({"imdb": "not a url", "site": 42, "x": {"label": "no url"}}));
        let raws: Vec<_> = p
            .skipped
            .iter()
            .map(|s| (s.key.as_deref(), s.raw.as_str(), s.reason.as_str()))
            .collect();
        assert_eq!(
            raws,
            [
                (Some("site"), "42", "not_a_string"),
                (Some("imdb"), "not a url", "unparseable"),
                (Some("x"), "null", "not_a_string"),
            ]
        );
    }

    #[test]
    fn counters_count_every_repair() {
        let p =
            plan(json!({"instagram": "@jane", "website": "example.com", "blog": "bad host.com"}));
        assert_eq!((p.expanded, p.repaired), (1, 1));
    }
}
