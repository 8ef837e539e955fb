//! The subcommands: each wires the edges (`source`, `sink`, `state`, `lock`)
//! around the planning core.

pub mod generate;
pub mod purge;
pub mod run;
pub mod status;
pub mod verify;
