//! Integration tests: one binary, a module per feature (STYLE.md). Tests that
//! touch the database create their own through `harness`.

mod cli;
mod corpus;
mod dry_run;
mod faults;
mod harness;
mod hostile;
mod props;
mod purge;
mod real_world;
mod run;
mod users_rows;
mod verify;
