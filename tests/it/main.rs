//! Integration tests: one binary, a module per feature (STYLE.md). Tests that
//! touch the database create their own through `harness`.

mod cli;
mod corpus;
mod harness;
mod props;
mod run;
