//! Integration tests: one binary, a module per feature (STYLE.md). Tests that
//! touch the database create their own through `harness`.

mod cli;
mod connect;
mod control;
mod corpus;
mod dry_run;
mod faults;
mod generate;
mod harness;
mod lock;
mod observe;
mod props;
mod purge;
mod replicas;
mod run;
mod servers;
mod verify;
