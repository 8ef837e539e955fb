//! Integration tests: one binary, a module per feature (STYLE.md). Tests that
//! touch the database create their own through `harness`.

mod cli;
mod connect;
mod control;
mod corpus;
mod dry_run;
mod faults;
mod harness;
mod lock;
mod props;
mod purge;
mod run;
mod servers;
mod tls;
mod verify;
