//! What relink tells the operator: counters and the run summary (text or
//! JSON), the dry run's per-profile lines, and the JSONL plan report.

use std::collections::BTreeMap;
use std::io::Write;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::pipeline::Planned;
use crate::plan::ProfilePlan;

/// Figures of a run, summed over the profiles it planned.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Profiles planned (pending ones: new or changed since migrated).
    pub profiles_planned: u64,
    /// Planned profiles that got at least one new row.
    pub profiles_migrated: u64,
    /// Planned profiles with valid links, all already present.
    pub profiles_already_present: u64,
    /// Planned profiles with no valid link at all.
    pub profiles_without_valid_links: u64,
    pub links_created: u64,
    /// Values dropped as duplicates (within the profile, of a current row,
    /// or of a link relink created before).
    pub duplicates: u64,
    pub expanded: u64,
    pub repaired: u64,
    /// Rejected values by reason.
    pub rejects: BTreeMap<String, u64>,
}

impl Counters {
    pub fn add_plan(&mut self, plan: &ProfilePlan) {
        self.profiles_planned += 1;
        let links = plan.links.len() as u64;
        let duplicates = plan.duplicates().count() as u64;
        if links > 0 {
            self.profiles_migrated += 1;
        } else if duplicates > 0 {
            self.profiles_already_present += 1;
        } else {
            self.profiles_without_valid_links += 1;
        }
        self.links_created += links;
        self.duplicates += duplicates;
        self.expanded += u64::from(plan.expanded);
        self.repaired += u64::from(plan.repaired);
        for reject in plan.rejects() {
            *self
                .rejects
                .entry(reject.reason.as_str().to_owned())
                .or_default() += 1;
        }
    }

    pub fn of_chunk(chunk: &[Planned<'_>]) -> Self {
        let mut c = Self::default();
        for planned in chunk {
            c.add_plan(&planned.plan);
        }
        c
    }

    pub fn merge(&mut self, other: &Self) {
        self.profiles_planned += other.profiles_planned;
        self.profiles_migrated += other.profiles_migrated;
        self.profiles_already_present += other.profiles_already_present;
        self.profiles_without_valid_links += other.profiles_without_valid_links;
        self.links_created += other.links_created;
        self.duplicates += other.duplicates;
        self.expanded += other.expanded;
        self.repaired += other.repaired;
        for (reason, n) in &other.rejects {
            *self.rejects.entry(reason.clone()).or_default() += n;
        }
    }

    pub fn rejected(&self) -> u64 {
        self.rejects.values().sum()
    }

    /// A flat JSON object of integers (`rejects.<reason>` for rejects), the
    /// form the runs table sums in SQL.
    pub fn to_flat(&self) -> Value {
        let mut flat = serde_json::Map::new();
        if let Value::Object(map) = json!(self) {
            for (k, v) in map {
                if k != "rejects" {
                    flat.insert(k, v);
                }
            }
        }
        for (reason, n) in &self.rejects {
            flat.insert(format!("rejects.{reason}"), json!(n));
        }
        Value::Object(flat)
    }

    /// Reads [`Counters::to_flat`] back; unknown keys are ignored.
    pub fn from_flat(flat: &Value) -> Self {
        let mut nested = serde_json::Map::new();
        let mut rejects = serde_json::Map::new();
        if let Value::Object(map) = flat {
            for (k, v) in map {
                let n = v.as_u64().unwrap_or(0);
                match k.strip_prefix("rejects.") {
                    Some(reason) => rejects.insert(reason.to_owned(), json!(n)),
                    None => nested.insert(k.clone(), json!(n)),
                };
            }
        }
        nested.insert("rejects".to_owned(), Value::Object(rejects));
        let mut defaults = json!(Self::default());
        if let Value::Object(d) = &mut defaults {
            d.extend(nested);
        }
        serde_json::from_value(defaults).unwrap_or_default()
    }
}

/// The end-of-run summary (SPEC §6).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub mode: &'static str,
    pub run_id: Option<i64>,
    pub status: String,
    /// Profiles with a legacy value in the key range this invocation covered.
    pub profiles_scanned: u64,
    /// Of those, skipped because their ledger fingerprint matched.
    pub profiles_unchanged: u64,
    #[serde(flatten)]
    pub counters: Counters,
    pub elapsed_seconds: f64,
    pub links_per_second: f64,
}

impl Summary {
    pub fn print(&self, json_format: bool, out: &mut impl Write) -> std::io::Result<()> {
        if json_format {
            serde_json::to_writer(&mut *out, self)?;
            return writeln!(out);
        }
        let c = &self.counters;
        let title = match self.run_id {
            Some(id) => format!("Summary of {} {id} ({})", self.mode, self.status),
            None => format!("Summary ({})", self.mode),
        };
        writeln!(out, "{title}")?;
        let rows: [(&str, u64); 10] = [
            ("profiles scanned", self.profiles_scanned),
            ("  migrated", c.profiles_migrated),
            ("  unchanged since last run", self.profiles_unchanged),
            ("  already present", c.profiles_already_present),
            ("  without valid links", c.profiles_without_valid_links),
            ("links created", c.links_created),
            ("duplicates skipped", c.duplicates),
            ("handles expanded", c.expanded),
            ("schemes repaired", c.repaired),
            ("values rejected", c.rejected()),
        ];
        for (name, n) in rows {
            writeln!(out, "  {name:<28} {n:>12}")?;
        }
        for (reason, n) in &c.rejects {
            writeln!(out, "    {reason:<26} {n:>12}")?;
        }
        writeln!(out, "  {:<28} {:>12.1} s", "elapsed", self.elapsed_seconds)?;
        writeln!(
            out,
            "  {:<28} {:>12.0} links/s",
            "rate", self.links_per_second
        )
    }
}

/// Prints one profile in the runbook's dry-run format (SPEC §7). Profiles
/// with nothing to create and nothing skipped print nothing.
pub fn print_dry_profile(planned: &Planned<'_>, out: &mut impl Write) -> std::io::Result<()> {
    let plan = &planned.plan;
    if plan.links.is_empty() && plan.skipped.is_empty() {
        return Ok(());
    }
    let n = plan.links.len();
    writeln!(
        out,
        "Profile {}: Found {n} links to migrate",
        planned.profile.user_id
    )?;
    writeln!(out, "  [DRY RUN] Would create {n} profile links")?;
    for link in &plan.links {
        writeln!(out, "  - {} ({}): {}", link.label, link.link_type, link.url)?;
    }
    for skipped in &plan.skipped {
        let shown = crate::sink::truncate(&skipped.raw, 200);
        let ellipsis = if shown.len() < skipped.raw.len() {
            "…"
        } else {
            ""
        };
        writeln!(
            out,
            "  ! skipped {}: {}{ellipsis} ({})",
            skipped.key.as_deref().unwrap_or("-"),
            serde_json::to_string(shown).unwrap_or_default(),
            skipped.reason.as_str()
        )?;
    }
    Ok(())
}

/// One line of the `--report` JSONL: a stable format for review tooling.
pub fn report_line(planned: &Planned<'_>) -> Value {
    let plan = &planned.plan;
    let skipped = |dups: bool| {
        plan.skipped
            .iter()
            .filter(|s| s.reason.is_reject() != dups)
            .map(|s| json!({"key": s.key, "raw": s.raw, "reason": s.reason}))
            .collect::<Vec<_>>()
    };
    json!({
        "profile_id": planned.profile.id,
        "user_id": planned.profile.user_id,
        "links": plan.links.iter().map(|l| json!({
            "id": l.id, "label": l.label, "type": l.link_type, "url": l.url,
            "position": l.position, "key": l.key, "source_key": l.source_key,
        })).collect::<Vec<_>>(),
        "duplicates": skipped(true),
        "rejects": skipped(false),
        "expanded": plan.expanded,
        "repaired": plan.repaired,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_round_trip_through_the_flat_form() {
        let mut c = Counters {
            profiles_planned: 3,
            links_created: 7,
            ..Counters::default()
        };
        c.rejects.insert("unparseable".into(), 2);
        assert_eq!(Counters::from_flat(&c.to_flat()), c);
        let from_sql = json!({"links_created": 7, "rejects.scheme": 1, "unknown": 5});
        let back = Counters::from_flat(&from_sql);
        assert_eq!(
            (back.links_created, back.rejects.get("scheme").copied()),
            (7, Some(1))
        );
    }
}
