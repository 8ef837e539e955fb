//! Integration tests: one binary, a module per feature (STYLE.md). Tests that
//! touch the database create their own through `harness`.

mod application;
mod cli;
mod connect;
mod control;
mod corpus;
mod docs;
mod dry_run;
mod faults;
mod generate;
mod harness;
mod hostile;
mod libpq;
mod lock;
mod node_exporter;
mod observe;
mod online;
/// The tests' one source of certificates (rcgen), shared with the unit
/// tests and `scripts/pg-server tls`.
#[path = "../pki/mod.rs"]
mod pki;
mod poolers;
mod props;
mod purge;
mod real_world;
mod repair;
mod replicas;
mod rls;
mod run;
mod servers;
mod sessions;
mod tls;
mod upgrade;
mod users_rows;
mod verify;
