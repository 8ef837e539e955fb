//! The planning core (SPEC §2–§5): one legacy `"socialLinks"` value in, the
//! rows to create and every value that yields none out. Pure: no I/O, no
//! async, no clock. Dry run, live run and verify all call this one copy.
//!
//! `legacy` (JSON shapes → candidates) → `classify` (URL rules, type,
//! label) → `profile` (order, dedupe, positions, ids) → `tally` (figures);
//! `platforms` (label table, host table, handles) and `link_type` are the
//! data both ends share.

pub mod classify;
pub mod legacy;
pub mod link_type;
pub mod platforms;
pub mod profile;
pub mod tally;

pub use classify::RejectReason;
pub use link_type::LinkType;
pub use profile::{
    has_valid_link, link_id, link_ids, plan_profile, Context, ExistingLink, PlannedLink,
    ProfilePlan, SkipReason, Skipped, ID_NAMESPACE,
};
pub use tally::Counters;
