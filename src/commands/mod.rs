//! The subcommands: each wires the edges (`source`, `chunk`, `sink`,
//! `removal`, `state`, `db`) around the planning core; none imports another.

pub mod dry_run;
pub mod generate;
pub mod pause;
pub mod purge;
pub mod run;
pub mod status;
pub mod verify;
