//! relink: migrates `profiles."socialLinks"` into `profile_links`.
//!
//! Data flows one way: `source` (keyset pages) → `legacy` (JSON shapes) →
//! `classify` (URL rules) → `plan` (dedupe, order, ids) → `sink` (COPY,
//! ledger, checkpoint) or `report` (dry run). The middle three are pure.

pub mod classify;
pub mod legacy;
pub mod plan;
