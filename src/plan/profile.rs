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

/// The id of a link: UUID v5 of `"{profileId}\n{key}"` (SPEC §5).
pub fn link_id(profile_id: &str, key: &str) -> String {
    let name = format!("{profile_id}\n{key}");
    Uuid::new_v5(&ID_NAMESPACE, name.as_bytes())
        .hyphenated()
        .to_string()
}

/// Plans one profile's legacy value (the reader's [`legacy::Social`], or a
/// parsed `serde_json::Value`): the rows to insert and every value that
/// yields none.
pub fn plan_profile<'a>(
    profile_id: &str,
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
                id: link_id(profile_id, &link.key),
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
        plan_profile("p1", &social, Context::default())
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
        assert_eq!(p.links[0].id, link_id("p1", "example.com"));
        let parsed = Uuid::parse_str(&p.links[0].id).expect("uuid");
        assert_eq!(parsed.get_version_num(), 5);
        assert_ne!(link_id("p1", "example.com"), link_id("p2", "example.com"));
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
