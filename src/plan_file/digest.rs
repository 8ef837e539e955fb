//! The digests a plan carries: of the rules (SPEC §2–§5) the plan was made
//! with, and of the context each profile was planned against (the user's
//! rows, the ledger's entry). Pure.

use sha2::{Digest as _, Sha256};

use super::hex;
use crate::plan::classify::{stored_url_key, MAX_LABEL_CHARS, MAX_URL_BYTES};
use crate::plan::platforms::{handle_url, known_key, HOSTS};
use crate::plan::{ExistingLink, ProfilePlan, RejectReason, ID_NAMESPACE};
use crate::source::LedgerEntry;

/// The version of the planning rules (SPEC §2–§5) this release applies.
/// Bump it with every change to `src/plan` that can change a plan's
/// output (a rule, an order, a label, an id): a plan made by a release with
/// other rules is then refused instead of applied under rules it was not
/// reviewed with. The tables below are digested too, so a change to them
/// changes the digest even if this is forgotten.
pub const RULES_VERSION: &str = "relink-rules-2026-12-1";

/// Keys whose label-table entries the digest covers: the label table's keys
/// as SPEC §4 lists them, and the host table's platforms.
const LABEL_KEYS: [&str; 32] = [
    "website",
    "site",
    "homepage",
    "web",
    "portfolio",
    "imdb",
    "showreel",
    "reel",
    "demoreel",
    "linkedin",
    "instagram",
    "twitter",
    "x",
    "facebook",
    "youtube",
    "tiktok",
    "vimeo",
    "github",
    "soundcloud",
    "spotify",
    "behance",
    "medium",
    "dribbble",
    "gitlab",
    "twitch",
    "pinterest",
    "threads",
    "bluesky",
    "mastodon",
    "fb",
    "bsky",
    "youtu",
];

/// SHA-256 (hex) of the rules: [`RULES_VERSION`], the label table, the
/// host table, the handles' URLs, the reject reasons, the id namespace and
/// the limits.
pub fn rules_digest() -> String {
    let mut h = Sha256::new();
    let mut put = |text: &str| {
        h.update(text.as_bytes());
        h.update(b"\n");
    };
    put(RULES_VERSION);
    for key in LABEL_KEYS {
        match known_key(key) {
            Some((label, link_type)) => put(&format!("label {key} {label} {link_type}")),
            None => put(&format!("label {key} -")),
        }
        if let Some((url, dotted)) = handle_url(key) {
            put(&format!("handle {key} {url} {dotted}"));
        }
    }
    for (domain, platform) in HOSTS {
        put(&format!("host {domain} {platform}"));
    }
    for reason in RejectReason::ALL {
        put(&format!("reject {}", reason.as_str()));
    }
    put(&format!("namespace {ID_NAMESPACE}"));
    put(&format!("limits {MAX_URL_BYTES} {MAX_LABEL_CHARS}"));
    hex(&h.finalize())
}

/// SHA-256 (hex) of a user's rows as the planner compares them (SPEC §5):
/// each row's comparison key and position, sorted (the rows' order of
/// reading does not matter to the plan).
pub fn rows_digest(existing: &[ExistingLink]) -> String {
    let mut rows: Vec<(String, i32)> = existing
        .iter()
        .map(|r| (stored_url_key(&r.url), r.position))
        .collect();
    rows.sort();
    let mut h = Sha256::new();
    for (key, position) in rows {
        h.update(key.as_bytes());
        h.update(format!("\t{position}\n").as_bytes());
    }
    hex(&h.finalize())
}

/// SHA-256 (hex) of a profile's ledger entry as the planner and the sink
/// use it: the run of its latest row and the keys it holds, sorted; `none`
/// when it has no ledger row.
pub fn ledger_digest(ledger: Option<&LedgerEntry>) -> String {
    let Some(ledger) = ledger else {
        return "none".to_owned();
    };
    let mut keys: Vec<&str> = ledger.keys.iter().map(String::as_str).collect();
    keys.sort_unstable();
    let mut h = Sha256::new();
    h.update(format!("run {}\n", ledger.latest_run).as_bytes());
    for key in keys {
        h.update(key.as_bytes());
        h.update(b"\n");
    }
    hex(&h.finalize())
}

/// SHA-256 of everything a profile's plan decides: each link (id, label,
/// type, url, position, comparison key, source key) and each skipped value
/// (key, comparison key, raw text, reason), in order, and the expanded and
/// repaired counts. A record carries it (`planned_sha256`) beside the same
/// plan shown as JSON; an apply plans the profile again under the lock and
/// writes it only if this digest is the same. Each text is length-prefixed,
/// so no two plans share an encoding.
pub fn planned_digest(plan: &ProfilePlan) -> [u8; 32] {
    let mut h = Sha256::new();
    let mut put = |text: &str| {
        h.update((text.len() as u64).to_le_bytes());
        h.update(text.as_bytes());
    };
    for link in &plan.links {
        put("link");
        put(&link.id);
        put(&link.label);
        put(link.link_type.as_str());
        put(&link.url);
        put(&link.position.to_string());
        put(&link.key);
        put(link.source_key.as_deref().map_or("-", |k| k));
        put(if link.source_key.is_some() { "+" } else { "-" });
    }
    for skipped in &plan.skipped {
        put("skipped");
        put(skipped.key.as_deref().map_or("", |k| k));
        put(if skipped.key.is_some() { "+" } else { "-" });
        put(skipped.link_key.as_deref().map_or("", |k| k));
        put(if skipped.link_key.is_some() { "+" } else { "-" });
        put(&skipped.raw);
        put(skipped.reason.as_str());
    }
    put(&format!(
        "expanded {} repaired {}",
        plan.expanded, plan.repaired
    ));
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{LinkType, PlannedLink, SkipReason, Skipped};

    #[test]
    fn planned_digest_changes_with_every_field() {
        let plan = ProfilePlan {
            links: vec![PlannedLink {
                id: "00000000-0000-8000-8000-000000000000".into(),
                label: "Website".into(),
                link_type: LinkType::Website,
                url: "https://a.example/".into(),
                position: 0,
                key: "a.example".into(),
                source_key: Some("website".into()),
            }],
            skipped: vec![Skipped {
                key: Some("x".into()),
                link_key: None,
                raw: "nope".into(),
                reason: SkipReason::Rejected(RejectReason::ALL[0]),
            }],
            expanded: 1,
            repaired: 2,
        };
        let base = planned_digest(&plan);
        assert_eq!(base, planned_digest(&plan.clone()));
        let changes: [fn(&mut ProfilePlan); 12] = [
            |p| p.links[0].id.push('0'),
            |p| p.links[0].label.push('s'),
            |p| p.links[0].link_type = LinkType::Imdb,
            |p| p.links[0].url.push('x'),
            |p| p.links[0].position = 1,
            |p| p.links[0].key.push('x'),
            |p| p.links[0].source_key = None,
            |p| p.skipped[0].key = None,
            |p| p.skipped[0].raw.push('!'),
            |p| p.skipped[0].reason = SkipReason::Duplicate,
            |p| p.expanded = 0,
            |p| p.repaired = 0,
        ];
        for (i, change) in changes.iter().enumerate() {
            let mut changed = plan.clone();
            change(&mut changed);
            assert_ne!(planned_digest(&changed), base, "change {i}");
        }
        // A character moved from one field to the next is another plan.
        let (mut a, mut b) = (plan.clone(), plan);
        (a.links[0].url, a.links[0].key) = ("https://a.example/x".into(), "y".into());
        (b.links[0].url, b.links[0].key) = ("https://a.example/".into(), "xy".into());
        assert_ne!(planned_digest(&a), planned_digest(&b));
    }

    fn row(url: &str, position: i32) -> ExistingLink {
        ExistingLink {
            url: url.into(),
            position,
        }
    }

    #[test]
    fn rows_digest_ignores_order_and_spelling_not_positions() {
        let a = rows_digest(&[row("https://a.com/x", 0), row("b.com", 1)]);
        let b = rows_digest(&[row("http://www.b.com/", 1), row("https://a.com/x", 0)]);
        assert_eq!(a, b);
        assert_ne!(
            a,
            rows_digest(&[row("https://a.com/x", 0), row("b.com", 2)])
        );
        assert_ne!(a, rows_digest(&[row("https://a.com/x", 0)]));
    }

    #[test]
    fn ledger_digest_tells_runs_and_keys_apart() {
        let entry = |run, keys: &[&str]| LedgerEntry {
            latest_run: run,
            keys: keys.iter().map(|k| (*k).to_owned()).collect(),
        };
        assert_eq!(ledger_digest(None), "none");
        assert_eq!(
            ledger_digest(Some(&entry(1, &["a", "b"]))),
            ledger_digest(Some(&entry(1, &["b", "a"])))
        );
        assert_ne!(
            ledger_digest(Some(&entry(1, &["a"]))),
            ledger_digest(Some(&entry(2, &["a"])))
        );
        assert_ne!(
            ledger_digest(Some(&entry(1, &["a"]))),
            ledger_digest(Some(&entry(1, &["a", "b"])))
        );
    }

    #[test]
    fn rules_digest_is_stable_within_a_release() {
        assert_eq!(rules_digest(), rules_digest());
        assert_eq!(rules_digest().len(), 64);
    }
}
