//! Figures of planning (SPEC §6 summary): what a set of profile plans adds
//! up to, and the flat form the runs table sums in SQL. Pure.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::profile::ProfilePlan;

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
    /// Profiles read, then deleted (or emptied, or moved to another user)
    /// by the application before their chunk locked them: skipped, not
    /// planned (SPEC §6 "Online").
    pub profiles_gone: u64,
    /// Profiles of an applied plan (SPEC §15) not written because they
    /// drifted since the plan was made; zero, and left out of the JSON,
    /// for any other run.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub profiles_drifted: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
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

    /// The figures of some plans (a chunk's).
    pub fn of_plans<'a>(plans: impl IntoIterator<Item = &'a ProfilePlan>) -> Self {
        let mut c = Self::default();
        for plan in plans {
            c.add_plan(plan);
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
        self.profiles_gone += other.profiles_gone;
        self.profiles_drifted += other.profiles_drifted;
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
